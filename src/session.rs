//! Sessions: conversations that must stay with the tool process that holds their context.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::cluster::ClusterManager;
use crate::error::Result;
use crate::request::Request;
use crate::session_link::SessionLink;
use crate::ticket::Ticket;

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
/// the next [`Response`](crate::Response) has `context_lost` set.
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

impl ClusterManager {
    /// A session: its prompts stay on one instance (with [`crate::Strategy::Sticky`]), and a
    /// response says when the session's context was lost, restored or mixed because its
    /// instance died, was recycled or took in another conversation. The session's routing
    /// entry is forgotten when the last clone is dropped.
    pub fn session(&self, key: impl Into<String>) -> Session {
        Session::new(self.clone(), key.into())
    }
}
