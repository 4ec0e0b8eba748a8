//! Placing prompts on instances.
//!
//! The router lives under one lock with a reusable candidate snapshot. A caller's thread
//! places its own prompt when it can (snapshot, select and reserve a queue slot under the
//! lock; hand the prompt to the instance after releasing it), so one slow instance never
//! delays prompts routed to others and no extra thread hop is paid on the fast path. Prompts
//! that find no eligible instance wait in a bounded backlog owned by the dispatcher thread,
//! which places them when an instance becomes ready or frees a slot, re-places prompts handed
//! back by instances that died or were removed, and fails prompts whose wait is over.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::Mutex;

use crate::error::{Error, TimeoutStage};
use crate::fleet::Fleet;
use crate::instance::{InstanceHandle, Job, QueueSlot};
use crate::metrics::DispatchStats;
use crate::routing::{Candidate, RouteContext, Router};
use crate::state::InstanceOutlook;

struct Routing {
    router: Box<dyn Router>,
    snapshot: Vec<Candidate>,
}

/// What a prompt that cannot be placed needs to know about the instances: whether any is
/// available (merely full or stuck), and when the first unavailable one may be back.
struct Outlook {
    any_available: bool,
    instances: Vec<InstanceOutlook>,
    /// The earliest instant any instance may take prompts again; `None`: never.
    earliest: Option<Instant>,
}

impl Outlook {
    /// The error for `job` if it must fail now: its wait is over, or no instance can be
    /// back before it is (waiting would only delay the same failure).
    fn verdict(&self, job: &Job, now: Instant) -> Option<Error> {
        let limit = job.wait_deadline.min(job.deadline);
        let waited = now.saturating_duration_since(job.submitted);
        let no_healthy = || Error::NoHealthyInstance {
            waited,
            instances: self.instances.clone(),
            prompt: None,
        };
        if now >= limit {
            return Some(if self.any_available {
                Error::Timeout {
                    activity: None,
                    instance: None,
                    waited,
                    limit: Some(limit.saturating_duration_since(job.submitted)),
                    stage: TimeoutStage::Backlog,
                    prompt: None,
                }
            } else {
                no_healthy()
            });
        }
        if self.any_available || self.earliest.is_some_and(|t| t < limit) {
            return None;
        }
        Some(no_healthy())
    }
}

/// Why a prompt could not be placed now.
pub(crate) struct Unplaced {
    pub job: Job,
    /// Some instance was available but full (as opposed to none being available at all).
    pub any_available: bool,
}

pub(crate) struct Dispatch {
    core: Arc<Fleet>,
    routing: Mutex<Routing>,
    /// The router's name, read once: reading it never waits for the routing lock.
    router_name: String,
    backlog: Mutex<VecDeque<Job>>,
    backlog_len: Arc<AtomicUsize>,
    backlog_capacity: usize,
    wake: Sender<()>,
    pub stats: DispatchStats,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("router", &self.routing.lock().router)
            .field("backlog", &self.backlog_len.load(Ordering::Relaxed))
            .finish()
    }
}

impl Dispatch {
    pub(crate) fn new(
        core: Arc<Fleet>,
        router: Box<dyn Router>,
        backlog_len: Arc<AtomicUsize>,
        backlog_capacity: usize,
        wake: Sender<()>,
    ) -> Self {
        Dispatch {
            core,
            router_name: router.name().to_string(),
            routing: Mutex::new(Routing {
                router,
                snapshot: Vec::new(),
            }),
            backlog: Mutex::new(VecDeque::new()),
            backlog_len,
            backlog_capacity,
            wake,
            stats: DispatchStats::default(),
        }
    }

    pub(crate) fn router_name(&self) -> String {
        self.router_name.clone()
    }

    pub(crate) fn end_session(&self, key: &str) {
        self.routing.lock().router.end_session(key);
        // Its instance may be free now for a session waiting in the backlog.
        if self.backlog_len() > 0 {
            let _ = self.wake.try_send(());
        }
    }

    /// What pokes the dispatcher to look at its backlog again.
    pub(crate) fn wake_sender(&self) -> Sender<()> {
        self.wake.clone()
    }

