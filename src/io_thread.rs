//! The dedicated I/O thread of one instance.
//!
//! It owns the child's stdin, stdout and stderr (or PTY) and its pidfd, and multiplexes them
//! with `poll(2)` together with a doorbell (an eventfd) that others ring after putting a job or
//! a command on its crossbeam channels. Nothing here sleeps: every wait is a `poll` whose
//! timeout is the nearest deadline (an answer's, the startup's, a stop step's, a settle timer).
//!
//! It spawns the child itself, so `PR_SET_PDEATHSIG` ties the child's life to this thread.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::Signal;

use crate::ansi::AnsiStripper;
use crate::breaker::CircuitState;
use crate::error::{Error, Result};
use crate::framing::{fresh_nonce, Framer, Progress, Rule};
use crate::instance::{
    Control, Doorbell, ExitCause, InstanceShared, InstanceState, IoEvent, Job, Response,
    StopMethod, StopOutcome,
};
use crate::pool::DispatchHooks;
use crate::process::{self, poll_timeout, ChildIo, ChildProcess, ExitInfo};
use crate::spec::{Framing, Readiness, Stream, ToolSpec};

/// The longest stderr line kept; longer lines are cut.
const MAX_STDERR_LINE: usize = 1024;
/// Bytes read from one stream per poll round, so one flooding stream cannot starve the rest.
const READ_BUDGET: usize = 1 << 20;
/// How long a child that closed its output gets to exit before it is killed.
const EOF_GRACE: Duration = Duration::from_millis(500);
/// How long we wait for the kernel to deliver SIGKILL before giving up on reaping.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Bytes per read(2); each I/O thread keeps one buffer of this size.
const READ_CHUNK: usize = 16 * 1024;
/// Readiness output kept while waiting for the ready marker.
const STARTUP_WINDOW: usize = 1 << 20;

/// What an I/O thread needs.
pub(crate) struct IoThreadConfig {
    pub spec: Arc<ToolSpec>,
    pub shared: Arc<InstanceShared>,
    pub jobs: Receiver<Job>,
    pub control: Receiver<Control>,
    pub doorbell: Arc<Doorbell>,
    pub events: Sender<IoEvent>,
    /// The cluster's dispatcher, if any: where movable jobs go, and whom to wake.
    pub hooks: Option<DispatchHooks>,
    /// Retire the process after this many answers.
    pub max_requests: Option<u64>,
}

/// One step of stopping a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopStep {
    /// The quit command was written (or stdin closed); waiting for exit.
    Quit,
    /// The child closed its output on its own; waiting for it to exit.
    AwaitExit,
    /// SIGINT sent (an answer timed out); waiting.
    Interrupt,
    /// SIGTERM sent; waiting.
    Term,
    /// SIGKILL sent; waiting for the kernel.
    Kill,
}

enum Phase {
    Starting {
        framer: Option<Framer>,
        deadline: Instant,
        began: Instant,
    },
    Idle,
    Busy {
        job: Job,
        framer: Framer,
        began: Instant,
    },
    Stopping {
        cause: ExitCause,
        step: StopStep,
        deadline: Instant,
        /// The job that was in flight when the child went away, failed once the exit is known.
        orphan: Option<Job>,
    },
}

struct Running {
    process: Arc<ChildProcess>,
    io: ChildIo,
    generation: u64,
    phase: Phase,
    out: Vec<u8>,
    out_pos: usize,
    stderr_line: Vec<u8>,
    strip: Option<(AnsiStripper, AnsiStripper)>,
    notify: Option<Sender<Result<()>>>,
    retire_after_job: Option<ExitCause>,
    /// When startup began, until the process is ready.
    starting_since: Option<Instant>,
}

pub(crate) struct IoThread {
    cfg: IoThreadConfig,
    queue: VecDeque<Job>,
    child: Option<Running>,
    /// Set by `Control::Stop`: end the thread once the child is gone.
    exiting: Option<(Instant, Option<Sender<StopOutcome>>)>,
    stop_method: StopMethod,
    last_exit: Option<ExitInfo>,
    last_pid: i32,
    reported_failure: bool,
    scratch: Vec<u8>,
    /// Answers complete but not yet handed to their callers.
    answered: Vec<(Job, Result<Response>)>,
}

#[derive(Clone, Copy)]
enum Source {
    Bell,
    Stdout,
    Stderr,
    Stdin,
    Pid,
}

impl IoThread {
    pub(crate) fn new(cfg: IoThreadConfig) -> Self {
        IoThread {
            cfg,
            queue: VecDeque::new(),
            child: None,
            exiting: None,
            stop_method: StopMethod::NotRunning,
            last_exit: None,
            last_pid: 0,
            reported_failure: false,
            scratch: vec![0; READ_CHUNK],
            answered: Vec::new(),
        }
    }

    fn index(&self) -> usize {
        self.cfg.shared.index
    }

