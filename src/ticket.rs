//! [`Ticket`]: the claim on an answer that `submit` returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cancel::Canceller;
use crate::error::{Error, Result};
use crate::reply::Slot;
use crate::response::Response;
use crate::session_link::SessionLink;

/// The text of a streamed answer as it arrives, from [`Ticket::chunks`]: an iterator whose
/// `next` blocks until the next piece, or returns `None` once the answer has ended. `Send`,
/// so another thread can print the pieces while this one waits for the answer.
#[derive(Debug, Clone)]
pub struct Chunks(Option<crossbeam_channel::Receiver<String>>);

impl Iterator for Chunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        self.0.as_ref()?.recv().ok()
    }
}

/// A submitted prompt's future answer. Waiting blocks the calling thread only.
///
/// Every ticket ends: the answer, or an error (timeout, dead instance, shutdown). Dropping a
/// ticket does not cancel the prompt; its answer is discarded.
#[derive(Debug)]
pub struct Ticket {
    slot: Arc<Slot>,
    placed: Arc<AtomicUsize>,
    submitted: Instant,
    session: Option<SessionLink>,
    canceller: Canceller,
    chunks: Option<crossbeam_channel::Receiver<String>>,
}

impl Ticket {
    pub(crate) fn new(
        slot: Arc<Slot>,
        placed: Arc<AtomicUsize>,
        submitted: Instant,
        session: Option<SessionLink>,
        canceller: Canceller,
    ) -> Self {
        Ticket {
            slot,
            placed,
            submitted,
            session,
            canceller,
            chunks: None,
        }
    }

    pub(crate) fn with_chunks(
        mut self,
        chunks: Option<crossbeam_channel::Receiver<String>>,
    ) -> Self {
        self.chunks = chunks;
        self
    }

    /// The answer's text as it arrives, for a prompt sent with
    /// [`Request::stream`](crate::Request::stream): each call to `next` blocks until the next
    /// piece or the end of the answer (then `None`; the answer itself, or its error, comes from
    /// [`Ticket::wait`]). Empty for a prompt that was not streamed. A prompt resent to another
    /// instance after its instance died streams both attempts.
    ///
    /// ```
    /// # aim::demo::serve_if_requested();
    /// use aim::{launch_cluster, Request, Strategy};
    /// let cluster = launch_cluster("demo", 1, Strategy::RoundRobin)?;
    /// let ticket = cluster.submit(Request::new("/lines 3").stream(true))?;
    /// let streamed: String = ticket.chunks().collect();
    /// let answer = ticket.wait()?;
    /// assert_eq!(streamed, answer.text);
    /// # Ok::<(), aim::Error>(())
    /// ```
    pub fn chunks(&self) -> Chunks {
        Chunks(self.chunks.clone())
    }

    /// Cancels the prompt and returns at once; the ticket then ends with
    /// [`Error::Cancelled`] (or with the answer, if it was already complete). A prompt still
    /// waiting is dropped; one being answered is interrupted the tool's way (SIGINT for REPLs
    /// and aider, an interrupt message for claude and codex) and the instance stays in
    /// service, or its process is recycled when the tool has no way to stop, exits on SIGINT
    /// (the built-in `sqlite3` and `bc`) or does not stop within its stop grace (the error's
    /// `recycled` then says so). Cancelling twice does nothing.
    ///
    /// ```
    /// # aim::demo::serve_if_requested();
    /// use aim::{launch_cluster, Error, Strategy};
    /// let cluster = launch_cluster("demo", 1, Strategy::RoundRobin)?;
    /// let ticket = cluster.submit("/sleep 5000")?;
    /// ticket.cancel();
    /// assert!(matches!(ticket.wait(), Err(Error::Cancelled { .. })));
    /// # Ok::<(), aim::Error>(())
    /// ```
    pub fn cancel(&self) {
        self.canceller.cancel();
    }

    pub(crate) fn canceller(&self) -> &Canceller {
        &self.canceller
    }

    /// A handle that cancels this prompt from another thread.
    pub fn cancel_handle(&self) -> crate::cancel::CancelHandle {
        crate::cancel::CancelHandle(self.canceller.clone())
    }

    /// The instance the prompt is queued on or being answered by, or `None` while it waits for
    /// an eligible instance.
    pub fn instance(&self) -> Option<usize> {
        match self.placed.load(Ordering::Acquire) {
            usize::MAX => None,
            i => Some(i),
        }
    }

    /// Blocks until the answer arrives. The prompt's own deadline bounds the wait.
    ///
    /// # Errors
    /// Whatever the request failed with: [`Error::Timeout`], [`Error::InstanceDied`],
    /// [`Error::NoHealthyInstance`], [`Error::Shutdown`], ...
    pub fn wait(self) -> Result<Response> {
        let result = self
            .slot
            .take_until(None)
            .unwrap_or(Err(Error::Shutdown { prompt: None }));
        self.finish(result)
    }

    /// Blocks up to `timeout` for the answer: `None` when it has not arrived yet (the request
    /// goes on, and the ticket can be waited on again), or the request's result, taken out of
    /// the ticket (a later wait gets [`Error::Shutdown`]).
    ///
    /// ```
    /// # aim::demo::serve_if_requested();
    /// use aim::{launch_cluster, Strategy};
    /// use std::time::Duration;
    /// let cluster = launch_cluster("demo", 1, Strategy::RoundRobin)?;
    /// let ticket = cluster.submit("/sleep 200")?;
    /// assert!(ticket.wait_timeout(Duration::from_millis(1)).is_none()); // not yet
    /// assert_eq!(ticket.wait()?.text, "slept\n");
    /// # Ok::<(), aim::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<Response>> {
        self.wait_deadline(crate::clock::after(Instant::now(), timeout))
    }

    /// Blocks until `deadline` for the answer; as [`Ticket::wait_timeout`] otherwise.
    pub fn wait_deadline(&self, deadline: Instant) -> Option<Result<Response>> {
        self.slot
            .take_until(Some(deadline))
            .map(|result| self.finish(result))
    }

    /// How long ago the prompt was submitted.
    pub fn age(&self) -> Duration {
        self.submitted.elapsed()
    }

    /// The answer if it has arrived, without blocking.
    pub fn try_wait(&self) -> Option<Result<Response>> {
        self.slot.try_take().map(|result| self.finish(result))
    }

    fn finish(&self, result: Result<Response>) -> Result<Response> {
        match (&self.session, result) {
            (Some(link), Ok(response)) => Ok(link.observe(response)),
            (_, result) => result,
        }
    }
}
