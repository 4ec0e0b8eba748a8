//! [`Request`]: a prompt plus how it should be handled.

use std::sync::Arc;
use std::time::Duration;

/// A prompt and its options. `&str` and `String` convert into a plain request, so
/// `cluster.send("hi")` works; build one to set options:
///
/// ```
/// use aim::Request;
/// use std::time::Duration;
/// let request = Request::new("summarise main.rs")
///     .timeout(Duration::from_secs(120))
///     .idempotent(true);
/// assert_eq!(request.prompt(), "summarise main.rs");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub(crate) prompt: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idempotent: bool,
    pub(crate) session: Option<Arc<str>>,
}

impl Request {
    /// A request for `prompt` with the cluster's defaults.
    pub fn new(prompt: impl Into<String>) -> Self {
        Request {
            prompt: prompt.into(),
            timeout: None,
            idempotent: false,
            session: None,
        }
    }

    /// The whole request (waiting for an instance, queueing, answering) must end within
    /// `timeout`. Defaults to the cluster's request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Marks the prompt safe to send twice: if its instance dies while answering, it is sent
    /// once more to another instance (under the default retry policy). Defaults to false.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// The prompt text.
    pub fn prompt(&self) -> &str {
        &self.prompt
    }
}

impl From<&str> for Request {
    fn from(prompt: &str) -> Self {
        Request::new(prompt)
    }
}

impl From<String> for Request {
    fn from(prompt: String) -> Self {
        Request::new(prompt)
    }
}

impl From<&String> for Request {
    fn from(prompt: &String) -> Self {
        Request::new(prompt.clone())
    }
}