    pub(crate) fn run(mut self) {
        loop {
            self.take_commands();
            self.take_jobs();
            let now = Instant::now();
            self.expire_queued(now);
            self.start_next_job(now);
            // Waking a caller may hand it this CPU: give the tool its next prompt first, so
            // it works while the caller runs.
            self.deliver_answers();
            if self.child.is_none() {
                if let Some((_, reply)) = self.exiting.take() {
                    self.finish_thread(reply);
                    return;
                }
            }
            self.poll_once();
            self.on_timers(Instant::now());
        }
    }

    // ----- commands and jobs -------------------------------------------------------------

    fn take_commands(&mut self) {
        loop {
            match self.cfg.control.try_recv() {
                Ok(command) => self.on_command(command),
                Err(crossbeam_channel::TryRecvError::Empty) => return,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    if self.exiting.is_none() {
                        self.on_command(Control::Stop {
                            deadline: Instant::now() + self.cfg.spec.stop_grace * 3,
                            reply: None,
                        });
                    }
                    return;
                }
            }
        }
    }

    fn on_command(&mut self, command: Control) {
        match command {
            Control::Spawn { notify } => {
                if self.exiting.is_some() {
                    if let Some(n) = notify {
                        let _ = n.send(Err(Error::Shutdown { prompt: None }));
                    }
                } else if let Some(child) = &mut self.child {
                    match (&child.phase, notify) {
                        (Phase::Idle | Phase::Busy { .. }, Some(n)) => {
                            let _ = n.send(Ok(()));
                        }
                        (_, Some(n)) => child.notify = Some(n),
                        (_, None) => {}
                    }
                } else {
                    self.spawn_child(notify);
                }
            }
            Control::Recycle { cause, drain } => self.recycle(cause, drain),
            Control::Stop { deadline, reply } => {
                self.exiting = Some((deadline, reply));
                self.release_queue(|| Error::Shutdown { prompt: None });
                match self.child.as_ref().map(|c| &c.phase) {
                    Some(Phase::Busy { .. }) => {
                        if let Some(child) = &mut self.child {
                            child.retire_after_job = Some(ExitCause::Shutdown);
                        }
                    }
                    Some(Phase::Stopping { .. }) | None => {}
                    Some(_) => self.begin_stop(ExitCause::Shutdown, StopStep::Quit),
                }
            }
        }
    }

    fn recycle(&mut self, cause: ExitCause, drain: bool) {
        let Some(child) = &mut self.child else { return };
        match child.phase {
            Phase::Stopping { .. } => {}
            Phase::Busy { .. } if drain => child.retire_after_job = Some(cause),
            Phase::Busy { .. } => self.begin_stop(cause, StopStep::Term),
            _ => self.begin_stop(cause, StopStep::Quit),
        }
    }

    fn take_jobs(&mut self) {
        while let Ok(job) = self.cfg.jobs.try_recv() {
            if self.exiting.is_some() {
                self.hand_back(job, || Error::Shutdown { prompt: None });
            } else if self.child.is_none() && !job.pinned && self.cfg.hooks.is_some() {
                // Down: let another instance answer it.
                self.hand_back(job, || Error::Shutdown { prompt: None });
            } else if !self.can_serve_soon() {
                let state = self.cfg.shared.state();
                self.hand_back(job, || Error::InstanceUnavailable {
                    instance: 0,
                    state: state.to_string(),
                    prompt: None,
                });
            } else {
                self.queue.push_back(job);
            }
        }
    }

    /// Whether queued jobs can expect this instance to answer them.
    fn can_serve_soon(&self) -> bool {
        match self.cfg.shared.state() {
            InstanceState::Failed | InstanceState::Stopped => false,
            _ => self.cfg.shared.circuit() != CircuitState::Open || self.child.is_some(),
        }
    }

    /// Moves a job to another instance when it may move; otherwise fails it with `error`.
    fn hand_back(&mut self, job: Job, error: impl FnOnce() -> Error) {
        self.cfg.shared.pending.fetch_sub(1, Ordering::AcqRel);
        if !job.pinned {
            if let Some(rehome) = self.cfg.hooks.as_ref().map(|h| &h.rehome) {
                job.placed.store(usize::MAX, Ordering::Release);
                match rehome.send(job) {
                    Ok(()) => return,
                    Err(e) => {
                        let job = e.into_inner();
                        job.fail(Error::Shutdown { prompt: None });
                        return;
                    }
                }
            }
        }
        let mut err = error();
        if let Error::InstanceUnavailable { instance, .. } = &mut err {
            *instance = self.index();
        }
        self.cfg.shared.stats.on_failure(&err);
        job.fail(err);
    }

    /// Hands back every queued job that may move (or fails it).
    fn release_queue(&mut self, error: impl Fn() -> Error) {
        let queued: Vec<Job> = self.queue.drain(..).collect();
        for job in queued {
            self.hand_back(job, &error);
        }
    }

    /// Moves queued jobs that may move to other instances, keeping pinned ones.
    fn rehome_movable(&mut self) {
        if self.cfg.hooks.is_none() {
            return;
        }
        let (pinned, movable): (VecDeque<Job>, VecDeque<Job>) =
            self.queue.drain(..).partition(|j| j.pinned);
        self.queue = pinned;
        for job in movable {
            self.hand_back(job, || Error::Shutdown { prompt: None });
        }
    }

    fn expire_queued(&mut self, now: Instant) {
        if !self.queue.iter().any(|j| j.deadline <= now) {
            return;
        }
        let (expired, kept): (VecDeque<Job>, VecDeque<Job>) =
            self.queue.drain(..).partition(|j| j.deadline <= now);
        self.queue = kept;
        for job in expired {
            let err = Error::Timeout {
                instance: Some(self.index()),
                waited: now.saturating_duration_since(job.submitted),
                written: false,
                prompt: None,
            };
            self.complete(job, Err(err));
        }
    }

    /// Sends a job's result, keeping `pending`, statistics and the breaker's input right.
    fn complete(&mut self, job: Job, result: Result<Response>) {
        let shared = &self.cfg.shared;
        shared.pending.fetch_sub(1, Ordering::AcqRel);
        self.wake_dispatcher();
        match &result {
            Ok(response) => {
                shared.stats.on_success(response.elapsed);
                shared.served.fetch_add(1, Ordering::AcqRel);
                if self.reported_failure || shared.circuit() != CircuitState::Closed {
                    self.reported_failure = false;
                    self.send_event(IoEvent::Outcome {
                        index: shared.index,
                        ok: true,
                        timed_out: false,
                    });
                }
            }
            Err(err) => {
                shared.stats.on_failure(err);
                // Failures of the instance itself feed the breaker; a caller's deadline passing
                // while the job was still queued does not.
                let counts = match err {
                    Error::Timeout { written, .. } => *written,
                    Error::ResponseTooLarge { .. } => true,
                    _ => false,
                };
                if counts {
                    self.reported_failure = true;
                    self.send_event(IoEvent::Outcome {
                        index: shared.index,
                        ok: false,
                        timed_out: err.is_timeout(),
                    });
                }
            }
        }
        // Delivered after the next prompt is written (see `run`).
        self.answered.push((job, result));
    }

    /// Hands finished answers to their callers.
    fn deliver_answers(&mut self) {
        for (job, result) in self.answered.drain(..) {
            match result {
                Ok(response) => job.finish(Ok(response)),
                Err(err) => job.fail(err),
            }
        }
    }

    /// Tells the dispatcher a queue slot freed up, when prompts are waiting for one.
    fn wake_dispatcher(&self) {
        if let Some(hooks) = &self.cfg.hooks {
            if hooks.backlog.load(Ordering::Acquire) > 0 {
                let _ = hooks.changes.try_send(());
            }
        }
    }

    fn send_event(&self, event: IoEvent) {
        let _ = self.cfg.events.send(event);
    }

    // ----- spawning ----------------------------------------------------------------------

    fn spawn_child(&mut self, notify: Option<Sender<Result<()>>>) {
        let shared = Arc::clone(&self.cfg.shared);
        shared.set_state(InstanceState::Starting);
        let spec = Arc::clone(&self.cfg.spec);
        let (process, io) = match process::spawn(&spec, shared.index) {
            Ok(pair) => pair,
            Err(err) => {
                log::warn!("{}[{}]: {err}", spec.name, shared.index);
                shared.set_state(InstanceState::Restarting);
                self.send_event(IoEvent::SpawnFailed {
                    index: shared.index,
                    error: err.to_string(),
                });
                if let Some(n) = notify {
                    let _ = n.send(Err(err));
                }
                self.rehome_movable();
                return;
            }
        };
        let process = Arc::new(process);
        let generation = shared.begin_generation(Arc::clone(&process));
        self.last_pid = process.pid();
        shared.info.lock().stderr_tail.clear();
        log::debug!(
            "{}[{}]: spawned pid {} (generation {generation})",
            spec.name,
            shared.index,
            process.pid()
        );
        self.send_event(IoEvent::Spawned {
            index: shared.index,
            generation,
            pid: process.pid(),
        });
        let now = Instant::now();
        let mut out = Vec::new();
        for line in &spec.init {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        let limit = spec.max_response_bytes.max(STARTUP_WINDOW);
        let framer = match spec.effective_readiness() {
            Readiness::Immediate => None,
            Readiness::Text { text, stream } => {
                let rule = match &spec.framing {
                    Framing::Prompt { marker, settle, .. } if *marker == text => Rule::EndsWith {
                        marker: text.into_bytes(),
                        stream,
                        settle: *settle,
                    },
                    _ => Rule::Contains {
                        text: text.into_bytes(),
                        stream,
                    },
                };
                Some(Framer::new(rule, limit, now))
            }
            Readiness::Auto => {
                // Sentinel framing: a sentinel round trip proves the tool reads and answers.
                let nonce = fresh_nonce();
                push_sentinel(&spec.framing, &nonce, &mut out);
                Some(Framer::new(
                    Rule::for_answer(&spec.framing, &nonce),
                    limit,
                    now,
                ))
            }
        };
        let strip = spec
            .strip_ansi
            .then(|| (AnsiStripper::default(), AnsiStripper::default()));
        self.child = Some(Running {
            process,
            io,
            generation,
            phase: Phase::Starting {
                framer,
                deadline: now + spec.startup_timeout,
                began: now,
            },
            out,
            out_pos: 0,
            stderr_line: Vec::new(),
            strip,
            notify,
            retire_after_job: None,
            starting_since: Some(now),
        });
        self.write_pending();
        let ready_now = matches!(
            self.child.as_ref().map(|c| &c.phase),
            Some(Phase::Starting { framer: None, .. })
        );
        if ready_now {
            self.become_ready(now);
        }
    }

    fn become_ready(&mut self, now: Instant) {
        let shared = Arc::clone(&self.cfg.shared);
        let Some(child) = &mut self.child else { return };
        let took = match child.phase {
            Phase::Starting { began, .. } => now.saturating_duration_since(began),
            _ => return,
        };
        child.phase = Phase::Idle;
        child.starting_since = None;
        shared.set_state(InstanceState::Ready);
        if let Some(n) = child.notify.take() {
            let _ = n.send(Ok(()));
        }
        log::debug!(
            "{}[{}]: ready in {took:?} (pid {})",
            shared.tool,
            shared.index,
            child.process.pid()
        );
        let generation = child.generation;
        let retire = child.retire_after_job.take();
        self.send_event(IoEvent::Ready {
            index: shared.index,
            generation,
            took,
        });
        if let Some(cause) = retire {
            self.begin_stop(cause, StopStep::Quit);
        }
    }

    // ----- requests ----------------------------------------------------------------------

    fn start_next_job(&mut self, now: Instant) {
        let Some(child) = &mut self.child else { return };
        if !matches!(child.phase, Phase::Idle) || child.io.stdin.is_none() {
            return;
        }
        let Some(job) = self.queue.pop_front() else {
            return;
        };
        let spec = &self.cfg.spec;
        let nonce = match spec.framing {
            Framing::Sentinel { .. } => fresh_nonce(),
            _ => String::new(),
        };
        child.out.clear();
        child.out_pos = 0;
        child.out.extend_from_slice(&job.input);
        push_sentinel(&spec.framing, &nonce, &mut child.out);
        let framer = Framer::new(
            Rule::for_answer(&spec.framing, &nonce),
            spec.max_response_bytes,
            now,
        );
        self.cfg.shared.stats.on_sent();
        child.phase = Phase::Busy {
            job,
            framer,
            began: now,
        };
        // Write at once: most prompts fit in the pipe and need no extra poll round.
        self.write_pending();
    }

    fn finish_busy(&mut self, now: Instant) {
        let marker_stream = match &self.cfg.spec.framing {
            Framing::Prompt { stream, .. } => *stream,
            _ => Stream::Stdout,
        };
        let other = match marker_stream {
            Stream::Stdout => Stream::Stderr,
            Stream::Stderr => Stream::Stdout,
        };
        // The tool wrote to the other stream before it ended the answer, so that output is
        // already in its pipe: take it now so it lands in this answer, not the next.
        let late = self.read_available(other);
        let Some(child) = &mut self.child else { return };
        let Phase::Busy { job, framer, began } = std::mem::replace(&mut child.phase, Phase::Idle)
        else {
            return;
        };
        let mut collected = framer.into_collected();
        match other {
            Stream::Stdout => collected.stdout.extend_from_slice(&late),
            Stream::Stderr => collected.stderr.extend_from_slice(&late),
        }
        let response = Response {
            text: String::from_utf8_lossy(&collected.stdout).into_owned(),
            bytes: collected.stdout,
            stderr: String::from_utf8_lossy(&collected.stderr).into_owned(),
            instance: self.cfg.shared.index,
            generation: child.generation,
            pid: child.process.pid(),
            elapsed: now.saturating_duration_since(job.submitted),
            service_time: now.saturating_duration_since(began),
            context_lost: false,
        };
        let retire = child.retire_after_job.take().or_else(|| {
            let served = self.cfg.shared.served.load(Ordering::Acquire) + 1;
            self.cfg
                .max_requests
                .filter(|max| served >= *max)
                .map(|_| ExitCause::Retired)
        });
        self.complete(job, Ok(response));
        if let Some(cause) = retire {
            self.begin_stop(cause, StopStep::Quit);
        }
    }

    /// Fails the job in flight with `error` and recycles the process.
    fn abort_busy(&mut self, error: Error, cause: ExitCause) {
        let Some(child) = &mut self.child else { return };
        let Phase::Busy { job, .. } = std::mem::replace(&mut child.phase, Phase::Idle) else {
            return;
        };
        log::warn!("{}[{}]: {error}", self.cfg.spec.name, self.cfg.shared.index);
        self.complete(job, Err(error));
        let first = if cause == ExitCause::Timeout {
            StopStep::Interrupt
        } else {
            StopStep::Term
        };
        self.begin_stop(cause, first);
    }

    // ----- stopping ----------------------------------------------------------------------

    fn begin_stop(&mut self, cause: ExitCause, first: StopStep) {
        let grace = self.cfg.spec.stop_grace;
        let quit = self.cfg.spec.quit_command.clone();
        let now = Instant::now();
        let Some(child) = &mut self.child else { return };
        let orphan = match std::mem::replace(&mut child.phase, Phase::Idle) {
            Phase::Busy { job, .. } => Some(job),
            Phase::Stopping { orphan, .. } => orphan,
            Phase::Starting { .. } | Phase::Idle => None,
        };
        self.cfg.shared.set_state(InstanceState::Stopping);
        let deadline = match first {
            StopStep::Quit => {
                child.out.clear();
                child.out_pos = 0;
                match &quit {
                    Some(line) if child.io.stdin.is_some() => {
                        child.out.extend_from_slice(line.as_bytes());
                        child.out.push(b'\n');
                    }
                    _ => child.io.stdin = None,
                }
                self.stop_method = StopMethod::Quit;
                now + grace
            }
            StopStep::AwaitExit => now + EOF_GRACE.min(grace),
            StopStep::Interrupt => {
                child.process.signal_group(Signal::SIGINT);
                now + grace
            }
            StopStep::Term => {
                child.process.signal_group(Signal::SIGTERM);
                self.stop_method = StopMethod::Terminated;
                now + grace
            }
            StopStep::Kill => {
                child.process.signal_group(Signal::SIGKILL);
                self.stop_method = StopMethod::Killed;
                now + KILL_WAIT
            }
        };
        child.phase = Phase::Stopping {
            cause,
            step: first,
            deadline,
            orphan,
        };
        self.rehome_movable();
        self.write_pending();
    }

    /// Moves a stop sequence to its next, harsher step.
    fn escalate(&mut self, now: Instant) {
        let grace = self.cfg.spec.stop_grace;
        let Some(child) = &mut self.child else { return };
        let Phase::Stopping { step, deadline, .. } = &mut child.phase else {
            return;
        };
        match *step {
            StopStep::Quit | StopStep::AwaitExit | StopStep::Interrupt => {
                child.process.signal_group(Signal::SIGTERM);
                self.stop_method = StopMethod::Terminated;
                *step = StopStep::Term;
                *deadline = now + grace;
            }
            StopStep::Term => {
                log::warn!(
                    "{}[{}]: pid {} ignored SIGTERM for {grace:?}; sending SIGKILL",
                    self.cfg.spec.name,
                    self.cfg.shared.index,
                    child.process.pid()
                );
                child.process.signal_group(Signal::SIGKILL);
                self.stop_method = StopMethod::Killed;
                *step = StopStep::Kill;
                *deadline = now + KILL_WAIT;
            }
            StopStep::Kill => {
                log::error!(
                    "{}[{}]: pid {} survived SIGKILL for {KILL_WAIT:?}; abandoning it",
                    self.cfg.spec.name,
                    self.cfg.shared.index,
                    child.process.pid()
                );
                self.stop_method = StopMethod::Abandoned;
                self.on_exit(None);
            }
        }
    }

    /// The child is gone (reaped, or abandoned with `None`): fail or move what it held.
    fn on_exit(&mut self, exit: Option<ExitInfo>) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.drain_stderr(&mut child);
        let shared = Arc::clone(&self.cfg.shared);
        let pid = child.process.pid();
        let stderr = shared.last_stderr();
        let (mut cause, job) = match std::mem::replace(&mut child.phase, Phase::Idle) {
            Phase::Stopping { cause, orphan, .. } => (cause, orphan),
            Phase::Busy { job, .. } => (ExitCause::Crashed, Some(job)),
            Phase::Starting { .. } | Phase::Idle => (ExitCause::Crashed, None),
        };
        if let Some(began) = child.starting_since {
            // It never became ready.
            if cause == ExitCause::Crashed {
                cause = ExitCause::NotReady;
            }
            if let Some(n) = child.notify.take() {
                let _ = n.send(Err(Error::NotReady {
                    tool: self.cfg.spec.name.clone(),
                    instance: shared.index,
                    waited: began.elapsed(),
                    exit,
                    stderr: stderr.clone(),
                }));
            }
        }
        if let Some(n) = child.notify.take() {
            let _ = n.send(Err(Error::Shutdown { prompt: None }));
        }
        if let Some(job) = job {
            let err = Error::InstanceDied {
                instance: shared.index,
                generation: child.generation,
                pid,
                exit,
                stderr: stderr.clone(),
                prompt: None,
            };
            if job.retries_left > 0 && !job.pinned && self.cfg.hooks.is_some() {
                let mut job = job;
                job.retries_left -= 1;
                shared.stats.on_failure(&err);
                log::info!(
                    "{}[{}]: resending an idempotent prompt after: {err}",
                    self.cfg.spec.name,
                    shared.index
                );
                self.hand_back(job, || Error::Shutdown { prompt: None });
            } else {
                self.reported_failure = true;
                self.complete(job, Err(err));
            }
        }
        shared.end_generation(exit);
        self.last_exit = exit;
        // The monitor logs the exit as an event; this line is for tracing the I/O thread.
        log::debug!(
            "{}[{}]: pid {pid} ended ({}; {})",
            self.cfg.spec.name,
            shared.index,
            exit.map(|e| e.to_string())
                .unwrap_or_else(|| "not reaped".into()),
            cause.as_str()
        );
        shared.set_state(if self.exiting.is_some() {
            InstanceState::Stopped
        } else {
            InstanceState::Restarting
        });
        self.send_event(IoEvent::Exited {
            index: shared.index,
            generation: child.generation,
            pid,
            exit,
            cause,
        });
        self.rehome_movable();
    }

    fn finish_thread(&mut self, reply: Option<Sender<StopOutcome>>) {
        self.deliver_answers();
        self.release_queue(|| Error::Shutdown { prompt: None });
        // Jobs that raced in after the stop.
        while let Ok(job) = self.cfg.jobs.try_recv() {
            self.hand_back(job, || Error::Shutdown { prompt: None });
        }
        self.cfg.shared.set_state(InstanceState::Stopped);
        let outcome = StopOutcome {
            index: self.cfg.shared.index,
            pid: self.last_pid,
            method: if self.last_pid == 0 {
                StopMethod::NotRunning
            } else {
                self.stop_method
            },
            exit: self.last_exit,
        };
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    // ----- polling -----------------------------------------------------------------------

    fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.queue.iter().map(|j| j.deadline).min();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Some(child) = &self.child {
            match &child.phase {
                Phase::Starting {
                    framer, deadline, ..
                } => {
                    consider(Some(*deadline));
                    consider(framer.as_ref().and_then(|f| f.deadline()));
                }
                Phase::Busy { job, framer, .. } => {
                    consider(Some(job.deadline));
                    consider(framer.deadline());
                }
                Phase::Stopping { deadline, .. } => consider(Some(*deadline)),
                Phase::Idle => {}
            }
            if child.io.pidfd.is_none() {
                // No pidfd: look for the exit with waitpid now and then.
                consider(Some(Instant::now() + Duration::from_millis(100)));
            }
        }
        if let Some((deadline, _)) = &self.exiting {
            consider(Some(*deadline));
        }
        next
    }

    fn poll_once(&mut self) {
        let busy = matches!(
            self.child.as_ref().map(|c| &c.phase),
            Some(Phase::Busy { .. })
        );
        self.cfg.shared.stats.busy.store(busy, Ordering::Relaxed);
        self.cfg.doorbell.set_listening(!busy);
        if !busy && !self.cfg.jobs.is_empty() {
            // A job arrived after the last look, and its sender may not have rung.
            return;
        }
        let deadline = self.next_deadline();
        let mut ready: [(Option<Source>, PollFlags); 5] = [(None, PollFlags::empty()); 5];
        {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(5);
            let mut sources: Vec<Source> = Vec::with_capacity(5);
            fds.push(PollFd::new(self.cfg.doorbell.fd(), PollFlags::POLLIN));
            sources.push(Source::Bell);
            if let Some(child) = &self.child {
                if let Some(fd) = &child.io.stdout {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    sources.push(Source::Stdout);
                }
                if let Some(fd) = &child.io.stderr {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    sources.push(Source::Stderr);
                }
                if let Some(fd) = &child.io.stdin {
                    if child.out_pos < child.out.len() {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                        sources.push(Source::Stdin);
                    }
                }
                if let Some(fd) = &child.io.pidfd {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    sources.push(Source::Pid);
                }
            }
            let timeout = match deadline {
                Some(d) => poll_timeout(d, Instant::now()),
                None => nix::poll::PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(0) => return,
                Ok(_) => {}
                Err(Errno::EINTR) => return,
                Err(e) => {
                    log::error!("poll failed: {e}");
                    return;
                }
            }
            for (slot, (fd, source)) in ready.iter_mut().zip(fds.iter().zip(sources)) {
                *slot = (Some(source), fd.revents().unwrap_or(PollFlags::empty()));
            }
        }
        let mut exited = false;
        for (source, flags) in ready {
            let Some(source) = source else { continue };
            if flags.is_empty() {
                continue;
            }
            match source {
                Source::Bell => self.cfg.doorbell.drain(),
                Source::Stdout => self.read_stream(Stream::Stdout),
                Source::Stderr => self.read_stream(Stream::Stderr),
                Source::Stdin => self.write_pending(),
                Source::Pid => exited = true,
            }
        }
        let no_pidfd = self.child.as_ref().is_some_and(|c| c.io.pidfd.is_none());
        if exited || no_pidfd {
            self.check_exit();
        }
    }

    fn check_exit(&mut self) {
        let Some(child) = &self.child else { return };
        if let Some(exit) = child.process.try_reap() {
            // Whatever the child wrote before exiting is still in the pipes.
            self.read_stream(Stream::Stdout);
            self.on_exit(Some(exit));
        }
    }

    fn on_timers(&mut self, now: Instant) {
        self.expire_queued(now);
        if let Some((deadline, _)) = &self.exiting {
            let deadline = *deadline;
            if now >= deadline {
                if let Some(Phase::Busy { .. }) = self.child.as_ref().map(|c| &c.phase) {
                    self.abort_busy(Error::Shutdown { prompt: None }, ExitCause::Shutdown);
                }
            }
        }
        enum Due {
            Nothing,
            Ready,
            NotReady(Duration),
            Answered,
            TimedOut(Duration),
            Escalate,
        }
        let Some(child) = &mut self.child else { return };
        let due = match &mut child.phase {
            Phase::Starting {
                framer,
                deadline,
                began,
            } => {
                if framer
                    .as_mut()
                    .is_some_and(|f| f.tick(now) == Progress::Complete)
                {
                    Due::Ready
                } else if now >= *deadline {
                    Due::NotReady(now.saturating_duration_since(*began))
                } else {
                    Due::Nothing
                }
            }
            Phase::Busy { job, framer, .. } => {
                if framer.tick(now) == Progress::Complete {
                    Due::Answered
                } else if now >= job.deadline {
                    Due::TimedOut(now.saturating_duration_since(job.submitted))
                } else {
                    Due::Nothing
                }
            }
            Phase::Stopping { deadline, .. } if now >= *deadline => Due::Escalate,
            Phase::Stopping { .. } | Phase::Idle => Due::Nothing,
        };
        match due {
            Due::Nothing => {}
            Due::Ready => self.become_ready(now),
            Due::NotReady(waited) => {
                let err = Error::NotReady {
                    tool: self.cfg.spec.name.clone(),
                    instance: self.cfg.shared.index,
                    waited,
                    exit: None,
                    stderr: self.cfg.shared.last_stderr(),
                };
                log::warn!("{err}");
                if let Some(n) = self.child.as_mut().and_then(|c| c.notify.take()) {
                    let _ = n.send(Err(err));
                }
                self.begin_stop(ExitCause::NotReady, StopStep::Term);
            }
            Due::Answered => self.finish_busy(now),
            Due::TimedOut(waited) => {
                let err = Error::Timeout {
                    instance: Some(self.cfg.shared.index),
                    waited,
                    written: true,
                    prompt: None,
                };
                self.abort_busy(err, ExitCause::Timeout);
            }
            Due::Escalate => self.escalate(now),
        }
    }

    // ----- reading and writing -----------------------------------------------------------

    fn read_stream(&mut self, stream: Stream) {
        let mut total = 0;
        loop {
            let Some(child) = &mut self.child else { return };
            let fd = match stream {
                Stream::Stdout => child.io.stdout.as_ref(),
                Stream::Stderr => child.io.stderr.as_ref(),
            };
            let Some(fd) = fd else { return };
            match nix::unistd::read(fd, &mut self.scratch) {
                Ok(0) => {
                    self.on_eof(stream);
                    return;
                }
                Ok(n) => {
                    let was_busy = matches!(
                        self.child.as_ref().map(|c| &c.phase),
                        Some(Phase::Busy { .. })
                    );
                    let chunk = std::mem::take(&mut self.scratch);
                    self.on_output(stream, &chunk[..n]);
                    self.scratch = chunk;
                    total += n;
                    let answered = was_busy
                        && matches!(self.child.as_ref().map(|c| &c.phase), Some(Phase::Idle));
                    // Once an answer is complete, start the next prompt before reading more.
                    if total >= READ_BUDGET || answered {
                        return;
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                // A PTY master reports EIO once the child side is closed.
                Err(Errno::EIO) if child.io.pty => {
                    self.on_eof(stream);
                    return;
                }
                Err(e) => {
                    log::warn!("{}[{}]: read failed: {e}", self.cfg.spec.name, self.index());
                    self.on_eof(stream);
                    return;
                }
            }
        }
    }

    /// Reads what `stream` has available now (up to 64 KiB), without blocking.
    fn read_available(&mut self, stream: Stream) -> Vec<u8> {
        let mut got = Vec::new();
        let Some(child) = &mut self.child else {
            return got;
        };
        let fd = match stream {
            Stream::Stdout => child.io.stdout.as_ref(),
            Stream::Stderr => child.io.stderr.as_ref(),
        };
        let Some(fd) = fd else { return got };
        let mut buf = [0u8; 4096];
        while got.len() < 64 * 1024 {
            match nix::unistd::read(fd, &mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                _ => break,
            }
        }
        if stream == Stream::Stderr && !got.is_empty() {
            let mut line = std::mem::take(&mut child.stderr_line);
            self.push_stderr(&mut line, &got);
            if let Some(child) = &mut self.child {
                child.stderr_line = line;
            }
        }
        got
    }

    fn drain_stderr(&mut self, child: &mut Running) {
        let Some(fd) = child.io.stderr.take() else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match nix::unistd::read(&fd, &mut buf) {
                Ok(n) if n > 0 => {
                    left = left.saturating_sub(n);
                    self.push_stderr(&mut child.stderr_line, &buf[..n]);
                }
                _ => break,
            }
        }
        if !child.stderr_line.is_empty() {
            let line = std::mem::take(&mut child.stderr_line);
            self.push_stderr_line(&line);
        }
    }

    fn on_eof(&mut self, stream: Stream) {
        let Some(child) = &mut self.child else { return };
        match stream {
            Stream::Stderr => child.io.stderr = None,
            Stream::Stdout => {
                child.io.stdout = None;
                if child.io.pty {
                    child.io.stdin = None;
                }
                if !matches!(child.phase, Phase::Stopping { .. }) {
                    log::debug!(
                        "{}[{}]: pid {} closed its output",
                        self.cfg.spec.name,
                        self.cfg.shared.index,
                        child.process.pid()
                    );
                    self.begin_stop(ExitCause::Crashed, StopStep::AwaitExit);
                }
            }
        }
    }

    fn on_output(&mut self, stream: Stream, raw: &[u8]) {
        let now = Instant::now();
        let Some(child) = &mut self.child else { return };
        let mut stripped = Vec::new();
        let bytes = match &mut child.strip {
            Some((out, err)) => {
                let s = if stream == Stream::Stdout { out } else { err };
                s.strip_into(raw, &mut stripped);
                &stripped[..]
            }
            None => raw,
        };
        if stream == Stream::Stderr {
            let mut line = std::mem::take(&mut child.stderr_line);
            self.push_stderr(&mut line, bytes);
            let Some(child) = &mut self.child else { return };
            child.stderr_line = line;
        }
        let Some(child) = &mut self.child else { return };
        let progress = match &mut child.phase {
            Phase::Starting {
                framer: Some(f), ..
            } => {
                let p = f.feed(stream, bytes, now);
                if p == Progress::TooLarge {
                    // Keep only recent startup output; the marker is still ahead.
                    *f = Framer::new(f.rule().clone(), STARTUP_WINDOW, now);
                }
                p
            }
            Phase::Busy { framer, .. } => framer.feed(stream, bytes, now),
            Phase::Idle => {
                log::trace!(
                    "{}[{}]: {} bytes of output outside any answer, discarded",
                    self.cfg.spec.name,
                    self.cfg.shared.index,
                    bytes.len()
                );
                return;
            }
            Phase::Starting { framer: None, .. } | Phase::Stopping { .. } => return,
        };
        let starting = matches!(child.phase, Phase::Starting { .. });
        match (progress, starting) {
            (Progress::Complete, true) => self.become_ready(now),
            (Progress::Complete, false) => self.finish_busy(now),
            (Progress::TooLarge, false) => {
                let err = Error::ResponseTooLarge {
                    instance: self.cfg.shared.index,
                    limit: self.cfg.spec.max_response_bytes,
                };
                self.abort_busy(err, ExitCause::TooLarge);
            }
            _ => {}
        }
    }

    fn push_stderr(&self, line: &mut Vec<u8>, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    if line.len() < MAX_STDERR_LINE {
                        let take = pos.min(MAX_STDERR_LINE - line.len());
                        line.extend_from_slice(&rest[..take]);
                    }
                    let done = std::mem::take(line);
                    self.push_stderr_line(&done);
                    rest = &rest[pos + 1..];
                }
                None => {
                    let take = rest.len().min(MAX_STDERR_LINE.saturating_sub(line.len()));
                    line.extend_from_slice(&rest[..take]);
                    rest = &[];
                }
            }
        }
    }

    fn push_stderr_line(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        log::debug!(
            "{}[{}] stderr: {text}",
            self.cfg.spec.name,
            self.cfg.shared.index
        );
        let cap = self.cfg.spec.stderr_lines;
        if cap == 0 {
            return;
        }
        let mut info = self.cfg.shared.info.lock();
        if info.stderr_tail.len() >= cap {
            info.stderr_tail.pop_front();
        }
        info.stderr_tail.push_back(text.to_string());
    }

    fn write_pending(&mut self) {
        let Some(child) = &mut self.child else { return };
        loop {
            if child.out_pos >= child.out.len() {
                child.out.clear();
                child.out_pos = 0;
                if let Phase::Stopping {
                    step: StopStep::Quit,
                    ..
                } = child.phase
                {
                    // The quit command is out: end of input reinforces it.
                    child.io.stdin = None;
                }
                return;
            }
            let Some(fd) = &child.io.stdin else { return };
            match nix::unistd::write(fd, &child.out[child.out_pos..]) {
                Ok(n) => child.out_pos += n,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // EPIPE: the child stopped reading (it is exiting, or closed stdin).
                    log::debug!(
                        "{}[{}]: write failed: {e}",
                        self.cfg.spec.name,
                        self.cfg.shared.index
                    );
                    child.io.stdin = None;
                    child.out.clear();
                    child.out_pos = 0;
                    if !matches!(child.phase, Phase::Stopping { .. }) {
                        self.begin_stop(ExitCause::Crashed, StopStep::AwaitExit);
                    }
                    return;
                }
            }
        }
    }
}

/// Appends the sentinel command for `nonce` when the framing uses one.
fn push_sentinel(framing: &Framing, nonce: &str, out: &mut Vec<u8>) {
    if let Framing::Sentinel { command } = framing {
        out.extend_from_slice(command.replace("{nonce}", nonce).as_bytes());
        out.push(b'\n');
    }
}
