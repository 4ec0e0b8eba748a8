//! One supervised instance: the state others may read, the handle that talks to its I/O
//! thread, and the public types describing it ([`InstanceState`], [`InstanceStatus`],
//! [`Response`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use nix::sys::eventfd::{EfdFlags, EventFd};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::breaker::CircuitState;
use crate::error::{Error, Result};
use crate::metrics::InstanceStats;
pub use crate::response::Response;
use crate::state::ExitInfo;
pub use crate::state::{ExitCause, InstanceState};

/// A point-in-time view of one instance, from `status()` and `check_health()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceStatus {
    /// The instance index.
    pub index: usize,
    /// Its state.
    pub state: InstanceState,
    /// Its circuit breaker's state.
    pub circuit: CircuitState,
    /// Whether its process is alive now (checked with `waitpid` by `check_health`).
    pub alive: bool,
    /// The current process's pid (0 when there is none).
    pub pid: i32,
    /// How many processes this instance has started.
    pub generation: u64,
    /// Time since the current process started.
    #[serde(with = "crate::duration::duration_ms", rename = "uptime_ms")]
    pub uptime: Duration,
    /// Prompts queued or being answered.
    pub pending: usize,
    /// Answers completed over the instance's whole life.
    pub answered: u64,
    /// How the previous process ended.
    pub last_exit: Option<ExitInfo>,
    /// Why the instance is failed, when it is.
    pub failure: Option<String>,
    /// The last stderr lines.
    pub last_stderr: Vec<String>,
    /// The directory its processes run in, when the tool has workspaces (set at its first
    /// start).
    pub workspace: Option<std::path::PathBuf>,
    /// Its workspace's branch (git worktrees).
    pub branch: Option<String>,
    /// The host it runs on (`None`: this machine).
    #[serde(default)]
    pub host: Option<String>,
}

impl InstanceStatus {
    /// True when the instance is ready and its process alive.
    pub fn is_healthy(&self) -> bool {
        self.state == InstanceState::Ready && self.alive
    }

    /// True when the instance is restarting or failed.
    pub fn is_down(&self) -> bool {
        matches!(
            self.state,
            InstanceState::Restarting | InstanceState::Failed
        )
    }
}

/// What others may read about an instance; written by its I/O thread and the monitor.
#[derive(Debug)]
pub(crate) struct InstanceShared {
    pub index: usize,
    pub tool: Arc<str>,
    state: AtomicU8,
    circuit: AtomicU8,
    generation: AtomicU64,
    pid: AtomicI32,
    /// Prompts queued or in flight. Changed only through `reserve`, `try_reserve` and
    /// `release` (all here): +1 when a job is placed on the instance, -1 exactly once when the
    /// I/O thread answers, fails or hands it back, or when handing it over fails.
    pending: AtomicUsize,
    /// Answers completed by the current process (for `max_requests`).
    pub served: AtomicU64,
    /// Sessions that moved into this instance from another (shared mode): sessions already
    /// here learn that their process now holds another conversation too.
    pub moved_in: AtomicU64,
    /// Set by the I/O thread while its current answer has run past the stuck threshold:
    /// routers then place nothing new on it. Cleared when the answer ends.
    pub stuck: std::sync::atomic::AtomicBool,
    /// The earliest it may take prompts again while restarting, failed, stopped or with an
    /// open circuit (an atomic instant, see `clock`); written by the monitor before the state
    /// word, so a reader that sees the state sees this too.
    returns_at: AtomicU64,
    pub info: Mutex<InstanceInfo>,
    pub stats: InstanceStats,
    /// The host it runs on (`None`: this machine): while that host is not up, routers see
    /// its circuit open.
    pub host: Option<Arc<crate::host_state::HostShared>>,
}

/// The slower-changing facts about an instance, under its own lock.
#[derive(Debug, Default)]
pub(crate) struct InstanceInfo {
    pub started_at: Option<Instant>,
    pub last_exit: Option<ExitInfo>,
    pub failure: Option<String>,
    pub stderr_tail: VecDeque<String>,
    pub process: Option<Arc<dyn crate::launch::Launched>>,
    /// The workspace's directory and branch, once acquired.
    pub workspace: Option<(std::path::PathBuf, Option<String>)>,
}

impl InstanceShared {
    pub(crate) fn new(index: usize, tool: Arc<str>, record_metrics: bool) -> Self {
        InstanceShared {
            index,
            tool,
            state: AtomicU8::new(InstanceState::Starting.to_u8()),
            circuit: AtomicU8::new(CircuitState::Closed.to_u8()),
            generation: AtomicU64::new(0),
            pid: AtomicI32::new(0),
            pending: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            moved_in: AtomicU64::new(0),
            stuck: std::sync::atomic::AtomicBool::new(false),
            returns_at: AtomicU64::new(crate::clock::ATOMIC_NOW),
            info: Mutex::new(InstanceInfo::default()),
            stats: InstanceStats::new(record_metrics),
            host: None,
        }
    }

