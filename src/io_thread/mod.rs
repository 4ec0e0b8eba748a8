//! The dedicated I/O thread of one instance.
//!
//! It owns the child's stdin, stdout and stderr (or PTY) and its pidfd, and multiplexes them
//! with `poll(2)` together with a doorbell (an eventfd) that others ring after putting a job or
//! a command on its crossbeam channels. Nothing here sleeps: every wait is a `poll` whose
//! timeout is the nearest deadline (an answer's, the startup's, a stop step's, a settle timer).
//!
//! It starts the child itself, through its launcher (`crate::launch`); the guardian process (`crate::guardian`) kills the child's
//! process group if the supervisor dies.

mod cancel;
mod lifecycle;
mod polling;
mod restore;
mod stopping;
mod streams;
mod workspace;

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
use crate::fleet::DispatchHooks;
use crate::instance::{
    Control, Doorbell, ExitCause, InstanceShared, InstanceState, IoEvent, Job, Response,
    StopMethod, StopOutcome,
};
use crate::launch::{ChildIo, Launched, Launcher};
use crate::process::poll_timeout;
use crate::protocol::{Between, Context, Conversation, Protocol, Step};
use crate::spec::{Stream, ToolSpec};
use crate::state::ExitInfo;

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
/// Stderr kept per answer when the protocol does not collect it.
const TURN_STDERR_CAP: usize = 64 * 1024;

