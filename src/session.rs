//! Sessions: conversations that must stay with the tool process that holds their context.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::cluster::ClusterManager;
use crate::error::Result;
use crate::request::Request;
use crate::response::Response;
use crate::ticket::Ticket;

/// Tracks which process answered a session last (instance, generation, and the instance's
/// moved-in count then), to say whether its context was kept, restored, lost or mixed.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionLink {
    last: Arc<Mutex<Option<(usize, u64, u64)>>>,
}

impl SessionLink {
    /// The instance that answered the session last.
    pub(crate) fn last_instance(&self) -> Option<usize> {
        self.last.lock().map(|(instance, _, _)| instance)
    }

    /// Records who answered, and sets the response's context flags against the process that
    /// answered the session before.
    pub(crate) fn observe(&self, mut response: Response) -> Response {
        let mut last = self.last.lock();
        match *last {
            Some((instance, generation, mixing))
                if (instance, generation) == (response.instance, response.generation) =>
            {
                response.context_mixed = response.mixing > mixing;
                if response.context_mixed {
                    response.context_note =
                        Some("another session's conversation moved into this process".into());
                }
            }
            Some((instance, _, _)) if instance == response.instance => match &response.restore {
                crate::state::Restore::Restored => {
                    response.context_restored = true;
                    response.context_note = Some(format!(
                        "instance {instance} was restarted and restored the conversation"
                    ));
                }
                crate::state::Restore::Failed(reason) => {
                    response.context_lost = true;
                    response.context_note = Some(format!(
                        "instance {instance} was restarted; restoring failed: {reason}"
                    ));
                }
                crate::state::Restore::None => {
                    response.context_lost = true;
                    response.context_note = Some(format!(
                        "instance {instance} was restarted and this tool's conversation \
                             is not restored (see ToolSpec::replay and the agent protocols)"
                    ));
                }
            },
            Some((instance, _, _)) => {
                response.context_lost = true;
                response.context_note = Some(format!(
                    "the session moved from instance {instance} to instance {}",
                    response.instance
                ));
            }
            None => {}
        }
        *last = Some((response.instance, response.generation, response.mixing));
        response
    }
}

#[derive(Debug)]
struct SessionState {
    cluster: ClusterManager,
    key: Arc<str>,
    link: SessionLink,
    /// The session's prompts that may still be running, for `cancel`.
    outstanding: Mutex<Vec<crate::cancel::Canceller>>,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        self.cluster.inner().dispatch.end_session(&self.key);
    }
}

/// A conversation routed by its key: with [`crate::Strategy::Sticky`] every prompt goes to the
/// same instance, so a tool that keeps context (`/add file.py`, then `/ask ...`) sees the
/// whole conversation. When that instance dies or is recycled the session moves once, and
/// the next [`Response`] has `context_lost` set.
///
/// Cheap to clone; the router forgets the session when the last clone is dropped. Use one
/// `Session` value per conversation (two separate `cluster.session("k")` values share the
/// routing entry, and the first one dropped ends it).
///
/// ```
/// # aim::demo::serve_if_requested();
/// use aim::{launch_cluster, Strategy};
/// let cluster = launch_cluster("demo", 3, Strategy::Sticky)?;
/// let session = cluster.session("alice");
/// let first = session.send("hello")?;
/// let second = session.send("again")?;
/// assert_eq!(first.instance, second.instance);
/// assert!(!second.context_lost);
/// # Ok::<(), aim::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    state: Arc<SessionState>,
}

impl Session {
    pub(crate) fn new(cluster: ClusterManager, key: String) -> Self {
        Session {
            state: Arc::new(SessionState {
                cluster,
                key: key.into(),
                link: SessionLink::default(),
                outstanding: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The session's key.
    pub fn key(&self) -> &str {
        &self.state.key
    }

    crate::request::blocking_sends!("Session");

    /// Submits a prompt in this session and returns at once.
    ///
    /// # Errors
    /// As [`ClusterManager::submit`].
    pub fn submit(&self, request: impl Into<Request>) -> Result<Ticket> {
        let mut request = request.into();
        request.session = Some(Arc::clone(&self.state.key));
        let ticket = self
            .state
            .cluster
            .submit_inner(request, true, Some(&self.state.link))?;
        let mut outstanding = self.state.outstanding.lock();
        outstanding.retain(|c| !c.is_done());
        outstanding.push(ticket.canceller().clone());
        Ok(ticket)
    }

    /// Cancels every prompt of this session that is still waiting or being answered (see
    /// [`Ticket::cancel`]); returns at once. The session stays usable.
    ///
    /// ```
    /// # aim::demo::serve_if_requested();
    /// use aim::{launch_cluster, Error, Strategy};
    /// let cluster = launch_cluster("demo", 1, Strategy::Sticky)?;
    /// let session = cluster.session("alice");
    /// let slow = session.submit("/sleep 5000")?;
    /// let queued = session.submit("then this")?;
    /// session.cancel();
    /// assert!(matches!(slow.wait(), Err(Error::Cancelled { .. })));
    /// assert!(matches!(queued.wait(), Err(Error::Cancelled { .. })));
    /// assert!(session.send("still here")?.text.contains("still here"));
    /// # Ok::<(), aim::Error>(())
    /// ```
    pub fn cancel(&self) {
        let outstanding = std::mem::take(&mut *self.state.outstanding.lock());
        for canceller in outstanding {
            canceller.cancel();
        }
    }
}