    /// The same, placed on `host`.
    pub(crate) fn on_host(mut self, host: Option<Arc<crate::host_state::HostShared>>) -> Self {
        self.host = host;
        self
    }

    /// Its host when that host is not up.
    fn host_not_up(&self) -> Option<&crate::host_state::HostShared> {
        self.host.as_deref().filter(|h| !h.is_up())
    }

    /// Its circuit as routers see it: open while its host is not up.
    fn routed_circuit(&self) -> CircuitState {
        if self.host_not_up().is_some() {
            CircuitState::Open
        } else {
            self.circuit()
        }
    }

    pub(crate) fn state(&self) -> InstanceState {
        InstanceState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, state: InstanceState) {
        self.state.store(state.to_u8(), Ordering::Release);
    }

    /// Records when the instance may take prompts again (`None`: never).
    pub(crate) fn set_returns_at(&self, at: Option<Instant>) {
        let v = at.map_or(crate::clock::ATOMIC_NEVER, crate::clock::to_atomic);
        self.returns_at.store(v, Ordering::Release);
    }

    /// What a prompt that cannot be placed is told about this instance at `now`.
    pub(crate) fn outlook(&self, now: Instant) -> crate::state::InstanceOutlook {
        let state = self.state();
        let circuit_open = self.routed_circuit() == CircuitState::Open;
        let waits = matches!(
            state,
            InstanceState::Restarting | InstanceState::Failed | InstanceState::Stopped
        ) || self.circuit() == CircuitState::Open;
        let mut returns_in = if waits {
            crate::clock::from_atomic(self.returns_at.load(Ordering::Acquire))
                .map(|at| at.saturating_duration_since(now))
        } else {
            Some(Duration::ZERO)
        };
        if let Some(host) = self.host_not_up() {
            // Back no sooner than its host.
            returns_in = returns_in.zip(host.returns_in(now)).map(|(a, b)| a.max(b));
        }
        crate::state::InstanceOutlook {
            index: self.index,
            state,
            circuit_open,
            returns_in,
        }
    }

    pub(crate) fn circuit(&self) -> CircuitState {
        CircuitState::from_u8(self.circuit.load(Ordering::Acquire))
    }

