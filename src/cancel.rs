//! Cancelling a submitted prompt: the flag its job carries, and whom to tell.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_channel::Sender;

use crate::fleet::Fleet;
use crate::instance::Control;

/// Cancels one submitted prompt from anywhere: a cheap, `Send` handle from
/// [`Ticket::cancel_handle`](crate::Ticket::cancel_handle), for a thread that does not own the
/// ticket (a signal handler thread, a UI). Cancelling twice, or after the answer, does nothing.
///
/// ```
/// # aim::demo::serve_if_requested();
/// use aim::{launch_cluster, Error, Strategy};
/// let cluster = launch_cluster("demo", 1, Strategy::RoundRobin)?;
/// let ticket = cluster.submit("/sleep 5000")?;
/// let handle = ticket.cancel_handle();
/// std::thread::spawn(move || handle.cancel()).join().unwrap();
/// assert!(matches!(ticket.wait(), Err(Error::Cancelled { .. })));
/// # Ok::<(), aim::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CancelHandle(pub(crate) Canceller);

impl CancelHandle {
    /// Cancels the prompt, as [`Ticket::cancel`](crate::Ticket::cancel).
    pub fn cancel(&self) {
        self.0.cancel();
    }
}

/// Cancels one job: sets the flag the job carries, then tells whoever holds the job to look
/// (the dispatcher for the backlog, the instance's I/O thread for its queue or the answer in
/// flight). Cheap to clone; cancelling twice, or after the answer, does nothing.
#[derive(Debug, Clone)]
pub(crate) struct Canceller {
    flag: Arc<AtomicBool>,
    placed: Arc<AtomicUsize>,
    core: Weak<Fleet>,
    dispatcher: Option<Sender<()>>,
}

impl Canceller {
    pub(crate) fn new(
        flag: Arc<AtomicBool>,
        placed: Arc<AtomicUsize>,
        core: Weak<Fleet>,
        dispatcher: Option<Sender<()>>,
    ) -> Self {
        Canceller {
            flag,
            placed,
            core,
            dispatcher,
        }
    }

    pub(crate) fn cancel(&self) {
        if self.flag.swap(true, Ordering::AcqRel) || self.is_done() {
            return;
        }
        // The job may move between the backlog and an instance meanwhile: poke both; each
        // looks at the flag of what it holds.
        if let Some(wake) = &self.dispatcher {
            let _ = wake.try_send(());
        }
        let index = self.placed.load(Ordering::Acquire);
        if index != usize::MAX {
            if let Some(handle) = self.core.upgrade().and_then(|core| core.instance(index)) {
                handle.control(Control::Cancel);
            }
        }
    }

    /// The job is gone (answered or failed): only this side still holds the flag.
    pub(crate) fn is_done(&self) -> bool {
        Arc::strong_count(&self.flag) == 1
    }
}
