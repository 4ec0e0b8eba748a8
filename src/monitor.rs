//! The monitor thread: one per pool. It reaps with `waitpid(pid, WNOHANG)` on its own pids
//! every `health_interval`, and is woken at once by the I/O threads when a process exits or a
//! request fails, so failover never waits for the poll. It owns each instance's backoff,
//! restart budget and circuit breaker, schedules restarts, runs liveness probes and retires
//! old processes. Timers are `select!` timeouts, never sleeps.
//!
//! With hosts, it also owns each host's [`HostHealth`]: an instance whose link to its host
//! was lost (or whose launch there failed) makes the host suspect, and the monitor starts a
//! check (`Launcher::check_host`, a process it polls on its own timers while it runs). A
//! failed check takes the host down: its running instances are stopped
//! ([`ExitCause::HostDown`]) and no instance on it is restarted until a later check, on
//! backoff, passes; then they all restart at once.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, Sender};

use crate::backoff::Backoff;
use crate::breaker::{BreakerTransition, CircuitBreaker, CircuitState};
use crate::budget::RestartBudget;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::fleet::Fleet;
use crate::host_health::{HostHealth, CHECK_TIMEOUT};
use crate::host_state::HostState;
use crate::instance::{Control, InstanceHandle, IoEvent, Job};
use crate::launch::{HostCheck, Launcher};
use crate::response::Response;
use crate::spec::RestartPolicy;
use crate::state::ExitInfo;
use crate::state::{ExitCause, InstanceState};
pub use crate::supervision::{LivenessProbe, SupervisionConfig};

/// Commands to the monitor.
#[derive(Debug)]
pub(crate) enum MonitorCommand {
    /// An instance was added (launch or resize).
    Added(usize),
    /// Restart an instance now, resetting its budget and breaker; reply when ready.
    Restart {
        index: usize,
        reply: Sender<Result<()>>,
    },
    /// An instance is being removed (resize): never restart it.
    Removed(usize),
    /// Stop the monitor.
    Shutdown,
}

/// The monitor's view of one instance.
struct Supervised {
    backoff: Backoff,
    budget: RestartBudget,
    breaker: CircuitBreaker,
    restart_at: Option<(Instant, ExitCause)>,
    failed_until: Option<Instant>,
    manual: Option<Sender<Result<()>>>,
    removed: bool,
    next_probe: Option<Instant>,
    /// The generation an outstanding probe was sent to.
    probe: Option<u64>,
    /// A restart (after this cause) waiting for its host to be up.
    held: Option<ExitCause>,
}

/// The monitor's view of one host.
#[derive(Debug)]
struct HostSupervised {
    health: HostHealth,
    check: Option<Box<dyn HostCheck>>,
}

/// How often a running host check is polled.
const CHECK_POLL: std::time::Duration = std::time::Duration::from_millis(20);

pub(crate) struct Monitor {
    core: Arc<Fleet>,
    events: Receiver<IoEvent>,
    commands: Receiver<MonitorCommand>,
    instances: Vec<Supervised>,
    next_poll: Instant,
    seed: u64,
    probe_tx: Sender<Result<Response>>,
    probe_rx: Receiver<Result<Response>>,
    launcher: Arc<dyn Launcher>,
    hosts: Vec<HostSupervised>,
}

impl Monitor {
    pub(crate) fn new(
        core: Arc<Fleet>,
        launcher: Arc<dyn Launcher>,
        events: Receiver<IoEvent>,
        commands: Receiver<MonitorCommand>,
    ) -> Self {
        let seed =
            crate::framing::splitmix64(u64::from(std::process::id()) ^ core.spec.name.len() as u64);
        let (probe_tx, probe_rx) = crossbeam_channel::unbounded();
        let hosts = (0..core.hosts.len())
            .map(|h| HostSupervised {
                health: HostHealth::new(
                    core.supervision.backoff,
                    core.supervision.breaker,
                    crate::framing::splitmix64(seed ^ !(h as u64)),
                    CHECK_TIMEOUT,
                ),
                check: None,
            })
            .collect();
        Monitor {
            launcher,
            hosts,
            probe_tx,
            probe_rx,
            next_poll: Instant::now() + core.supervision.health_interval,
            core,
            events,
            commands,
            instances: Vec::new(),
            seed,
        }
    }

