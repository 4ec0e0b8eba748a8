//! [`ToolProcessPool`]: N supervised instances of one tool, addressed by index.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::events::EventSink;
pub(crate) use crate::fleet::DispatchHooks;
use crate::fleet::Fleet;
use crate::hosts::HostsConfig;
use crate::instance::{
    Control, Doorbell, InstanceHandle, InstanceShared, InstanceState, InstanceStatus, IoEvent, Job,
    StopMethod, StopOutcome,
};
use crate::io_thread::{IoThread, IoThreadConfig};
use crate::launch::{Launcher, LocalLauncher, SshLauncher};
use crate::monitor::{Monitor, MonitorCommand};
use crate::request::Request;
use crate::session_link::SessionLink;
use crate::spec::ToolSpec;
use crate::supervision::SupervisionConfig;
use crate::ticket::Ticket;

/// Extra time allowed past a stop's deadline for SIGTERM, SIGKILL and reaping.
const STOP_SLACK: Duration = Duration::from_secs(6);

/// What `shutdown()` did to each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// One line per instance, by index.
    pub instances: Vec<StopOutcome>,
    /// How long the shutdown took.
    #[serde(with = "crate::duration::duration_ms", rename = "took_ms")]
    pub took: Duration,
    /// The workspaces left in place (uncommitted changes, commits not on the base, or
    /// cleanup `keep`); clean ones were removed. A later launch with the same root reuses them.
    pub kept_workspaces: Vec<crate::workspace::KeptWorkspace>,
}

impl ShutdownReport {
    /// True when every process exited or was killed and reaped (none abandoned).
    pub fn all_reaped(&self) -> bool {
        self.instances
            .iter()
            .all(|o| o.method != StopMethod::Abandoned)
    }
}

/// Options shared by the pool and the cluster.
#[derive(Debug, Clone)]
pub(crate) struct PoolOptions {
    pub supervision: SupervisionConfig,
    /// Prompts queued or in flight per instance before it counts as full.
    pub queue_capacity: usize,
    /// How long `shutdown` lets answers in flight finish.
    pub drain_timeout: Duration,
    pub sink: Option<Arc<dyn EventSink>>,
    /// Record latency histograms and per-kind counters.
    pub record_metrics: bool,
    /// When an answer in flight marks its instance stuck (clusters only).
    pub stuck_after: Duration,
    /// How many instances start at once (0: all).
    pub start_at_once: usize,
    /// How many instances must be ready before launch returns (`None`: all).
    pub min_ready: Option<usize>,
    /// Raise the soft open-file limit up to the hard one when the instances need it.
    pub raise_fd_limit: bool,
    /// How instances' processes are started (`None`: locally, or over ssh with `hosts`).
    pub launcher: Option<Arc<dyn Launcher>>,
    /// Hosts to run on instead (none: the launcher above).
    pub hosts: HostsConfig,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            supervision: SupervisionConfig::default(),
            queue_capacity: 64,
            drain_timeout: Duration::from_secs(5),
            sink: None,
            record_metrics: true,
            stuck_after: Duration::from_secs(1),
            start_at_once: 0,
            min_ready: None,
            raise_fd_limit: false,
            launcher: None,
            hosts: HostsConfig::new(Vec::new()),
        }
    }
}

/// The pool's internals: launching, adding and removing instances, submissions, shutdown.
/// The state the monitor and the dispatcher share with it is the [`Fleet`] it derefs to.
pub(crate) struct PoolCore {
    fleet: Arc<Fleet>,
    drain_timeout: Duration,
    start_at_once: usize,
    raise_fd_limit: bool,
    record_metrics: bool,
    stuck_after: Duration,
    launcher: Arc<dyn Launcher>,
    events_tx: Sender<IoEvent>,
    monitor_tx: Sender<MonitorCommand>,
    monitor: Mutex<Option<JoinHandle<()>>>,
    report: Mutex<Option<ShutdownReport>>,
    launched: Instant,
}

/// What the pool or the cluster adds to a request to make its job (see
/// [`PoolCore::job_and_ticket`]).
pub(crate) struct JobPlan<'a> {
    /// The whole request's timeout when the request sets none.
    pub default_timeout: Duration,
    /// Addressed to one instance by hand: never moved, no session.
    pub pinned: bool,
    /// How long it may wait for an eligible instance (`None`: until its deadline).
    pub submit_timeout: Option<Duration>,
    /// How many resends it gets after its instance dies, given whether it is idempotent.
    pub retries: fn(bool) -> u8,
    /// The session it is sent in, if any.
    pub session: Option<&'a SessionLink>,
    /// The dispatcher to poke when it is cancelled (a cluster's routed prompts).
    pub dispatcher: Option<Sender<()>>,
}