/// What an I/O thread needs.
pub(crate) struct IoThreadConfig {
    pub spec: Arc<ToolSpec>,
    /// How the tool's process is started, signalled, watched and reaped.
    pub launcher: Arc<dyn Launcher>,
    /// How prompts are encoded and answers framed and decoded.
    pub protocol: Arc<dyn Protocol>,
    pub shared: Arc<InstanceShared>,
    pub jobs: Receiver<Job>,
    pub control: Receiver<Control>,
    pub doorbell: Arc<Doorbell>,
    pub events: Sender<IoEvent>,
    /// The cluster's dispatcher, if any: where movable jobs go, and whom to wake.
    pub hooks: Option<DispatchHooks>,
    /// Retire the process after this many answers.
    pub max_requests: Option<u64>,
    /// An answer running longer than this marks the instance stuck: movable queued prompts
    /// go back to the dispatcher and routers place nothing new here until it ends.
    pub stuck_after: Duration,
    /// The pool's workspaces, when the spec asks for them.
    pub workspaces: Option<Arc<crate::workspace::Workspaces>>,
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
        deadline: Instant,
        began: Instant,
    },
    Idle,
    Busy {
        job: Job,
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
    process: Arc<dyn Launched>,
    io: ChildIo,
    generation: u64,
    phase: Phase,
    /// The protocol's state for this process.
    conversation: Box<dyn Conversation>,
    /// Stderr of the answer in flight (capped).
    turn_stderr: Vec<u8>,
    /// The text streamed so far for the answer in flight.
    streamed: String,
    /// Whether this process restored its predecessor's conversation.
    restore: crate::state::Restore,
    /// It was started to resume a conversation (the protocol's resume token).
    resumed: bool,
    /// Replayed prompts still to answer, and the first replay failure.
    replay_left: usize,
    replay_failure: Option<String>,
    /// The answer in flight was cancelled: recycle the process if it has not ended by then.
    interrupting: Option<Instant>,
    /// A SIGINT waiting for the spacing after the last one.
    sigint_due: Option<Instant>,
    last_sigint: Option<Instant>,
    out: Vec<u8>,
    out_pos: usize,
    stderr_line: Vec<u8>,
    strip: Option<(AnsiStripper, AnsiStripper)>,
    notify: Option<Sender<Result<()>>>,
    retire_after_job: Option<ExitCause>,
    /// When startup began, until the process is ready.
    starting_since: Option<Instant>,
    /// The stream whose end made this process one that can no longer answer.
    closed: Option<Stream>,
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
    /// When the answer that made this instance stuck began (see `stuck_after`).
    stuck_began: Option<Instant>,
    /// The pipes were drained when the last answer completed, in this loop round: the next
    /// prompt need not drain them again.
    drained_after_answer: bool,
    /// Prompts that succeeded, for replay into a restarted process.
    history: restore::History,
    /// The last process's conversation, for its replacement to resume.
    resume_token: Option<String>,
    /// Why the last attempt to resume failed, for the next answer to say.
    resume_failure: Option<String>,
    /// When the tool was last heard from during the answer in flight (for the stall timeout).
    heard_at: Option<Instant>,
    /// This instance's workspace, once acquired (kept across restarts).
    workspace: Option<crate::workspace::Workspace>,
    /// The workspace's state when the answer in flight began.
    turn_snapshot: Option<crate::workspace::Snapshot>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
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
            stuck_began: None,
            drained_after_answer: false,
            history: restore::History::default(),
            resume_token: None,
            resume_failure: None,
            heard_at: None,
            workspace: None,
            turn_snapshot: None,
        }
    }

    fn index(&self) -> usize {
        self.cfg.shared.index
    }

    pub(crate) fn run(mut self) {
        // A write to a tool that closed its stdin raises SIGPIPE at the writing thread, which
        // kills the process unless the host ignores it (Rust programs do; C hosts may not).
        // Blocked here, it stays pending on this thread and the write fails with EPIPE.
        let _ = nix::sys::signal::SigSet::from(Signal::SIGPIPE).thread_block();
        loop {
            self.take_commands();
            self.take_jobs();
            let now = Instant::now();
            self.expire_queued(now);
            self.start_next_job(now);
            self.drained_after_answer = false;
            self.publish_busy();
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
            Control::Cancel => self.on_cancel(Instant::now()),
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
            let movable = !job.pinned && self.cfg.hooks.is_some();
            if job.cancel.load(Ordering::Acquire) {
                self.complete(
                    job,
                    Err(Error::Cancelled {
                        recycled: false,
                        prompt: None,
                    }),
                );
            } else if self.exiting.is_some() {
                self.hand_back(job, || Error::Shutdown { prompt: None });
            } else if movable && (self.child.is_none() || self.stuck_began.is_some()) {
                // Down, or stuck on a long answer: let another instance answer it.
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
    fn hand_back(&mut self, mut job: Job, error: impl FnOnce() -> Error) {
        if job.replay {
            // Its process is gone; the next one replays the history again.
            return;
        }
        job.release_slot();
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

    /// Publishes whether an answer is in flight (the `in_flight` gauge, before answers are
    /// delivered, so a caller never sees its own answer counted), and ends the stuck mark once
    /// the answer that caused it is over.
    pub(super) fn publish_busy(&mut self) {
        let began = match self.child.as_ref().map(|c| &c.phase) {
            Some(Phase::Busy { began, .. }) => Some(*began),
            _ => None,
        };
        self.cfg
            .shared
            .stats
            .busy
            .store(began.is_some(), Ordering::Relaxed);
        if self.stuck_began.is_some() && self.stuck_began != began {
            self.stuck_began = None;
            self.cfg.shared.stuck.store(false, Ordering::Release);
            self.wake_dispatcher();
        }
    }

    /// The answer in flight since `began` passed the stuck threshold: hand movable queued
    /// prompts to other instances and take no new ones until it ends.
    pub(super) fn mark_stuck(&mut self, began: Instant) {
        self.stuck_began = Some(began);
        self.cfg.shared.stuck.store(true, Ordering::Release);
        log::debug!(
            "{}[{}]: answer running for {:?}; moving queued prompts elsewhere",
            self.cfg.spec.name,
            self.index(),
            self.cfg.stuck_after
        );
        self.rehome_movable();
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
                activity: None,
                instance: Some(self.index()),
                waited: now.saturating_duration_since(job.submitted),
                limit: Some(job.deadline.saturating_duration_since(job.submitted)),
                stage: crate::error::TimeoutStage::Queued,
                prompt: None,
            };
            self.complete(job, Err(err));
        }
    }

    /// Sends a job's result, keeping `pending`, statistics and the breaker's input right.
    fn complete(&mut self, mut job: Job, result: Result<Response>) {
        if job.replay {
            self.replay_done(&result);
            return;
        }
        job.release_slot();
        let shared = &self.cfg.shared;
        self.wake_dispatcher();
        match &result {
            Ok(response) => {
                shared.stats.on_success(response.elapsed);
                shared
                    .stats
                    .on_usage(response.usage, response.cost_usd, response.denials.len());
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
                if let Error::Denied { denials, .. } = err {
                    shared.stats.on_usage(None, None, denials.len());
                }
                // Failures of the instance itself feed the breaker; a caller's deadline passing
                // while the job was still queued does not.
                let counts = match err {
                    Error::Timeout { stage, .. } => matches!(
                        stage,
                        crate::error::TimeoutStage::Answering | crate::error::TimeoutStage::Stalled
                    ),
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
}