    fn config(&self) -> &SupervisionConfig {
        &self.core.supervision
    }

    pub(crate) fn run(mut self) {
        loop {
            let now = Instant::now();
            let wait = self.next_timer().saturating_duration_since(now);
            select! {
                recv(self.events) -> event => match event {
                    Ok(event) => self.on_io_event(event),
                    Err(_) => return,
                },
                recv(self.commands) -> command => match command {
                    Ok(MonitorCommand::Shutdown) | Err(_) => return,
                    Ok(command) => self.on_command(command),
                },
                recv(self.probe_rx) -> result => {
                    if let Ok(result) = result {
                        self.on_probe_result(result, Instant::now());
                    }
                }
                default(wait) => {}
            }
            self.on_timers(Instant::now());
        }
    }

    fn emit(&self, event: Event) {
        self.emit_at(event.level(), event);
    }

    /// As `emit`, logged at `level` (the sink hears it as usual).
    fn emit_at(&self, level: log::Level, event: Event) {
        log::log!(level, "{}: {event}", self.core.spec.name);
        if let Some(sink) = &self.core.sink {
            sink.on_event(&event);
        }
    }

    /// Fresh supervision state for instance `index`.
    fn fresh(&self, index: usize) -> Supervised {
        let config = &self.core.supervision;
        Supervised {
            backoff: Backoff::new(
                config.backoff,
                crate::framing::splitmix64(self.seed ^ index as u64),
            ),
            budget: RestartBudget::new(config.budget),
            breaker: CircuitBreaker::new(config.breaker),
            restart_at: None,
            failed_until: None,
            manual: None,
            removed: false,
            next_probe: config
                .probe
                .as_ref()
                .map(|p| crate::clock::after(Instant::now(), p.interval)),
            probe: None,
            held: None,
        }
    }

    fn supervised(&mut self, index: usize) -> &mut Supervised {
        while self.instances.len() <= index {
            let fresh = self.fresh(self.instances.len());
            self.instances.push(fresh);
        }
        &mut self.instances[index]
    }

    fn next_timer(&self) -> Instant {
        let mut next = self.next_poll;
        for s in &self.instances {
            for t in [
                s.restart_at.map(|(t, _)| t),
                s.failed_until,
                s.breaker.open_until(),
                s.next_probe,
            ]
            .into_iter()
            .flatten()
            {
                next = next.min(t);
            }
        }
        for host in &self.hosts {
            if let Some(t) = host.health.next_timer() {
                next = next.min(t);
            }
            if host.check.is_some() {
                next = next.min(Instant::now() + CHECK_POLL);
            }
        }
        next
    }

    fn on_command(&mut self, command: MonitorCommand) {
        match command {
            MonitorCommand::Added(index) => {
                // An index reused after a shrink starts with a clean history.
                self.supervised(index);
                self.instances[index] = self.fresh(index);
            }
            MonitorCommand::Removed(index) => {
                let s = self.supervised(index);
                s.removed = true;
                s.restart_at = None;
                s.failed_until = None;
                s.held = None;
                s.next_probe = None;
            }
            MonitorCommand::Restart { index, reply } => {
                let s = self.supervised(index);
                s.budget.reset();
                s.backoff.reset();
                s.breaker.reset();
                s.failed_until = None;
                s.restart_at = None;
                s.held = None;
                s.manual = Some(reply);
                let Some(handle) = self.core.instance(index) else {
                    return;
                };
                handle.shared.set_circuit(CircuitState::Closed);
                handle.shared.info.lock().failure = None;
                match handle.shared.state() {
                    InstanceState::Starting | InstanceState::Ready | InstanceState::Stopping => {
                        handle.control(Control::Recycle {
                            cause: ExitCause::Manual,
                            drain: true,
                        });
                    }
                    _ => self.spawn(index, ExitCause::Manual),
                }
            }
            MonitorCommand::Shutdown => {}
        }
    }

    fn spawn(&mut self, index: usize, cause: ExitCause) {
        let notify = self.supervised(index).manual.take();
        let Some(handle) = self.core.instance(index) else {
            return;
        };
        if cause != ExitCause::Manual || handle.shared.generation() > 0 {
            handle.shared.stats.on_restart(cause);
        }
        handle.shared.set_returns_at(Some(Instant::now()));
        handle.shared.set_state(InstanceState::Restarting);
        handle.control(Control::Spawn { notify });
    }