impl JobPlan<'_> {
    /// A pinned prompt: no session, no resends, no dispatcher.
    pub(crate) fn pinned(default_timeout: Duration) -> Self {
        JobPlan {
            default_timeout,
            pinned: true,
            submit_timeout: None,
            retries: |_| 0,
            session: None,
            dispatcher: None,
        }
    }
}

impl PoolCore {
    /// The state shared with the monitor and the dispatcher.
    pub(crate) fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }
}

impl std::ops::Deref for PoolCore {
    type Target = Fleet;

    fn deref(&self) -> &Fleet {
        &self.fleet
    }
}

impl std::fmt::Debug for PoolCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolCore")
            .field("tool", &self.spec.name)
            .field("instances", &self.instances.read().len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl PoolCore {
    /// Starts the monitor and `count` instances and waits until all are ready.
    ///
    /// A cluster passes `hooks` so its dispatcher hears about moved jobs and state changes.
    pub(crate) fn launch(
        spec: ToolSpec,
        count: usize,
        options: PoolOptions,
        hooks: Option<DispatchHooks>,
    ) -> Result<Arc<PoolCore>> {
        if count == 0 {
            return Err(Error::config("count", "must be at least 1"));
        }
        let mut spec = crate::registry::resolve_demo_program(spec)?;
        spec.validate()?;
        if spec.protocol == crate::protocol::ProtocolKind::Aider
            && spec.workspace.kind == crate::workspace::WorkspaceKind::GitWorktree
        {
            crate::protocol::aider_args_for_git_worktree(&mut spec.args);
        }
        options.supervision.validate()?;
        if options.queue_capacity == 0 {
            return Err(Error::config("queue_capacity", "must be positive"));
        }
        crate::spec::check_duration("drain_timeout", options.drain_timeout, false)?;
        crate::spec::check_duration("stuck_after", options.stuck_after, false)?;
        let min_ready = options.min_ready.unwrap_or(count);
        if min_ready == 0 || min_ready > count {
            return Err(Error::config(
                "min_ready",
                format!("must be between 1 and the instance count ({count})"),
            ));
        }
        let mut options = options;
        if !options.hosts.hosts.is_empty() {
            options.hosts.validate()?;
        } else if options.hosts.ssh_config.is_some() {
            return Err(Error::config("ssh_config", "needs hosts to connect to"));
        }
        let launcher: Arc<dyn Launcher> = match options.launcher.take() {
            Some(launcher) => launcher,
            None if !options.hosts.hosts.is_empty() => {
                Arc::new(SshLauncher::new(options.hosts.clone()))
            }
            None => Arc::new(LocalLauncher),
        };
        if !options.hosts.hosts.is_empty() && spec.workspace.is_enabled() {
            return Err(Error::config(
                "workspace",
                "workspaces are local directories: not with hosts",
            ));
        }
        let workspaces = crate::workspace::Workspaces::open(
            &spec.workspace,
            &spec.name,
            spec.for_instance(0).cwd_path().as_deref(),
        )?;
        if spec.protocol.is_agent()
            && options.hosts.hosts.is_empty()
            && !spec.workspace.is_enabled()
            && !spec.cwd.as_deref().is_some_and(|c| c.contains("{index}"))
        {
            crate::workspace::warn_if_shared(&spec.name, count, spec.cwd_path().as_deref());
        }
        let (events_tx, events_rx) = unbounded();
        let (monitor_tx, monitor_rx) = unbounded();
        let fleet = Arc::new(Fleet {
            protocol: spec.build_protocol(),
            spec: Arc::new(spec),
            supervision: options.supervision,
            queue_capacity: options.queue_capacity,
            sink: options.sink,
            instances: RwLock::new(Vec::with_capacity(count)),
            hooks,
            closed: AtomicBool::new(false),
            workspaces,
            hosts: options
                .hosts
                .hosts
                .iter()
                .map(|h| Arc::new(crate::host_state::HostShared::new(h.clone())))
                .collect(),
        });
        let core = Arc::new(PoolCore {
            fleet: Arc::clone(&fleet),
            drain_timeout: options.drain_timeout,
            start_at_once: options.start_at_once,
            raise_fd_limit: options.raise_fd_limit,
            record_metrics: options.record_metrics,
            stuck_after: options.stuck_after,
            launcher,
            events_tx,
            monitor_tx,
            monitor: Mutex::new(None),
            report: Mutex::new(None),
            launched: Instant::now(),
        });
        let monitor = Monitor::new(fleet, Arc::clone(&core.launcher), events_rx, monitor_rx);
        let thread = std::thread::Builder::new()
            .name(format!("aim-monitor-{}", core.spec.name))
            .spawn(move || monitor.run())
            .map_err(|e| Error::io("cannot start the monitor thread", e))?;
        *core.monitor.lock() = Some(thread);
        if let Err(err) = core.add_instances(count, min_ready) {
            core.shutdown();
            return Err(err);
        }
        Ok(core)
    }

    /// Adds `count` instances, starts them (at most `start_at_once` at a time, each with its
    /// own startup deadline) and waits until `min_ready` of them are ready; the rest keep
    /// starting in the background and are supervised as usual. When `min_ready` can no longer
    /// be reached, the instances from the first that failed on are stopped and removed
    /// (indices stay contiguous), so the pool keeps only instances that started or may still.
    pub(crate) fn add_instances(&self, count: usize, min_ready: usize) -> Result<()> {
        crate::process::ensure_fd_budget(count, self.raise_fd_limit)?;
        let mut handles = Vec::with_capacity(count);
        for _ in 0..count {
            let handle = {
                let mut instances = self.instances.write();
                let index = instances.len();
                let handle = self.start_instance(index)?;
                instances.push(Arc::clone(&handle));
                handle
            };
            let _ = self
                .monitor_tx
                .send(MonitorCommand::Added(handle.shared.index));
            handles.push(handle);
        }
        let at_once = match self.start_at_once {
            0 => count,
            k => k.min(count),
        };
        // The slowest case: every batch takes the whole startup timeout.
        let batches = count.div_ceil(at_once) as u32;
        let deadline = crate::clock::after(
            Instant::now(),
            (self.spec.startup_timeout + Duration::from_secs(1)) * batches,
        );
        let first_index = handles.first().map_or(0, |h| h.shared.index);
        let (progress_tx, progress_rx) = unbounded();
        let starter = Starter {
            waiting: handles.into_iter().collect(),
            at_once,
            progress: progress_tx,
        };
        if at_once == count && min_ready == count {
            starter.run(deadline);
        } else {
            std::thread::Builder::new()
                .name(format!("aim-start-{}", self.spec.name))
                .spawn(move || starter.run(deadline))
                .map_err(|e| Error::io("cannot start the starter thread", e))?;
        }
        let (mut ready, mut failed) = (0, Vec::new());
        let mut is_ready = vec![false; count];
        while ready < min_ready && failed.len() <= count - min_ready {
            match progress_rx.recv_deadline(deadline) {
                Ok((index, Ok(()))) => {
                    ready += 1;
                    if let Some(flag) = is_ready.get_mut(index - first_index) {
                        *flag = true;
                    }
                }
                Ok((index, Err(e))) => failed.push((index, e)),
                Err(_) => {
                    // Unanswered by the deadline (or the starter ended): not ready in time.
                    let index = first_index + ready + failed.len();
                    failed.push((
                        index,
                        Error::NotReady {
                            tool: self.spec.name.clone(),
                            instance: index,
                            waited: deadline.saturating_duration_since(self.launched),
                            exit: None,
                            stderr: Vec::new(),
                        },
                    ));
                    break;
                }
            }
        }
        if ready >= min_ready {
            for (index, e) in failed {
                log::warn!(
                    "{}[{index}]: did not start ({e}); {ready} of {count} ready, serving",
                    self.spec.name
                );
            }
            return Ok(());
        }
        let (index, e) = failed
            .into_iter()
            .min_by_key(|(index, _)| *index)
            .expect("a failure ended the wait");
        // Results already in: an instance may have become ready after another failed.
        while let Ok((index, result)) = progress_rx.try_recv() {
            if let (Ok(()), Some(flag)) = (result, is_ready.get_mut(index - first_index)) {
                *flag = true;
            }
        }
        // Keep the instances up to the first that is not ready (failed or still starting).
        let cut = first_index + is_ready.iter().position(|r| !r).unwrap_or(count);
        let removed = self.remove_from(cut);
        // The caller gets `e`: debug only, so it reads one clear error, not warnings first.
        log::debug!(
            "{}: instance {index} did not start; removed {} instances: {e}",
            self.spec.name,
            removed.len()
        );
        Err(e)
    }

    fn start_instance(&self, index: usize) -> Result<Arc<InstanceHandle>> {
        let shared = Arc::new(
            InstanceShared::new(index, self.spec.name.as_str().into(), self.record_metrics)
                .on_host(self.host_of(index).cloned()),
        );
        let (jobs_tx, jobs_rx) = unbounded();
        let (control_tx, control_rx) = unbounded();
        let doorbell = Arc::new(Doorbell::new()?);
        let config = IoThreadConfig {
            spec: Arc::new(self.spec.for_instance(index)),
            launcher: Arc::clone(&self.launcher),
            protocol: Arc::clone(&self.protocol),
            shared: Arc::clone(&shared),
            jobs: jobs_rx,
            control: control_rx,
            doorbell: Arc::clone(&doorbell),
            events: self.events_tx.clone(),
            hooks: self.hooks.clone(),
            max_requests: self.supervision.max_requests,
            stuck_after: self.stuck_after,
            workspaces: self.workspaces.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("aim-io-{}-{index}", self.spec.name))
            .spawn(move || IoThread::new(config).run())
            .map_err(|e| Error::io("cannot start an I/O thread", e))?;
        Ok(Arc::new(InstanceHandle::new(
            shared, jobs_tx, control_tx, doorbell, thread,
        )))
    }

    /// Reads every instance's metrics and builds a snapshot.
    pub(crate) fn metrics(
        &self,
        strategy: &str,
        uptime: Duration,
        backlog: u64,
        refused: (u64, u64),
    ) -> crate::metrics::MetricsSnapshot {
        let now = Instant::now();
        let instances =
            self.with_instances(|all| all.iter().map(|h| h.shared.metrics(now)).collect());
        let uptime = if uptime.is_zero() {
            now.saturating_duration_since(self.launched)
        } else {
            uptime
        };
        let mut snapshot = crate::metrics::MetricsSnapshot::build(
            &self.spec.name,
            strategy,
            uptime,
            instances,
            backlog,
            refused,
        );
        snapshot.hosts = self.host_statuses();
        snapshot
    }

    /// The one place a request becomes a job and its ticket: the prompt rendered for the
    /// tool, its deadline (the request's limit, else `plan.default_timeout`), and what the
    /// pool or the cluster adds (`plan`).
    ///
    /// # Errors
    /// [`Error::Shutdown`] once the pool is closed; [`Error::InvalidPrompt`] when the
    /// protocol rejects the prompt (both hand the prompt back).
    pub(crate) fn job_and_ticket(
        self: &Arc<Self>,
        request: Request,
        plan: JobPlan<'_>,
    ) -> Result<(Job, Ticket)> {
        let Request {
            prompt,
            limit,
            idempotent,
            session: key,
            stream,
            answer_timeout,
        } = request;
        if self.is_closed() {
            return Err(Error::Shutdown {
                prompt: Some(prompt),
            });
        }
        // Rendered from a borrow: the prompt is kept (to hand back on failure), not copied.
        let input = match self.protocol.prepare(&prompt) {
            Ok(input) => input,
            Err(reason) => return Err(Error::InvalidPrompt { reason, prompt }),
        };
        let now = Instant::now();
        let deadline = limit.resolve(now, plan.default_timeout);
        let (reply, slot) = crate::reply::Reply::ticket();
        let mut job = Job::new(prompt, input, now, deadline, reply, plan.pinned);
        if let Some(wait) = plan.submit_timeout {
            job.wait_deadline = crate::clock::after(job.submitted, wait);
        }
        // A pinned prompt has no session and never moves.
        job.session = if plan.pinned { None } else { key };
        job.answer_timeout = answer_timeout;
        job.session_from = plan.session.and_then(SessionLink::last_instance);
        job.retries_left = (plan.retries)(idempotent);
        let canceller = self.canceller(&job, plan.dispatcher);
        let chunks = job.stream_to_caller(stream);
        let ticket = Ticket::new(
            slot,
            Arc::clone(&job.placed),
            job.submitted,
            plan.session.cloned(),
            canceller,
        )
        .with_chunks(chunks);
        Ok((job, ticket))
    }

    /// Builds a pinned job for `request` and queues it on instance `index`: manual addressing
    /// for both the pool and the cluster.
    pub(crate) fn submit_to(
        self: &Arc<Self>,
        index: usize,
        request: Request,
        default_timeout: Duration,
    ) -> Result<Ticket> {
        let (job, ticket) = self.job_and_ticket(request, JobPlan::pinned(default_timeout))?;
        self.submit_pinned(index, job)?;
        Ok(ticket)
    }

    /// What cancels `job` (with the dispatcher to poke, in a cluster).
    pub(crate) fn canceller(
        self: &Arc<Self>,
        job: &Job,
        dispatcher: Option<Sender<()>>,
    ) -> crate::cancel::Canceller {
        crate::cancel::Canceller::new(
            Arc::clone(&job.cancel),
            Arc::clone(&job.placed),
            Arc::downgrade(&self.fleet),
            dispatcher,
        )
    }

    /// Queues `job` on instance `index` if it can take it.
    fn submit_pinned(&self, index: usize, job: Job) -> Result<()> {
        let count = self.len();
        let Some(handle) = self.instance(index) else {
            return Err(Error::NoSuchInstance { index, count });
        };
        let shared = &handle.shared;
        let state = shared.state();
        if matches!(state, InstanceState::Failed | InstanceState::Stopped) {
            return Err(Error::InstanceUnavailable {
                instance: index,
                state: state.to_string(),
                prompt: Some(job.prompt),
            });
        }
        if shared.circuit() == crate::breaker::CircuitState::Open {
            return Err(Error::InstanceUnavailable {
                instance: index,
                state: "circuit open".into(),
                prompt: Some(job.prompt),
            });
        }
        let Some(slot) = shared.try_reserve(self.queue_capacity) else {
            return Err(Error::Busy { prompt: job.prompt });
        };
        handle.enqueue(job, slot).map_err(|job| Error::Shutdown {
            prompt: Some(job.prompt),
        })
    }

    /// Sends `signal` to instance `index`'s process (the tool alone, not its group).
    pub(crate) fn signal(&self, index: usize, signal: crate::Signal) -> Result<()> {
        let count = self.len();
        let Some(handle) = self.instance(index) else {
            return Err(Error::NoSuchInstance { index, count });
        };
        let process = handle.shared.info.lock().process.clone();
        match process {
            Some(process) if process.exit().is_none() => {
                process.signal_tool(signal);
                Ok(())
            }
            _ => Err(Error::InstanceUnavailable {
                instance: index,
                state: handle.shared.state().to_string(),
                prompt: None,
            }),
        }
    }

    pub(crate) fn restart_instance(&self, index: usize) -> Result<()> {
        let count = self.len();
        if index >= count {
            return Err(Error::NoSuchInstance { index, count });
        }
        if self.is_closed() {
            return Err(Error::Shutdown { prompt: None });
        }
        let (tx, rx) = bounded(1);
        self.monitor_tx
            .send(MonitorCommand::Restart { index, reply: tx })
            .map_err(|_| Error::Shutdown { prompt: None })?;
        let wait = self.spec.startup_timeout + self.spec.stop_grace * 2 + STOP_SLACK;
        rx.recv_timeout(wait).unwrap_or_else(|_| {
            Err(Error::NotReady {
                tool: self.spec.name.clone(),
                instance: index,
                waited: wait,
                exit: None,
                stderr: Vec::new(),
            })
        })
    }

    /// Stops instances from `keep` on (answers in flight drained first, queued prompts handed
    /// back to the dispatcher) and removes them.
    pub(crate) fn remove_from(&self, keep: usize) -> Vec<StopOutcome> {
        let removed: Vec<Arc<InstanceHandle>> = {
            let mut instances = self.instances.write();
            if keep >= instances.len() {
                return Vec::new();
            }
            instances.split_off(keep)
        };
        for handle in &removed {
            let _ = self
                .monitor_tx
                .send(MonitorCommand::Removed(handle.shared.index));
        }
        self.stop_instances(&removed)
    }

    fn stop_instances(&self, handles: &[Arc<InstanceHandle>]) -> Vec<StopOutcome> {
        let deadline = Instant::now() + self.drain_timeout;
        let replies: Vec<_> = handles
            .iter()
            .map(|h| {
                let (tx, rx) = bounded(1);
                h.control(Control::Stop {
                    deadline,
                    reply: Some(tx),
                });
                (h, rx)
            })
            .collect();
        let wait_until = deadline + self.spec.stop_grace * 2 + STOP_SLACK;
        let outcomes = replies
            .into_iter()
            .map(|(h, rx)| match rx.recv_deadline(wait_until) {
                Ok(outcome) => {
                    h.join();
                    outcome
                }
                Err(_) => {
                    log::error!(
                        "{}[{}]: I/O thread did not stop in time",
                        self.spec.name,
                        h.shared.index
                    );
                    StopOutcome {
                        index: h.shared.index,
                        pid: h.shared.pid(),
                        method: StopMethod::Abandoned,
                        exit: None,
                    }
                }
            })
            .collect();
        outcomes
    }

    /// Stops everything; idempotent (later calls return the first call's report).
    pub(crate) fn shutdown(&self) -> ShutdownReport {
        let mut report = self.report.lock();
        if let Some(report) = report.as_ref() {
            return report.clone();
        }
        let started = Instant::now();
        self.closed.store(true, Ordering::Release);
        let _ = self.monitor_tx.send(MonitorCommand::Shutdown);
        if let Some(thread) = self.monitor.lock().take() {
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                log::error!("{}: monitor thread panicked", self.spec.name);
            }
        }
        let handles = self.instances();
        let instances = self.stop_instances(&handles);
        let kept_workspaces = self
            .workspaces
            .as_ref()
            .map(|w| w.close())
            .unwrap_or_default();
        let done = ShutdownReport {
            instances,
            took: started.elapsed(),
            kept_workspaces,
        };
        log::debug!("{}: shut down in {:?}", self.spec.name, done.took);
        *report = Some(done.clone());
        done
    }
}

