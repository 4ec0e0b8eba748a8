//! Vocabulary for where an instance and its process are: [`InstanceState`], how a process
//! ended ([`ExitInfo`]) and why it was stopped ([`ExitCause`]), and [`InstanceOutlook`], what a
//! prompt that found no instance is told about each one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitInfo {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
    /// It was reaped by someone else (foreign code called `waitpid(-1)`); the status is lost.
    Unknown,
}

impl ExitInfo {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitInfo::Code(0))
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitInfo::Code(code) => write!(f, "exit code {code}"),
            ExitInfo::Signal(sig) => match nix::sys::signal::Signal::try_from(*sig) {
                Ok(s) => write!(f, "killed by {}", s.as_str()),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            ExitInfo::Unknown => write!(f, "exit status unknown"),
        }
    }
}

/// Why an instance's process is being (or was) stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExitCause {
    /// It exited or closed its output on its own.
    Crashed,
    /// It could not be started.
    SpawnFailed,
    /// It did not become ready in time.
    NotReady,
    /// An answer passed its deadline; its output could no longer be trusted.
    Timeout,
    /// An answer grew past the size cap.
    TooLarge,
    /// The liveness probe failed.
    ProbeFailed,
    /// It reached `max_requests` or `max_lifetime`.
    Retired,
    /// A restart was asked for by hand.
    Manual,
    /// Shutdown or resize.
    Shutdown,
    /// Its output broke the protocol (output where none was expected, a failed handshake).
    Protocol,
    /// Its resident memory passed [`ToolSpec::max_rss_bytes`](crate::ToolSpec::max_rss_bytes)
    /// (recycled when idle, killed at twice the limit).
    Memory,
    /// Its host went down (see [`HostState`](crate::HostState)): stopped, and restarted
    /// when the host is up again.
    HostDown,
}

impl ExitCause {
    /// The cause as a lowercase word, as used in metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExitCause::Crashed => "crashed",
            ExitCause::SpawnFailed => "spawn_failed",
            ExitCause::NotReady => "not_ready",
            ExitCause::Timeout => "timeout",
            ExitCause::TooLarge => "too_large",
            ExitCause::ProbeFailed => "probe_failed",
            ExitCause::Retired => "retired",
            ExitCause::Manual => "manual",
            ExitCause::Shutdown => "shutdown",
            ExitCause::Protocol => "protocol",
            ExitCause::Memory => "memory",
            ExitCause::HostDown => "host_down",
        }
    }

    /// Whether this cause counts as a failure (for the breaker, the budget and backoff).
    pub fn is_failure(&self) -> bool {
        !matches!(
            self,
            ExitCause::Retired
                | ExitCause::Manual
                | ExitCause::Shutdown
                | ExitCause::Memory
                | ExitCause::HostDown
        )
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InstanceState {
    /// Its process is starting and not ready yet.
    Starting,
    /// Ready for prompts (idle or answering).
    Ready,
    /// Its process ended; a restart is scheduled (or being decided).
    Restarting,
    /// Its restart budget is exhausted; it waits for a long cooldown or `restart_instance`.
    Failed,
    /// Its process is being stopped.
    Stopping,
    /// Stopped for good (shutdown, restart policy, or removed by a resize).
    Stopped,
}

impl InstanceState {
    const ALL: [InstanceState; 6] = [
        InstanceState::Starting,
        InstanceState::Ready,
        InstanceState::Restarting,
        InstanceState::Failed,
        InstanceState::Stopping,
        InstanceState::Stopped,
    ];

    pub(crate) fn from_u8(v: u8) -> InstanceState {
        InstanceState::ALL
            .get(v as usize)
            .copied()
            .unwrap_or(InstanceState::Stopped)
    }

    pub(crate) fn to_u8(self) -> u8 {
        InstanceState::ALL
            .iter()
            .position(|s| *s == self)
            .unwrap_or(5) as u8
    }

    /// The state as a lowercase word (`ready`, `failed`), as used in metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Restarting => "restarting",
            InstanceState::Failed => "failed",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
        }
    }

    /// Every state, in a fixed order.
    pub fn all() -> &'static [InstanceState] {
        &Self::ALL
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a process restored the conversation of the process it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Restore {
    /// Nothing to restore (a first process), or no way to.
    #[default]
    None,
    /// Restored.
    Restored,
    /// Tried and failed, with the reason.
    Failed(String),
}

/// Why one instance could not take a prompt, and when it may again: carried by
/// [`Error::NoHealthyInstance`](crate::Error::NoHealthyInstance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceOutlook {
    /// The instance index.
    pub index: usize,
    /// Its state when the prompt gave up.
    pub state: InstanceState,
    /// Whether its circuit breaker was open.
    pub circuit_open: bool,
    /// The earliest it may take prompts again, from then: `Some(ZERO)` for "any moment"
    /// (starting, or restarting now), `None` for never (stopped for good).
    #[serde(with = "crate::duration::opt_duration_ms", rename = "returns_in_ms")]
    pub returns_in: Option<Duration>,
}

impl std::fmt::Display for InstanceOutlook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "instance {} {}", self.index, self.state)?;
        if self.circuit_open {
            f.write_str(" (circuit open)")?;
        }
        match self.returns_in {
            None => f.write_str(", not coming back"),
            Some(d) if d.is_zero() => Ok(()),
            Some(d) => write!(f, ", back in {:.1?}", d),
        }
    }
}
