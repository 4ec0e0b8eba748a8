//! Sessions: conversations that must stay with the tool process that holds their context.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::instance::Response;

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