    fn on_io_event(&mut self, event: IoEvent) {
        let now = Instant::now();
        match event {
            IoEvent::Spawned {
                index,
                generation,
                pid,
            } => self.emit(Event::Spawned {
                instance: index,
                generation,
                pid,
            }),
            IoEvent::Ready {
                index,
                generation,
                took,
            } => {
                self.supervised(index).backoff.note_healthy(now);
                self.emit(Event::Ready {
                    instance: index,
                    generation,
                    took,
                });
                self.core.notify_change();
            }
            IoEvent::SpawnFailed {
                index,
                error,
                reported,
            } => {
                let event = Event::SpawnFailed {
                    instance: index,
                    error,
                };
                if reported {
                    self.emit_at(log::Level::Debug, event);
                } else {
                    self.emit(event);
                }
                self.on_host_failure(index, now);
                self.on_down(index, ExitCause::SpawnFailed, None, false, now);
                self.core.notify_change();
            }
            IoEvent::Exited {
                index,
                generation,
                pid,
                exit,
                cause,
                answering,
                link_lost,
            } => {
                self.emit(Event::Exited {
                    instance: index,
                    generation,
                    pid,
                    exit,
                    cause,
                });
                // Only an exit nobody asked for: a process the I/O thread stopped itself
                // (a timeout, a recycle) may lose its link by being killed.
                if link_lost && matches!(cause, ExitCause::Crashed | ExitCause::NotReady) {
                    self.on_host_failure(index, now);
                }
                self.on_down(index, cause, exit, answering, now);
                self.core.notify_change();
            }
            IoEvent::Outcome {
                index,
                ok,
                timed_out,
            } => {
                if timed_out {
                    self.emit(Event::RequestTimedOut { instance: index });
                }
                let s = self.supervised(index);
                let transition = if ok {
                    s.breaker.on_success(now)
                } else {
                    s.breaker.on_failure(now)
                };
                self.on_breaker(index, transition);
            }
        }
    }

    fn on_breaker(&mut self, index: usize, transition: Option<BreakerTransition>) {
        let Some(transition) = transition else { return };
        let breaker = &self.supervised(index).breaker;
        let (state, open_until) = (breaker.state(), breaker.open_until());
        if let Some(handle) = self.core.instance(index) {
            if state == CircuitState::Open
                && matches!(
                    handle.shared.state(),
                    InstanceState::Ready | InstanceState::Starting
                )
            {
                handle.shared.set_returns_at(open_until);
            }
            handle.shared.set_circuit(state);
        }
        self.emit(match transition {
            BreakerTransition::Opened { cooldown } => Event::BreakerOpened {
                instance: index,
                cooldown,
            },
            BreakerTransition::HalfOpened => Event::BreakerHalfOpen { instance: index },
            BreakerTransition::Closed => Event::BreakerClosed { instance: index },
        });
        self.core.notify_change();
    }