/// N supervised instances of one tool, addressed by index.
///
/// Each instance has a dedicated I/O thread; one monitor thread restarts instances that
/// crash or hang. The handle is cheap to clone and shareable across threads; when the last
/// clone is dropped the pool shuts down (bounded, logging only).
///
/// ```
/// # aim::demo::serve_if_requested();
/// use aim::{ToolProcessPool, ToolRegistry};
/// let spec = ToolRegistry::builtin().resolve("demo")?;
/// let pool = ToolProcessPool::new(spec, 2)?;
/// let answer = pool.send_to(1, "hello")?;
/// assert_eq!(answer.instance, 1);
/// assert!(answer.text.contains("hello"));
/// let report = pool.shutdown();
/// assert!(report.all_reaped());
/// # Ok::<(), aim::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ToolProcessPool {
    handle: Arc<PoolHandle>,
}

#[derive(Debug)]
struct PoolHandle {
    core: Arc<PoolCore>,
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        if !self.core.is_closed() {
            let report = self.core.shutdown();
            log::debug!("pool dropped: {} instances stopped", report.instances.len());
        }
    }
}

impl ToolProcessPool {
    /// A pool handle over an existing core (the pool underneath a cluster).
    pub(crate) fn from_core(core: Arc<PoolCore>) -> Self {
        ToolProcessPool {
            handle: Arc::new(PoolHandle { core }),
        }
    }