    pub(crate) fn set_circuit(&self, state: CircuitState) {
        self.circuit.store(state.to_u8(), Ordering::Release);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn pid(&self) -> i32 {
        self.pid.load(Ordering::Acquire)
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// A queue slot on this instance for one job (the caller checked it has room).
    pub(crate) fn reserve(self: &Arc<Self>) -> QueueSlot {
        self.pending.fetch_add(1, Ordering::AcqRel);
        QueueSlot(Arc::clone(self))
    }

    /// A queue slot on this instance if it has fewer than `capacity` jobs; `None` if full.
    pub(crate) fn try_reserve(self: &Arc<Self>, capacity: usize) -> Option<QueueSlot> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < capacity).then_some(p + 1)
            })
            .ok()
            .map(|_| QueueSlot(Arc::clone(self)))
    }

    /// Records a new process; returns its generation.
    pub(crate) fn begin_generation(&self, process: Arc<dyn crate::launch::Launched>) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.pid.store(process.pid(), Ordering::Release);
        self.served.store(0, Ordering::Release);
        let mut info = self.info.lock();
        info.started_at = Some(Instant::now());
        info.process = Some(process);
        generation
    }

    /// Records that the current process ended.
    pub(crate) fn end_generation(&self, exit: Option<ExitInfo>) -> Duration {
        self.pid.store(0, Ordering::Release);
        let mut info = self.info.lock();
        info.last_exit = exit.or(info.last_exit);
        info.process = None;
        let uptime = info
            .started_at
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        drop(info);
        self.stats.add_uptime(uptime);
        uptime
    }

    pub(crate) fn last_stderr(&self) -> Vec<String> {
        self.info.lock().stderr_tail.iter().cloned().collect()
    }

    /// How a router sees this instance now.
    pub(crate) fn candidate(&self, capacity: usize) -> crate::routing::Candidate {
        crate::routing::Candidate {
            index: self.index,
            state: self.state(),
            pending: self.pending(),
            capacity,
            circuit: self.routed_circuit(),
            generation: self.generation(),
            stuck: self.stuck.load(Ordering::Acquire),
        }
    }

    /// This instance's metrics now (atomics, and `/proc` for the memory).
    pub(crate) fn metrics(&self, now: Instant) -> crate::metrics::InstanceMetrics {
        use crate::metrics::{InstanceMetrics, LatencySummary, FAILURE_KINDS, RESTART_REASONS};
        let shared = self;
        let stats = &shared.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let histogram = stats.latency.snapshot();
        let status = shared.status(false);
        let in_flight = u64::from(stats.busy.load(Ordering::Relaxed));
        InstanceMetrics {
            index: shared.index,
            state: status.state,
            circuit: status.circuit,
            pid: status.pid,
            generation: status.generation,
            prompts_sent: load(&stats.sent),
            responses: load(&stats.completed),
            failures: FAILURE_KINDS
                .iter()
                .zip(stats.failed.iter())
                .map(|(k, v)| (k.to_string(), load(v)))
                .collect(),
            in_flight,
            queued: (status.pending as u64).saturating_sub(in_flight),
            latency: LatencySummary::of(&histogram),
            histogram,
            responses_last_minute: stats.responses_last_minute(now),
            restarts: RESTART_REASONS
                .iter()
                .zip(stats.restarts.iter())
                .map(|(k, v)| (k.as_str().to_string(), load(v)))
                .collect(),
            uptime_s: status.uptime.as_secs_f64(),
            total_uptime_s: Duration::from_micros(load(&stats.uptime_total_us)).as_secs_f64()
                + status.uptime.as_secs_f64(),
            last_exit: status.last_exit,
            rss_bytes: crate::process::resident_memory_bytes(status.pid, true),
            stray_output_bytes: load(&stats.stray_output),
            usage: stats.usage_totals(),
        }
    }

    /// A status snapshot; with `probe`, liveness is checked with `waitpid` now.
    pub(crate) fn status(&self, probe: bool) -> InstanceStatus {
        let info = self.info.lock();
        let alive = match &info.process {
            Some(p) if probe => p.try_reap().is_none(),
            Some(p) => p.exit().is_none(),
            None => false,
        };
        InstanceStatus {
            index: self.index,
            state: self.state(),
            circuit: self.circuit(),
            alive,
            pid: self.pid(),
            generation: self.generation(),
            uptime: info.started_at.map(|t| t.elapsed()).unwrap_or_default(),
            pending: self.pending(),
            answered: self.stats.completed.load(Ordering::Relaxed),
            last_exit: info.last_exit,
            failure: info.failure.clone(),
            last_stderr: info.stderr_tail.iter().cloned().collect(),
            workspace: info.workspace.as_ref().map(|(path, _)| path.clone()),
            branch: info.workspace.as_ref().and_then(|(_, b)| b.clone()),
            host: self.host.as_ref().map(|h| h.name.clone()),
        }
    }
}

