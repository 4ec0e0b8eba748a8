//! One-shot delivery of an answer to the caller waiting on a [`crate::Ticket`].
//!
//! A caller blocked on its answer parks on a condition variable and is woken exactly once,
//! without the spin-then-yield phase of a channel receive: on a machine with more waiting
//! callers than cores, those yields cost a context switch each. If a job is dropped without
//! an answer (a thread died), the waiter gets [`Error::Shutdown`] instead of hanging.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::response::Response;

#[derive(Debug, Default)]
pub(crate) struct Slot {
    value: Mutex<Option<Result<Response>>>,
    ready: Condvar,
}

impl Slot {
    fn put(&self, result: Result<Response>) {
        let mut value = self.value.lock();
        if value.is_none() {
            *value = Some(result);
            self.ready.notify_all();
        }
    }

    /// Blocks until the answer, or `deadline`; `None` on timeout.
    pub(crate) fn take_until(&self, deadline: Option<Instant>) -> Option<Result<Response>> {
        let mut value = self.value.lock();
        loop {
            if let Some(result) = value.take() {
                return Some(result);
            }
            match deadline {
                Some(d) => {
                    if self.ready.wait_until(&mut value, d).timed_out() {
                        return value.take();
                    }
                }
                None => self.ready.wait(&mut value),
            }
        }
    }

    pub(crate) fn try_take(&self) -> Option<Result<Response>> {
        self.value.lock().take()
    }
}

/// Where a job's answer goes.
#[derive(Debug)]
pub(crate) enum ReplyTo {
    /// A ticket's slot.
    Ticket(Arc<Slot>),
    /// A channel (the monitor's liveness probes share one).
    Channel(Sender<Result<Response>>),
}

/// The sending half; answers at most once, and with [`Error::Shutdown`] if dropped unanswered.
#[derive(Debug)]
pub(crate) struct Reply(Option<ReplyTo>);

impl Reply {
    /// A reply to a new ticket slot.
    pub(crate) fn ticket() -> (Reply, Arc<Slot>) {
        let slot = Arc::new(Slot::default());
        (Reply(Some(ReplyTo::Ticket(Arc::clone(&slot)))), slot)
    }

    /// A reply nobody waits for (a replayed prompt).
    pub(crate) fn none() -> Reply {
        Reply(None)
    }

    /// A reply into `channel`.
    pub(crate) fn channel(channel: Sender<Result<Response>>) -> Reply {
        Reply(Some(ReplyTo::Channel(channel)))
    }

    pub(crate) fn send(mut self, result: Result<Response>) {
        if let Some(to) = self.0.take() {
            deliver(to, result);
        }
    }
}

fn deliver(to: ReplyTo, result: Result<Response>) {
    match to {
        ReplyTo::Ticket(slot) => slot.put(result),
        ReplyTo::Channel(tx) => {
            let _ = tx.send(result);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(to) = self.0.take() {
            deliver(to, Err(Error::Shutdown { prompt: None }));
        }
    }
}