    /// Starts `count` instances of `spec` with default supervision and waits until all are
    /// ready (each up to the spec's startup timeout).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad spec or a zero count; [`Error::Spawn`] when the
    /// program cannot be executed; [`Error::NotReady`] when an instance exits during startup or
    /// does not become ready in time. Nothing is left running on error.
    pub fn new(spec: ToolSpec, count: usize) -> Result<Self> {
        ToolProcessPool::builder(spec).count(count).launch()
    }

    /// A builder for a pool of the registry tool `tool_id`, found as
    /// [`ClusterManager::builder_for`](crate::ClusterManager::builder_for) finds it: the
    /// built-ins plus the file named by `AIM_TOOLS`.
    ///
    /// # Errors
    /// [`Error::UnknownTool`] (listing the known ids), [`Error::ToolsFile`].
    pub fn builder_for(tool_id: &str) -> Result<PoolBuilder> {
        Ok(ToolProcessPool::builder(
            crate::registry::ToolRegistry::from_env()?.get(tool_id)?,
        ))
    }

    /// A builder for a pool with non-default options.
    pub fn builder(spec: ToolSpec) -> PoolBuilder {
        PoolBuilder {
            spec,
            count: 1,
            options: PoolOptions::default(),
        }
    }

    /// How many instances the pool has.
    pub fn len(&self) -> usize {
        self.handle.core.len()
    }

