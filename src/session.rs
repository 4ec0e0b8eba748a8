//! Sessions: conversations that must stay with the tool process that holds their context.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::cluster::ClusterManager;
use crate::error::Result;
use crate::instance::Response;
use crate::request::Request;
use crate::ticket::Ticket;

/// Tracks which process answered a session last, to flag lost context.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionLink {
    last: Arc<Mutex<Option<(usize, u64)>>>,
}

impl SessionLink {
    /// Records who answered; sets `context_lost` when it is not the process that answered
    /// the session before.
    pub(crate) fn observe(&self, mut response: Response) -> Response {
        let here = (response.instance, response.generation);
        let mut last = self.last.lock();
        if let Some(before) = *last {
            if before != here {
                response.context_lost = true;
            }
        }
        *last = Some(here);
        response
    }
}

#[derive(Debug)]
struct SessionState {
    cluster: ClusterManager,
    key: Arc<str>,
    link: SessionLink,
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
        self.state
            .cluster
            .submit_inner(request, true, Some(&self.state.link))
    }
}