/// One job's place in an instance's `pending` count, given back when dropped: when the job
/// is answered, failed, handed back, or never handed over. Slots are the only way `pending`
/// changes, so it counts exactly the jobs that hold one.
#[derive(Debug)]
pub(crate) struct QueueSlot(Arc<InstanceShared>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One prompt on its way to an answer.
#[derive(Debug)]
pub(crate) struct Job {
    pub prompt: String,
    pub input: Vec<u8>,
    pub submitted: Instant,
    pub deadline: Instant,
    pub reply: crate::reply::Reply,
    /// Addressed to one instance by hand: never moved to another.
    pub pinned: bool,
    /// How many more times it may be resent to another instance after its instance died.
    pub retries_left: u8,
    /// The session key, so a moved prompt is routed by its session again.
    pub session: Option<Arc<str>>,
    /// Until when it may wait for an eligible instance (the submit timeout).
    pub wait_deadline: Instant,
    /// Where the job is now (`usize::MAX` while waiting for an instance), for `Ticket`.
    pub placed: Arc<AtomicUsize>,
    /// The instance that answered the job's session last, if any (to see it move).
    pub session_from: Option<usize>,
    /// The instance's count of sessions moved in, when the job was placed on it.
    pub mixing: u64,
    /// Written again into a restarted process by its I/O thread: no caller, not counted.
    pub replay: bool,
    /// Set by the caller to cancel the job (see `Canceller`).
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Where the answer's text goes as it arrives, when streamed.
    pub stream: Option<Sender<String>>,
    /// How long the answer may take once the prompt is written.
    pub answer_timeout: Option<Duration>,
    /// Its slot in the `pending` count of the instance it is placed on (none while it waits
    /// for an instance, and for replays, which are not counted).
    slot: Option<QueueSlot>,
}

impl Job {
    /// A job for `prompt` (`input` is what the protocol prepared of it) that must end by
    /// `deadline`, answered through `reply`; the one constructor, so every field has a known
    /// default: not moved when `pinned`, no retries, no session, waits for an instance until
    /// its deadline, not streamed, no answer timeout of its own.
    pub(crate) fn new(
        prompt: String,
        input: Vec<u8>,
        now: Instant,
        deadline: Instant,
        reply: crate::reply::Reply,
        pinned: bool,
    ) -> Job {
        Job {
            prompt,
            input,
            submitted: now,
            deadline,
            reply,
            pinned,
            retries_left: 0,
            session: None,
            wait_deadline: deadline,
            placed: Arc::new(AtomicUsize::new(usize::MAX)),
            session_from: None,
            mixing: 0,
            replay: false,
            cancel: Arc::default(),
            stream: None,
            answer_timeout: None,
            slot: None,
        }
    }

    /// With `stream`, gives the job a channel for its answer's text as it arrives; the
    /// receiver goes to the ticket.
    pub(crate) fn stream_to_caller(
        &mut self,
        stream: bool,
    ) -> Option<crossbeam_channel::Receiver<String>> {
        stream.then(|| {
            let (tx, rx) = crossbeam_channel::unbounded();
            self.stream = Some(tx);
            rx
        })
    }

    /// Gives the job's queue slot back, if it holds one.
    pub(crate) fn release_slot(&mut self) {
        self.slot = None;
    }

    /// Sends the result to whoever waits (a caller that gave up is not an error).
    pub(crate) fn finish(self, result: Result<Response>) {
        self.reply.send(result);
    }

    /// Fails the job, handing its prompt back in the error.
    pub(crate) fn fail(self, error: Error) {
        let Job { prompt, reply, .. } = self;
        reply.send(Err(error.with_prompt(prompt)));
    }
}

/// Commands to an instance's I/O thread.
#[derive(Debug)]
pub(crate) enum Control {
    /// Start a new process (ignored if one is running); `notify` hears when it is ready.
    Spawn { notify: Option<Sender<Result<()>>> },
    /// Stop the current process (after the answer in flight, if `drain`), without exiting.
    Recycle { cause: ExitCause, drain: bool },
    /// Some job's cancel flag was set: fail flagged queued jobs, interrupt a flagged answer.
    Cancel,
    /// Stop the process and end the thread; reply once the process is reaped.
    Stop {
        deadline: Instant,
        reply: Option<Sender<StopOutcome>>,
    },
}

/// How an instance ended at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMethod {
    /// It had no process running.
    NotRunning,
    /// It exited after the quit command or end of input.
    Quit,
    /// It exited after SIGTERM.
    Terminated,
    /// It had to be SIGKILLed.
    Killed,
    /// It could not be reaped before the deadline (stuck in the kernel); logged.
    Abandoned,
}

/// One instance's line in a shutdown report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOutcome {
    /// The instance index.
    pub index: usize,
    /// Its last pid (0 if none was running).
    pub pid: i32,
    /// How it was stopped.
    pub method: StopMethod,
    /// Its exit status, when reaped.
    pub exit: Option<ExitInfo>,
}

/// What the I/O thread tells the monitor.
#[derive(Debug)]
pub(crate) enum IoEvent {
    Spawned {
        index: usize,
        generation: u64,
        pid: i32,
    },
    Ready {
        index: usize,
        generation: u64,
        took: Duration,
    },
    SpawnFailed {
        index: usize,
        error: String,
        /// Someone waits for this start and gets the error (a launch, a manual restart):
        /// logged at debug, so the caller's one clear error is not preceded by warnings.
        reported: bool,
    },
    Exited {
        index: usize,
        generation: u64,
        pid: i32,
        exit: Option<ExitInfo>,
        cause: ExitCause,
        /// A prompt was in flight: a failure whatever the exit code.
        answering: bool,
        /// It ran on another host and its link there was lost (see `Launched::link_lost`).
        link_lost: bool,
    },
    /// A request outcome that changes the breaker's input (sent on failures, and on the first
    /// success after a failure).
    Outcome {
        index: usize,
        ok: bool,
        timed_out: bool,
    },
}

/// The doorbell that wakes an I/O thread out of `poll(2)` when a job or command arrives.
///
/// While the thread is answering a prompt it will look at its job channel anyway once the
/// answer is complete, so job senders ring only when it says it is `listening` (idle, or
/// stuck), or when their job's deadline comes before the thread's next wake-up (`wake_by`):
/// that saves a wakeup and two system calls per prompt under load, and still lets the thread
/// fail a queued prompt at its deadline while another is being answered.
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: EventFd,
    listening: std::sync::atomic::AtomicBool,
    /// When the thread will next wake on its own (an atomic instant, see `clock`).
    wake_by: AtomicU64,
}

