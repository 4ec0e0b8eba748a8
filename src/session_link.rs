//! How a session judges its context: which process answered it last, and whether the next
//! answer's process kept, restored, lost or mixed the conversation.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::response::Response;

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