    /// A process ended (or could not start): decide whether, and when, to restart it.
    /// `answering`: a prompt was in flight, which makes any exit a failure.
    fn on_down(
        &mut self,
        index: usize,
        cause: ExitCause,
        exit: Option<ExitInfo>,
        answering: bool,
        now: Instant,
    ) {
        if cause == ExitCause::Shutdown || self.core.is_closed() {
            return;
        }
        let policy = self.core.spec.restart;
        if self.supervised(index).removed {
            return;
        }
        let Some(handle) = self.core.instance(index) else {
            return;
        };
        if cause == ExitCause::HostDown {
            self.hold(index, cause);
            return;
        }
        if matches!(
            cause,
            ExitCause::Manual | ExitCause::Retired | ExitCause::Memory
        ) {
            self.spawn(index, cause);
            return;
        }
        let wants_restart = match policy {
            RestartPolicy::Always => true,
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => {
                // A clean exit 0 is not a failure, unless a prompt was in flight.
                answering || !(cause == ExitCause::Crashed && exit.is_some_and(|e| e.success()))
            }
        };
        if !wants_restart {
            handle.shared.set_returns_at(None);
            handle.shared.set_state(InstanceState::Stopped);
            handle.control(Control::Recycle {
                cause: ExitCause::Shutdown,
                drain: false,
            });
            log::info!(
                "{}[{index}]: not restarted (restart policy {policy:?})",
                self.core.spec.name
            );
            return;
        }
        // Timeouts and oversized answers already reached the breaker as request outcomes.
        if !matches!(cause, ExitCause::Timeout | ExitCause::TooLarge) {
            let transition = self.supervised(index).breaker.on_failure(now);
            self.on_breaker(index, transition);
        }
        let failed_cooldown = self.config().budget.failed_cooldown;
        let s = self.supervised(index);
        if !s.budget.try_consume(now) {
            let until = crate::clock::after(now, failed_cooldown);
            s.failed_until = Some(until);
            s.restart_at = None;
            handle.shared.set_returns_at(Some(until));
            let reason = format!(
                "restart budget exhausted: more than {} restarts within {:?} (last: {})",
                self.core.supervision.budget.max_restarts,
                self.core.supervision.budget.window,
                cause.as_str()
            );
            handle.shared.set_state(InstanceState::Failed);
            handle.shared.info.lock().failure = Some(reason);
            self.emit(Event::BudgetExhausted {
                instance: index,
                retry_in: failed_cooldown,
            });
            return;
        }
        let attempt = s.budget.used() as u32;
        let mut at = crate::clock::after(now, s.backoff.next_delay(now));
        if let Some(open_until) = s.breaker.open_until() {
            at = at.max(open_until);
        }
        s.restart_at = Some((at, cause));
        handle.shared.set_returns_at(Some(at));
        handle.shared.set_state(InstanceState::Restarting);
        self.emit(Event::RestartScheduled {
            instance: index,
            delay: at.saturating_duration_since(now),
            attempt,
            cause,
        });
        if at <= now {
            self.on_timers(now);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if now >= self.next_poll {
            self.next_poll = now + self.config().health_interval;
            self.poll_processes(now);
        }
        for index in 0..self.instances.len() {
            let s = &mut self.instances[index];
            let transition = s.breaker.poll(now);
            if transition.is_some() {
                self.on_breaker(index, transition);
            }
            let s = &mut self.instances[index];
            if let Some((at, cause)) = s.restart_at {
                if now >= at {
                    s.restart_at = None;
                    self.spawn_or_hold(index, cause);
                    continue;
                }
            }
            let s = &mut self.instances[index];
            if let Some(until) = s.failed_until {
                if now >= until {
                    s.failed_until = None;
                    s.budget.reset();
                    s.backoff.reset();
                    log::info!(
                        "{}[{index}]: failed cooldown over; trying again",
                        self.core.spec.name
                    );
                    self.spawn_or_hold(index, ExitCause::Crashed);
                }
            }
            self.check_probe(index, now);
        }
        self.on_host_timers(now);
    }

    /// Restarts instance `index` now if its host is up; otherwise holds the restart until it is.
    fn spawn_or_hold(&mut self, index: usize, cause: ExitCause) {
        if self.core.host_of(index).is_some_and(|h| !h.is_up()) {
            self.hold(index, cause);
        } else {
            self.spawn(index, cause);
        }
    }

    /// Holds instance `index`'s restart until its host is up.
    fn hold(&mut self, index: usize, cause: ExitCause) {
        let now = Instant::now();
        let returns_at = self
            .core
            .host_index(index)
            .and_then(|h| self.hosts[h].health.returns_at(now));
        let s = self.supervised(index);
        s.held = Some(cause);
        s.restart_at = None;
        if let Some(handle) = self.core.instance(index) {
            handle.shared.set_returns_at(returns_at);
            handle.shared.set_state(InstanceState::Restarting);
        }
        log::debug!(
            "{}[{index}]: restart held until its host is up",
            self.core.spec.name
        );
    }

    /// Instance `index` lost its link to its host, or could not be launched there.
    fn on_host_failure(&mut self, index: usize, now: Instant) {
        let Some(h) = self.core.host_index(index) else {
            return;
        };
        self.core.hosts[h].on_failure();
        if let Some(state) = self.hosts[h].health.on_failure(now) {
            self.on_host_state(h, state, now);
        }
        self.on_host_timers(now);
    }

    /// Starts, polls and times out host checks.
    fn on_host_timers(&mut self, now: Instant) {
        for h in 0..self.hosts.len() {
            let host = &mut self.hosts[h];
            let result = match host.check.as_mut().map(|c| c.poll()) {
                Some(Some(ok)) => Some(ok),
                Some(None) if host.health.check_deadline().is_some_and(|d| now >= d) => {
                    log::warn!(
                        "{}: host {} did not answer its check within {CHECK_TIMEOUT:?}",
                        self.core.spec.name,
                        self.core.hosts[h].name
                    );
                    Some(false)
                }
                _ => None,
            };
            if let Some(ok) = result {
                // Dropping the check kills what is left of it.
                host.check = None;
                self.on_check_done(h, ok, now);
            }
            let host = &mut self.hosts[h];
            if host.check.is_none() && host.health.check_due(now) {
                host.health.on_check_started(now);
                match self.launcher.check_host(h) {
                    Some(Ok(check)) => self.hosts[h].check = Some(check),
                    Some(Err(e)) => {
                        log::warn!(
                            "{}: cannot check host {}: {e}",
                            self.core.spec.name,
                            self.core.hosts[h].name
                        );
                        self.on_check_done(h, false, now);
                    }
                    // A launcher without hosts: nothing to check, so nothing is held.
                    None => self.on_check_done(h, true, now),
                }
            }
        }
    }

    /// Host `h`'s check ended (`ok: false` also when it could not start or ran past its
    /// deadline).
    fn on_check_done(&mut self, h: usize, ok: bool, now: Instant) {
        self.core.hosts[h].on_check(ok);
        match self.hosts[h].health.on_check_result(ok, now) {
            Some(state) => self.on_host_state(h, state, now),
            None => self.update_host_returns(h, now),
        }
    }

    /// Records when host `h` and its held instances may be back.
    fn update_host_returns(&mut self, h: usize, now: Instant) {
        let returns_at = self.hosts[h].health.returns_at(now);
        self.core.hosts[h].set_returns_at(returns_at);
        for index in 0..self.instances.len() {
            if self.core.host_index(index) == Some(h) && self.instances[index].held.is_some() {
                if let Some(handle) = self.core.instance(index) {
                    handle.shared.set_returns_at(returns_at);
                }
            }
        }
        self.core.notify_change();
    }

    /// Host `h` entered `state`.
    fn on_host_state(&mut self, h: usize, state: HostState, now: Instant) {
        let name = &self.core.hosts[h].name;
        let returns_at = self.hosts[h].health.returns_at(now);
        self.core.hosts[h].set_state(state, returns_at, now);
        match state {
            HostState::Up => log::info!("{}: host {name} is up", self.core.spec.name),
            HostState::Suspect => {
                log::warn!(
                    "{}: host {name} is suspect; checking it",
                    self.core.spec.name
                )
            }
            HostState::Down => match returns_at {
                Some(at) => log::warn!(
                    "{}: host {name} is down; next check in {:.1}s",
                    self.core.spec.name,
                    at.saturating_duration_since(now).as_secs_f64()
                ),
                None => log::warn!("{}: host {name} is down", self.core.spec.name),
            },
        }
        let on_host: Vec<usize> = (0..self.core.len())
            .filter(|&i| self.core.host_index(i) == Some(h))
            .collect();
        match state {
            HostState::Up => {
                for index in on_host {
                    if let Some(cause) = self.supervised(index).held.take() {
                        self.spawn(index, cause);
                    }
                }
            }
            HostState::Down => {
                for index in on_host {
                    let Some(handle) = self.core.instance(index) else {
                        continue;
                    };
                    if self.supervised(index).removed {
                        continue;
                    }
                    match handle.shared.state() {
                        InstanceState::Starting | InstanceState::Ready => {
                            handle.control(Control::Recycle {
                                cause: ExitCause::HostDown,
                                drain: false,
                            });
                        }
                        InstanceState::Restarting => {
                            if let Some((_, cause)) = self.supervised(index).restart_at {
                                self.hold(index, cause);
                            }
                        }
                        _ => {}
                    }
                }
                self.update_host_returns(h, now);
            }
            HostState::Suspect => self.update_host_returns(h, now),
        }
        self.core.notify_change();
    }

    /// Reaps exited processes the I/O threads have not noticed yet and retires old ones.
    fn poll_processes(&mut self, now: Instant) {
        let max_lifetime = self.config().max_lifetime;
        for handle in self.core.instances() {
            let (process, started) = {
                let info = handle.shared.info.lock();
                (info.process.clone(), info.started_at)
            };
            let Some(process) = process else { continue };
            if process.try_reap().is_some() {
                // The I/O thread finds the recorded exit itself: its pidfd stays readable
                // after the reap, and without pidfds it checks on every poll round.
                continue;
            }
            if let Some(limit) = self.core.spec.max_rss_bytes {
                if check_memory(&handle, process.pid(), limit, &self.core.spec.name) {
                    continue;
                }
            }
            if let (Some(max), Some(started)) = (max_lifetime, started) {
                if now.saturating_duration_since(started) >= max
                    && handle.shared.state() == InstanceState::Ready
                {
                    handle.control(Control::Recycle {
                        cause: ExitCause::Retired,
                        drain: true,
                    });
                }
            }
        }
    }

    fn check_probe(&mut self, index: usize, now: Instant) {
        let Some(probe) = self.config().probe.clone() else {
            return;
        };
        let Some(handle) = self.core.instance(index) else {
            return;
        };
        let s = &mut self.instances[index];
        if s.probe.is_some() || s.next_probe.is_none_or(|t| now < t) {
            return;
        }
        s.next_probe = Some(now + probe.interval);
        if handle.shared.state() != InstanceState::Ready || handle.shared.pending() > 0 {
            return;
        }
        let Ok(input) = self.core.protocol.prepare(&probe.prompt) else {
            return;
        };
        let job = Job::new(
            probe.prompt.clone(),
            input,
            now,
            crate::clock::after(now, probe.timeout),
            crate::reply::Reply::channel(self.probe_tx.clone()),
            true,
        );
        let slot = handle.shared.reserve();
        if handle.enqueue(job, slot).is_ok() {
            self.instances[index].probe = Some(handle.shared.generation());
            // The next probe is timed from the answer.
            self.instances[index].next_probe = None;
        }
    }

    fn on_probe_result(&mut self, result: Result<Response>, now: Instant) {
        let Some(probe) = self.config().probe.clone() else {
            return;
        };
        let index = match &result {
            Ok(r) => r.instance,
            Err(
                Error::Timeout {
                    activity: None,
                    instance: Some(i),
                    ..
                }
                | Error::InstanceDied { instance: i, .. }
                | Error::InstanceUnavailable { instance: i, .. }
                | Error::ResponseTooLarge { instance: i, .. },
            ) => *i,
            Err(_) => return,
        };
        let Some(handle) = self.core.instance(index) else {
            return;
        };
        let s = self.supervised(index);
        let Some(generation) = s.probe.take() else {
            return;
        };
        s.next_probe = Some(now + probe.interval);
        let healthy = match &result {
            Ok(r) => r.text.contains(&probe.expect),
            // A timed-out or oversized probe already recycled the process; a dead one is
            // being restarted.
            Err(_) => true,
        };
        if !healthy && handle.shared.generation() == generation {
            if let Ok(r) = &result {
                log::warn!(
                    "{}[{index}]: liveness probe failed: answer {:?} lacks {:?}",
                    self.core.spec.name,
                    r.text,
                    probe.expect
                );
            }
            handle.control(Control::Recycle {
                cause: ExitCause::ProbeFailed,
                drain: false,
            });
        }
    }
}

/// Recycles an instance whose resident memory (its process and descendants) is over `limit`
/// once it is idle, and kills it at once over twice `limit`. True when it acted.
fn check_memory(handle: &InstanceHandle, pid: i32, limit: u64, tool: &str) -> bool {
    if handle.shared.state() != InstanceState::Ready {
        return false;
    }
    let Some(rss) = crate::resident_memory_bytes(pid, true) else {
        return false;
    };
    let index = handle.shared.index;
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    if rss > limit.saturating_mul(2) {
        log::warn!(
            "{tool}[{index}]: resident memory {:.1} MiB is over twice max_rss_bytes ({:.1} MiB): killing it",
            mib(rss),
            mib(limit)
        );
        handle.control(Control::Recycle {
            cause: ExitCause::Memory,
            drain: false,
        });
        return true;
    }
    if rss > limit && handle.shared.pending() == 0 {
        log::warn!(
            "{tool}[{index}]: resident memory {:.1} MiB is over max_rss_bytes ({:.1} MiB): recycling it",
            mib(rss),
            mib(limit)
        );
        handle.control(Control::Recycle {
            cause: ExitCause::Memory,
            drain: true,
        });
        return true;
    }
    false
}