impl Doorbell {
    pub(crate) fn new() -> Result<Self> {
        EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(|fd| Doorbell {
                fd,
                listening: std::sync::atomic::AtomicBool::new(true),
                wake_by: AtomicU64::new(crate::clock::ATOMIC_NOW),
            })
            .map_err(|e| crate::process::fd_error("cannot create an eventfd", e))
    }

    /// Says whether job senders must ring, and when the thread wakes on its own (`None`:
    /// not before a ring). Followed by a full fence, so a job sent before a sender saw
    /// `false` is visible to the thread's next look at its channel.
    pub(crate) fn set_listening(&self, listening: bool, wake_by: Option<Instant>) {
        let wake_by = wake_by.map_or(crate::clock::ATOMIC_NEVER, crate::clock::to_atomic);
        self.wake_by.store(wake_by, Ordering::SeqCst);
        self.listening.store(listening, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Rings if the thread is listening for jobs, or would otherwise sleep past `deadline`
    /// (call after sending the job).
    pub(crate) fn ring_for_job(&self, deadline: Instant) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.listening.load(Ordering::SeqCst)
            || crate::clock::to_atomic(deadline) < self.wake_by.load(Ordering::SeqCst)
        {
            self.ring();
        }
    }

    pub(crate) fn ring(&self) {
        // EAGAIN means the counter is saturated: the bell is already ringing.
        let _ = self.fd.write(1);
    }

    pub(crate) fn drain(&self) {
        let _ = self.fd.read();
    }

    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// The handle the pool keeps for each instance.
#[derive(Debug)]
pub(crate) struct InstanceHandle {
    pub shared: Arc<InstanceShared>,
    jobs: Sender<Job>,
    control: Sender<Control>,
    doorbell: Arc<Doorbell>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl InstanceHandle {
    pub(crate) fn new(
        shared: Arc<InstanceShared>,
        jobs: Sender<Job>,
        control: Sender<Control>,
        doorbell: Arc<Doorbell>,
        thread: JoinHandle<()>,
    ) -> Self {
        InstanceHandle {
            shared,
            jobs,
            control,
            doorbell,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Hands a job to the I/O thread with the queue slot reserved for it on this instance.
    // The error hands the job itself back (its slot given back), without allocating.
    #[allow(clippy::result_large_err)]
    pub(crate) fn enqueue(&self, mut job: Job, slot: QueueSlot) -> std::result::Result<(), Job> {
        debug_assert!(Arc::ptr_eq(&slot.0, &self.shared));
        job.slot = Some(slot);
        job.placed.store(self.shared.index, Ordering::Release);
        let deadline = job.deadline;
        match self.jobs.send(job) {
            Ok(()) => {
                self.doorbell.ring_for_job(deadline);
                Ok(())
            }
            Err(e) => {
                let mut job = e.into_inner();
                job.release_slot();
                Err(job)
            }
        }
    }

    pub(crate) fn control(&self, command: Control) -> bool {
        let sent = self.control.send(command).is_ok();
        self.doorbell.ring();
        sent
    }

    pub(crate) fn join(&self) {
        if let Some(handle) = self.thread.lock().take() {
            if handle.join().is_err() {
                log::error!("I/O thread of instance {} panicked", self.shared.index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        let now = Instant::now();
        Job::new(
            "p".into(),
            b"p\n".to_vec(),
            now,
            now,
            crate::reply::Reply::none(),
            false,
        )
    }

    #[test]
    fn a_slot_counts_one_pending_job_until_it_is_given_back_or_dropped() {
        let shared = Arc::new(InstanceShared::new(0, Arc::from("t"), false));
        let first = shared.try_reserve(2).expect("room for the first");
        let second = shared.reserve();
        assert_eq!(shared.pending(), 2);
        assert!(shared.try_reserve(2).is_none(), "full at capacity");
        assert_eq!(shared.pending(), 2, "a refused reservation counts nothing");

        let mut held = job();
        held.slot = Some(first);
        held.release_slot();
        assert_eq!(shared.pending(), 1);
        held.release_slot();
        assert_eq!(shared.pending(), 1, "giving back twice gives back once");

        let mut dropped = job();
        dropped.slot = Some(second);
        drop(dropped);
        assert_eq!(
            shared.pending(),
            0,
            "a job dropped anywhere gives its slot back"
        );
    }
}