    /// True when the pool has no instances.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The spec the pool runs.
    pub fn spec(&self) -> &ToolSpec {
        &self.handle.core.spec
    }

    /// Queues a prompt on instance `index` and returns at once. Takes what
    /// [`ClusterManager::submit_to`](crate::ClusterManager::submit_to) takes: a `&str`, a
    /// `String` or a [`Request`] (its time limit, answer timeout and streaming apply; a
    /// pinned prompt has no session and is never retried elsewhere).
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`], [`Error::NoSuchInstance`], [`Error::Busy`] when the instance's
    /// queue is full, [`Error::InstanceUnavailable`] when it is failed, stopped or its circuit
    /// is open, [`Error::Shutdown`]. The prompt is handed back in every case.
    pub fn submit_to(&self, index: usize, request: impl Into<Request>) -> Result<Ticket> {
        let core = &self.handle.core;
        core.submit_to(index, request.into(), core.spec.request_timeout)
    }

    crate::request::pinned_sends!("ToolProcessPool");

    /// Each instance's status, from what the I/O threads and the monitor last recorded.
    /// Never blocks on a child.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.handle
            .core
            .instances()
            .iter()
            .map(|h| h.shared.status(false))
            .collect()
    }

    /// Each instance's status, with liveness checked now by `waitpid(pid, WNOHANG)`.
    pub fn check_health(&self) -> Vec<InstanceStatus> {
        self.handle
            .core
            .instances()
            .iter()
            .map(|h| h.shared.status(true))
            .collect()
    }

    /// Replaces instance `index`'s process (after its answer in flight) with a fresh one,
    /// resetting its restart budget and circuit breaker, and blocks until it is ready. The
    /// instance count never changes.
    ///
    /// # Errors
    /// [`Error::NoSuchInstance`], [`Error::Shutdown`], or why the new process did not start.
    pub fn restart_instance(&self, index: usize) -> Result<()> {
        self.handle.core.restart_instance(index)
    }

    /// Sends `signal` to instance `index`'s process, for tests and chaos: `Signal::SIGKILL`
    /// kills it and the monitor handles the exit like any other (restart per policy, the
    /// answer in flight fails). Only the tool's own process gets it, not its process group.
    /// The pid is `status()[index].pid`, the one documented way to read it (it changes with
    /// every restart). Returns at once.
    ///
    /// # Errors
    /// [`Error::NoSuchInstance`]; [`Error::InstanceUnavailable`] when the instance has no
    /// running process (starting, restarting, stopped).
    pub fn signal(&self, index: usize, signal: crate::Signal) -> Result<()> {
        self.handle.core.signal(index, signal)
    }

    /// A metrics snapshot of every instance (the pool has no backlog or strategy).
    pub fn metrics(&self) -> crate::metrics::MetricsSnapshot {
        self.handle
            .core
            .metrics("manual", Duration::ZERO, 0, (0, 0))
    }

    /// Stops every instance: the quit command (or end of input), SIGTERM to the process group
    /// after the grace period, then SIGKILL; every process is reaped. Answers in flight get the
    /// drain timeout to finish; queued prompts fail with [`Error::Shutdown`]. Idempotent:
    /// later calls return the same report. Blocks for at most the drain timeout plus twice the
    /// stop grace plus a few seconds.
    pub fn shutdown(&self) -> ShutdownReport {
        self.handle.core.shutdown()
    }
}

/// The setters a [`PoolBuilder`] and a [`crate::ClusterBuilder`] share: both keep them in an
/// `options: PoolOptions` field.
macro_rules! shared_setters {
    () => {
        /// All supervision settings at once. Defaults to [`SupervisionConfig::default`]. On a
        /// cluster builder, settings given one by one (`max_requests`, `backoff`, ...) win
        /// over these, whether given before or after.
        pub fn supervision(mut self, supervision: SupervisionConfig) -> Self {
            self.options.supervision = supervision;
            self
        }

        /// Prompts queued or in flight per instance before it is full. Defaults to 64.
        pub fn queue_capacity(mut self, capacity: usize) -> Self {
            self.options.queue_capacity = capacity;
            self
        }

        /// How long `shutdown` lets answers in flight finish. Defaults to 5 s.
        pub fn drain_timeout(mut self, timeout: Duration) -> Self {
            self.options.drain_timeout = timeout;
            self
        }

        /// Where lifecycle events go (besides `log`). Defaults to nowhere.
        pub fn event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
            self.options.sink = Some(sink);
            self
        }

        /// Whether to record latency histograms and per-kind counters (a few atomic adds per
        /// answer). Answer counts in the status are kept either way. Defaults to true.
        pub fn record_metrics(mut self, record: bool) -> Self {
            self.options.record_metrics = record;
            self
        }

        /// Starts at most this many instances at once (the next starts when one is ready or
        /// failed; each has its own startup timeout), for heavy tools on few cores: aider
        /// takes 2 s of CPU to start. 0 starts all at once. Defaults to 0.
        pub fn start_at_once(mut self, count: usize) -> Self {
            self.options.start_at_once = count;
            self
        }

        /// When the instances would need more file descriptors than the soft open-file limit
        /// (`RLIMIT_NOFILE`; about 5 per instance), raise it up to the hard limit instead of
        /// failing with an error that names the limit and the need. Defaults to false.
        pub fn raise_fd_limit(mut self, raise: bool) -> Self {
            self.options.raise_fd_limit = raise;
            self
        }

        /// Launch returns once this many instances are ready; the rest keep starting in the
        /// background (and are restarted under supervision if they fail), and the cluster
        /// serves with the ready ones meanwhile. Defaults to all of them: launch fails if any
        /// instance does not start.
        pub fn min_ready(mut self, count: usize) -> Self {
            self.options.min_ready = Some(count);
            self
        }

        /// Runs the instances on these hosts instead of this machine, spread evenly
        /// (instance `i` on host `i % hosts`), each through the system `ssh` client and an
        /// `aim relay` on the far side (plain `ssh -T`, with a warning, where there is none).
        /// A host is anything `ssh` accepts: `user@host`, or an alias from the ssh config.
        /// Each host is supervised (up, suspect, down: see
        /// [`HostState`](crate::HostState)); its state is in `health()` and `metrics()`.
        /// Each answer's [`Response::host`](crate::Response::host) names its host. Defaults
        /// to none (this machine). Launch fails with [`Error::InvalidConfig`] (field
        /// `hosts`) for a destination `ssh` would take as an option, or one named twice.
        pub fn hosts<I, S>(mut self, hosts: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            self.options.hosts.hosts = hosts.into_iter().map(Into::into).collect();
            self
        }

        /// The ssh config file for [`hosts`](Self::hosts) (`ssh -F FILE`). Defaults to the
        /// user's own (`~/.ssh/config`).
        pub fn ssh_config(mut self, file: impl Into<std::path::PathBuf>) -> Self {
            self.options.hosts.ssh_config = Some(file.into());
            self
        }

        /// The `aim` program on the far side of [`hosts`](Self::hosts). Defaults to `aim`
        /// (found on the remote `PATH`).
        pub fn remote_aim(mut self, program: impl Into<String>) -> Self {
            self.options.hosts.remote_aim = program.into();
            self
        }

        /// The ssh client for [`hosts`](Self::hosts), called with OpenSSH's options
        /// (`-T`, `-o ControlPath=...`, `--`, the host and the remote command line; with
        /// `-M` and no command, it is the host's control connection and must create its
        /// `ControlPath` once ready, as `ssh` does). Defaults to `ssh` (found on `PATH`).
        pub fn ssh_program(mut self, program: impl Into<String>) -> Self {
            self.options.hosts.ssh_program = program.into();
            self
        }
    };
}
pub(crate) use shared_setters;

/// Starts instances at most `at_once` at a time and reports each one's outcome.
struct Starter {
    waiting: std::collections::VecDeque<Arc<InstanceHandle>>,
    at_once: usize,
    progress: Sender<(usize, Result<()>)>,
}

impl Starter {
    fn run(mut self, deadline: Instant) {
        let mut starting: Vec<(usize, crossbeam_channel::Receiver<Result<()>>)> = Vec::new();
        loop {
            while starting.len() < self.at_once {
                let Some(handle) = self.waiting.pop_front() else {
                    break;
                };
                let (tx, rx) = bounded(1);
                handle.control(Control::Spawn { notify: Some(tx) });
                starting.push((handle.shared.index, rx));
            }
            if starting.is_empty() {
                return;
            }
            if self.waiting.is_empty() {
                self.finish(starting, deadline);
                return;
            }
            let mut select = crossbeam_channel::Select::new();
            for (_, rx) in &starting {
                select.recv(rx);
            }
            let Ok(op) = select.select_deadline(deadline) else {
                return;
            };
            let slot = op.index();
            let result = op
                .recv(&starting[slot].1)
                .unwrap_or(Err(Error::Shutdown { prompt: None }));
            drop(select);
            let (index, _) = starting.swap_remove(slot);
            // Nobody may be listening any more (launch returned at min_ready): keep starting.
            let _ = self.progress.send((index, result));
        }
    }

    /// Nothing left to start: reports the outcomes of those `starting` as they come (never in
    /// index order: a slow first instance must not hold back the others). One `Select`,
    /// each finished receiver removed from it, so hundreds of instances stay linear.
    fn finish(
        &self,
        starting: Vec<(usize, crossbeam_channel::Receiver<Result<()>>)>,
        deadline: Instant,
    ) {
        let mut select = crossbeam_channel::Select::new();
        for (_, rx) in &starting {
            select.recv(rx);
        }
        for _ in 0..starting.len() {
            let Ok(op) = select.select_deadline(deadline) else {
                return;
            };
            let slot = op.index();
            let result = op
                .recv(&starting[slot].1)
                .unwrap_or(Err(Error::Shutdown { prompt: None }));
            select.remove(slot);
            let _ = self.progress.send((starting[slot].0, result));
        }
    }
}

/// Builds a [`ToolProcessPool`].
#[derive(Debug)]
pub struct PoolBuilder {
    spec: ToolSpec,
    count: usize,
    options: PoolOptions,
}

impl PoolBuilder {
    /// How many instances. Defaults to 1.
    pub fn count(mut self, count: usize) -> Self {
        self.count = count;
        self
    }

    shared_setters!();

    /// Validates everything, starts the pool and waits until every instance is ready.
    ///
    /// # Errors
    /// As [`ToolProcessPool::new`].
    pub fn launch(self) -> Result<ToolProcessPool> {
        let core = PoolCore::launch(self.spec, self.count, self.options, None)?;
        Ok(ToolProcessPool {
            handle: Arc::new(PoolHandle { core }),
        })
    }

    /// The former name of [`PoolBuilder::launch`], kept so existing programs still build.
    ///
    /// # Errors
    /// As [`PoolBuilder::launch`].
    #[deprecated(note = "renamed `launch`, as on `ClusterBuilder`")]
    pub fn build(self) -> Result<ToolProcessPool> {
        self.launch()
    }
}
