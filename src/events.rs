//! Lifecycle [`Event`]s and the [`EventSink`] that receives them.
//!
//! Events are emitted by the monitor thread after it has released every lock, so a sink may
//! call back into the pool or cluster (to read `status()`, say) without deadlocking. A sink
//! must not block for long: it runs on the monitor thread.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::state::ExitCause;
use crate::state::ExitInfo;

/// Something that happened to an instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A process was started.
    Spawned {
        /// The instance index.
        instance: usize,
        /// Its generation (1 for the first process).
        generation: u64,
        /// Its pid.
        pid: i32,
    },
    /// A process became ready.
    Ready {
        /// The instance index.
        instance: usize,
        /// Its generation.
        generation: u64,
        /// How long it took to become ready.
        #[serde(with = "crate::duration::duration_ms", rename = "took_ms")]
        took: Duration,
    },
    /// A process could not be started.
    SpawnFailed {
        /// The instance index.
        instance: usize,
        /// Why.
        error: String,
    },
    /// A process ended.
    Exited {
        /// The instance index.
        instance: usize,
        /// Its generation.
        generation: u64,
        /// Its pid.
        pid: i32,
        /// How it ended (`None` if it could not be reaped).
        exit: Option<ExitInfo>,
        /// Why it ended.
        cause: ExitCause,
    },
    /// A restart is scheduled.
    RestartScheduled {
        /// The instance index.
        instance: usize,
        /// The delay before it.
        #[serde(with = "crate::duration::duration_ms", rename = "delay_ms")]
        delay: Duration,
        /// Restarts in the budget's window, this one included.
        attempt: u32,
        /// Why the previous process ended.
        cause: ExitCause,
    },
    /// The restart budget is exhausted: the instance is `Failed`.
    BudgetExhausted {
        /// The instance index.
        instance: usize,
        /// When it is tried again on its own.
        #[serde(with = "crate::duration::duration_ms", rename = "retry_in_ms")]
        retry_in: Duration,
    },
    /// The circuit breaker opened.
    BreakerOpened {
        /// The instance index.
        instance: usize,
        /// How long it stays open.
        #[serde(with = "crate::duration::duration_ms", rename = "cooldown_ms")]
        cooldown: Duration,
    },
    /// The circuit breaker admits one trial request.
    BreakerHalfOpen {
        /// The instance index.
        instance: usize,
    },
    /// The circuit breaker closed again.
    BreakerClosed {
        /// The instance index.
        instance: usize,
    },
    /// A request passed its deadline while the tool was answering.
    RequestTimedOut {
        /// The instance index.
        instance: usize,
    },
}

impl Event {
    /// The instance the event is about.
    pub fn instance(&self) -> usize {
        match self {
            Event::Spawned { instance, .. }
            | Event::Ready { instance, .. }
            | Event::SpawnFailed { instance, .. }
            | Event::Exited { instance, .. }
            | Event::RestartScheduled { instance, .. }
            | Event::BudgetExhausted { instance, .. }
            | Event::BreakerOpened { instance, .. }
            | Event::BreakerHalfOpen { instance }
            | Event::BreakerClosed { instance }
            | Event::RequestTimedOut { instance } => *instance,
        }
    }

    /// The `log` level this event is logged at.
    pub fn level(&self) -> log::Level {
        match self {
            Event::Spawned { .. } | Event::Ready { .. } => log::Level::Debug,
            Event::Exited { cause, .. } if !cause.is_failure() => log::Level::Debug,
            Event::BreakerHalfOpen { .. } | Event::BreakerClosed { .. } => log::Level::Info,
            Event::RestartScheduled { .. } => log::Level::Info,
            Event::BudgetExhausted { .. } => log::Level::Error,
            _ => log::Level::Warn,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Spawned {
                instance,
                generation,
                pid,
            } => write!(
                f,
                "instance {instance} spawned pid {pid} (generation {generation})"
            ),
            Event::Ready { instance, took, .. } => {
                write!(f, "instance {instance} ready in {took:?}")
            }
            Event::SpawnFailed { instance, error } => {
                write!(f, "instance {instance} failed to start: {error}")
            }
            Event::Exited {
                instance,
                pid,
                exit,
                cause,
                ..
            } => match exit {
                Some(exit) => write!(
                    f,
                    "instance {instance} pid {pid} ended: {exit} ({})",
                    cause.as_str()
                ),
                None => write!(
                    f,
                    "instance {instance} pid {pid} abandoned ({})",
                    cause.as_str()
                ),
            },
            Event::RestartScheduled {
                instance,
                delay,
                attempt,
                cause,
            } => write!(
                f,
                "instance {instance} restarts in {delay:?} (restart {attempt} in window, after {})",
                cause.as_str()
            ),
            Event::BudgetExhausted { instance, retry_in } => write!(
                f,
                "instance {instance} exhausted its restart budget; failed, retried in {retry_in:?}"
            ),
            Event::BreakerOpened { instance, cooldown } => {
                write!(f, "instance {instance} circuit opened for {cooldown:?}")
            }
            Event::BreakerHalfOpen { instance } => {
                write!(f, "instance {instance} circuit half-open")
            }
            Event::BreakerClosed { instance } => write!(f, "instance {instance} circuit closed"),
            Event::RequestTimedOut { instance } => {
                write!(f, "instance {instance} request timed out")
            }
        }
    }
}

/// Receives lifecycle events. Implement it to forward events to your own monitoring.
///
/// ```
/// use aim::{Event, EventSink};
/// use std::sync::Mutex;
///
/// #[derive(Debug, Default)]
/// struct Collect(Mutex<Vec<Event>>);
/// impl EventSink for Collect {
///     fn on_event(&self, event: &Event) {
///         self.0.lock().unwrap().push(event.clone());
///     }
/// }
/// let sink = Collect::default();
/// sink.on_event(&Event::BreakerClosed { instance: 0 });
/// assert_eq!(sink.0.lock().unwrap().len(), 1);
/// ```
pub trait EventSink: Send + Sync + fmt::Debug {
    /// Called on the monitor thread, with no lock held, for every event.
    fn on_event(&self, event: &Event);
}