    pub(crate) fn backlog_len(&self) -> usize {
        self.backlog_len.load(Ordering::Acquire)
    }

    /// Selects an instance and reserves a slot on it, under the routing lock; hands the job
    /// over after the lock is released.
    // The error hands the job itself back, without allocating.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_place(&self, job: Job) -> Result<usize, Unplaced> {
        let capacity = self.core.queue_capacity;
        let chosen: Result<(Arc<InstanceHandle>, QueueSlot), bool> = {
            let mut guard = self.routing.lock();
            let routing = &mut *guard;
            // The snapshot is taken under the instance list's lock, the router runs without
            // it (it may read the cluster), and the pick is checked against the list again.
            // Placements are serialised by the routing lock, so no other placement can take
            // the slot meanwhile; answers only free slots.
            let snapshot = &mut routing.snapshot;
            self.core.with_instances(|instances| {
                snapshot.clear();
                snapshot.extend(instances.iter().map(|h| h.shared.candidate(capacity)));
            });
            let context = RouteContext {
                session: job.session.as_deref(),
            };
            let any_available = |snapshot: &[Candidate]| snapshot.iter().any(|c| c.is_available());
            match routing.router.select(&routing.snapshot, &context) {
                Some(i) if routing.snapshot.get(i).is_some_and(|c| c.is_eligible()) => {
                    match self.core.instance(i) {
                        Some(handle) => {
                            let slot = handle.shared.reserve();
                            Ok((handle, slot))
                        }
                        // Removed by a resize since the snapshot.
                        None => Err(any_available(&routing.snapshot)),
                    }
                }
                Some(i) => {
                    log::warn!(
                        "router {} selected instance {i}, which is not eligible; ignored",
                        self.router_name
                    );
                    Err(any_available(&routing.snapshot))
                }
                None => Err(any_available(&routing.snapshot)),
            }
        };
        match chosen {
            Ok((handle, slot)) => {
                let index = handle.shared.index;
                let mut job = job;
                if job.session_from.is_some_and(|from| from != index) {
                    // A session with a conversation elsewhere moves in: the sessions already
                    // here now share their process with it.
                    handle.shared.moved_in.fetch_add(1, Ordering::AcqRel);
                }
                job.mixing = handle.shared.moved_in.load(Ordering::Acquire);
                handle
                    .enqueue(job, slot)
                    .map(|()| index)
                    .map_err(|job| Unplaced {
                        job,
                        any_available: false,
                    })
            }
            Err(any_available) => Err(Unplaced { job, any_available }),
        }
    }

    fn outlook(&self, now: Instant) -> Outlook {
        let capacity = self.core.queue_capacity;
        self.core.with_instances(|all| {
            let instances: Vec<InstanceOutlook> =
                all.iter().map(|h| h.shared.outlook(now)).collect();
            Outlook {
                any_available: all
                    .iter()
                    .any(|h| h.shared.candidate(capacity).is_available()),
                earliest: instances
                    .iter()
                    .filter_map(|o| o.returns_in)
                    .min()
                    .map(|d| crate::clock::after(now, d)),
                instances,
            }
        })
    }

    /// Places `job` now, or (when `wait`) puts it in the backlog.
    pub(crate) fn submit(&self, job: Job, wait: bool) -> Result<(), Error> {
        self.submit_inner(job, wait)
            .inspect_err(|e| self.stats.on_refused(e))
    }

    fn submit_inner(&self, job: Job, wait: bool) -> Result<(), Error> {
        // Prompts already waiting go first: a new one that may wait joins the backlog behind
        // them. One that may not wait (try_submit) takes a free slot if there is one.
        let job = if self.backlog_len() == 0 || !wait {
            match self.try_place(job) {
                Ok(_) => return Ok(()),
                Err(Unplaced { job, any_available }) if !wait => {
                    return Err(if any_available {
                        Error::Busy { prompt: job.prompt }
                    } else {
                        Error::NoHealthyInstance {
                            waited: job.submitted.elapsed(),
                            instances: self.outlook(Instant::now()).instances,
                            prompt: Some(job.prompt),
                        }
                    });
                }
                Err(Unplaced {
                    job,
                    any_available: false,
                }) => {
                    // Fail fast when no instance can be back before the prompt must end.
                    if let Some(error) = self.outlook(Instant::now()).verdict(&job, Instant::now())
                    {
                        return Err(error.with_prompt(job.prompt));
                    }
                    job
                }
                Err(unplaced) => unplaced.job,
            }
        } else {
            job
        };
        {
            let mut backlog = self.backlog.lock();
            if backlog.len() >= self.backlog_capacity {
                return Err(Error::Busy { prompt: job.prompt });
            }
            backlog.push_back(job);
            self.backlog_len.store(backlog.len(), Ordering::Release);
        }
        let _ = self.wake.try_send(());
        Ok(())
    }

    /// Places what it can from the backlog, in order, and fails what has waited too long or
    /// cannot be answered before its deadline (no instance can be back in time).
    fn drain_backlog(&self, now: Instant) {
        let pending: VecDeque<Job> = std::mem::take(&mut *self.backlog.lock());
        if pending.is_empty() {
            return;
        }
        let mut kept = VecDeque::new();
        let mut placeable = true;
        // Looked up once per round, and only when a prompt is expired or unplaceable.
        let mut outlook: Option<Outlook> = None;
        for job in pending {
            if job.cancel.load(Ordering::Acquire) {
                let error = Error::Cancelled {
                    recycled: false,
                    prompt: None,
                };
                self.stats.on_refused(&error);
                job.fail(error);
                continue;
            }
            let expired = now >= job.wait_deadline.min(job.deadline);
            // Once a sessionless prompt finds nothing, later sessionless ones will not either.
            let job = if expired || (!placeable && job.session.is_none()) {
                job
            } else {
                match self.try_place(job) {
                    Ok(_) => continue,
                    Err(unplaced) => {
                        if unplaced.job.session.is_none() {
                            placeable = false;
                        }
                        unplaced.job
                    }
                }
            };
            let verdict = outlook
                .get_or_insert_with(|| self.outlook(now))
                .verdict(&job, now);
            match verdict {
                Some(error) => {
                    self.stats.on_refused(&error);
                    job.fail(error);
                }
                None => kept.push_back(job),
            }
        }
        let mut backlog = self.backlog.lock();
        // Prompts that arrived meanwhile are younger: they go after the kept ones.
        kept.extend(backlog.drain(..));
        *backlog = kept;
        self.backlog_len.store(backlog.len(), Ordering::Release);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.backlog
            .lock()
            .iter()
            .map(|j| j.wait_deadline.min(j.deadline))
            .min()
    }

    /// Takes a prompt handed back by an instance: it was accepted, so it is never refused.
    fn take_back(&self, job: Job) {
        let mut backlog = self.backlog.lock();
        backlog.push_front(job);
        self.backlog_len.store(backlog.len(), Ordering::Release);
    }

    fn fail_all(&self) {
        let jobs: VecDeque<Job> = std::mem::take(&mut *self.backlog.lock());
        self.backlog_len.store(0, Ordering::Release);
        for job in jobs {
            job.fail(Error::Shutdown { prompt: None });
        }
    }

    /// The dispatcher thread's loop.
    pub(crate) fn run(
        self: Arc<Self>,
        handed_back: Receiver<Job>,
        wake: Receiver<()>,
        changes: Receiver<()>,
        stop: Receiver<()>,
    ) {
        loop {
            let wait = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
                .unwrap_or(std::time::Duration::from_secs(3600));
            select! {
                recv(handed_back) -> job => match job {
                    Ok(job) => {
                        self.take_back(job);
                        while let Ok(job) = handed_back.try_recv() {
                            self.take_back(job);
                        }
                    }
                    Err(_) => break,
                },
                recv(wake) -> _ => {}
                recv(changes) -> _ => {}
                recv(stop) -> _ => break,
                default(wait) => {}
            }
            self.drain_backlog(Instant::now());
        }
        // Shutting down: nothing more will be placed.
        while let Ok(job) = handed_back.try_recv() {
            job.fail(Error::Shutdown { prompt: None });
        }
        self.fail_all();
    }
}
