//! [`Request`]: a prompt plus how it should be handled.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a request must end: a timeout, a deadline, both (the earlier wins), or neither (the
/// cluster's or spec's default timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TimeLimit {
    pub timeout: Option<Duration>,
    pub deadline: Option<Instant>,
}

impl TimeLimit {
    #[cfg(test)]
    pub(crate) fn timeout(timeout: Duration) -> Self {
        TimeLimit {
            timeout: Some(timeout),
            deadline: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn deadline(deadline: Instant) -> Self {
        TimeLimit {
            timeout: None,
            deadline: Some(deadline),
        }
    }

    /// The deadline for a request submitted at `now`; capped so it cannot overflow.
    pub(crate) fn resolve(&self, now: Instant, default: Duration) -> Instant {
        let from_timeout = |t: Duration| crate::clock::after(now, t);
        let latest = crate::clock::after(now, crate::duration::MAX_DURATION);
        match (self.timeout, self.deadline) {
            (None, None) => from_timeout(default),
            (Some(t), None) => from_timeout(t),
            (None, Some(d)) => d.min(latest),
            (Some(t), Some(d)) => from_timeout(t).min(d),
        }
    }
}

/// The blocking family for a type with `submit(Request) -> Result<Ticket>`: `send` (the
/// request's or the default timeout), `send_timeout` and `send_deadline`, all delegating to
/// `submit` and `Ticket::wait`.
macro_rules! blocking_sends {
    ($owner:literal) => {
        #[doc = concat!("Sends a prompt and blocks until its answer, for at most the request timeout.\n\n# Errors\n[`Error::InvalidPrompt`](crate::Error::InvalidPrompt), [`Error::Busy`](crate::Error::Busy) (backlog full), [`Error::NoHealthyInstance`](crate::Error::NoHealthyInstance), [`Error::Timeout`](crate::Error::Timeout), [`Error::InstanceDied`](crate::Error::InstanceDied), [`Error::ResponseTooLarge`](crate::Error::ResponseTooLarge), [`Error::Shutdown`](crate::Error::Shutdown); the prompt is handed back.")]
        pub fn send(&self, request: impl Into<crate::Request>) -> crate::Result<crate::Response> {
            self.submit(request)?.wait()
        }

        #[doc = concat!("As [`", $owner, "::send`], with `timeout` for the whole request.\n\n# Errors\nAs [`", $owner, "::send`].")]
        pub fn send_timeout(
            &self,
            request: impl Into<crate::Request>,
            timeout: std::time::Duration,
        ) -> crate::Result<crate::Response> {
            self.submit(request.into().timeout(timeout))?.wait()
        }

        #[doc = concat!("As [`", $owner, "::send`], ending by `deadline`.\n\n# Errors\nAs [`", $owner, "::send`].")]
        pub fn send_deadline(
            &self,
            request: impl Into<crate::Request>,
            deadline: std::time::Instant,
        ) -> crate::Result<crate::Response> {
            self.submit(request.into().deadline(deadline))?.wait()
        }
    };
}
pub(crate) use blocking_sends;

/// The pinned blocking family for a type with `submit_to(usize, Request) -> Result<Ticket>`:
/// `send_to`, `send_to_timeout` and `send_to_deadline`, all delegating to `submit_to` and
/// `Ticket::wait`.
macro_rules! pinned_sends {
    ($owner:literal) => {
        #[doc = concat!("Sends a prompt to instance `index`, bypassing any router, and blocks until its answer, for at most the request's time limit (else the default request timeout, which also covers time spent queued).\n\n# Errors\nAs [`", $owner, "::submit_to`], plus what the request fails with: [`Error::Timeout`](crate::Error::Timeout) (the instance is then recycled), [`Error::InstanceDied`](crate::Error::InstanceDied), [`Error::ResponseTooLarge`](crate::Error::ResponseTooLarge).")]
        pub fn send_to(
            &self,
            index: usize,
            request: impl Into<crate::Request>,
        ) -> crate::Result<crate::Response> {
            self.submit_to(index, request)?.wait()
        }

        #[doc = concat!("As [`", $owner, "::send_to`], with `timeout` for the whole request.\n\n# Errors\nAs [`", $owner, "::send_to`].")]
        pub fn send_to_timeout(
            &self,
            index: usize,
            request: impl Into<crate::Request>,
            timeout: std::time::Duration,
        ) -> crate::Result<crate::Response> {
            self.submit_to(index, request.into().timeout(timeout))?
                .wait()
        }

        #[doc = concat!("As [`", $owner, "::send_to`], ending by `deadline`.\n\n# Errors\nAs [`", $owner, "::send_to`].")]
        pub fn send_to_deadline(
            &self,
            index: usize,
            request: impl Into<crate::Request>,
            deadline: std::time::Instant,
        ) -> crate::Result<crate::Response> {
            self.submit_to(index, request.into().deadline(deadline))?
                .wait()
        }
    };
}
pub(crate) use pinned_sends;

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
    pub(crate) limit: TimeLimit,
    pub(crate) idempotent: bool,
    pub(crate) session: Option<Arc<str>>,
    pub(crate) stream: bool,
    pub(crate) answer_timeout: Option<Duration>,
}

impl Request {
    /// A request for `prompt` with the cluster's defaults.
    pub fn new(prompt: impl Into<String>) -> Self {
        Request {
            prompt: prompt.into(),
            limit: TimeLimit::default(),
            idempotent: false,
            session: None,
            stream: false,
            answer_timeout: None,
        }
    }

    /// The tool must finish answering within `timeout` of the prompt being written to it
    /// (time spent waiting for an instance does not count; [`Request::timeout`] still bounds
    /// the whole request). Passing it is a [`TimeoutStage::Answering`](crate::TimeoutStage)
    /// timeout, and the instance is recycled. Defaults to none.
    pub fn answer_timeout(mut self, timeout: Duration) -> Self {
        self.answer_timeout = Some(timeout);
        self
    }

    /// Streams the answer as it arrives: [`Ticket::chunks`](crate::Ticket::chunks) yields
    /// the text of each piece of output (the model's text deltas for claude and codex, the
    /// raw stdout otherwise) until the answer ends; the final `Response` is unchanged.
    /// Defaults to false.
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// The whole request (waiting for an instance, queueing, answering) must end within
    /// `timeout`. Defaults to the cluster's request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.limit.timeout = Some(timeout);
        self
    }

    /// The whole request must end by `deadline` (with a timeout too, the earlier wins).
    /// Defaults to none: the timeout alone decides.
    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.limit.deadline = Some(deadline);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_of_timeout_and_deadline_wins() {
        let now = Instant::now();
        let default = Duration::from_secs(60);
        let s = Duration::from_secs;
        assert_eq!(TimeLimit::default().resolve(now, default), now + default);
        assert_eq!(TimeLimit::timeout(s(5)).resolve(now, default), now + s(5));
        // An explicit deadline is not cut short by the default timeout.
        assert_eq!(
            TimeLimit::deadline(now + s(90)).resolve(now, default),
            now + s(90)
        );
        let both = TimeLimit {
            timeout: Some(s(5)),
            deadline: Some(now + s(3)),
        };
        assert_eq!(both.resolve(now, default), now + s(3));
        assert!(TimeLimit::timeout(Duration::MAX).resolve(now, default) > now);
    }
}
