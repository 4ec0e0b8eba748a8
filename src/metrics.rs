//! Per-instance recording. Each instance records into its own atomics (no lock shared by all
//! instances on the hot path); snapshots merge them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;
use crate::histogram::AtomicHistogram;
use crate::instance::ExitCause;

/// The failure kinds counted per instance.
pub const FAILURE_KINDS: [&str; 4] = ["timeout", "died", "rejected", "error"];

/// The restart reasons counted per instance.
pub const RESTART_REASONS: [ExitCause; 9] = [
    ExitCause::Crashed,
    ExitCause::SpawnFailed,
    ExitCause::NotReady,
    ExitCause::Timeout,
    ExitCause::TooLarge,
    ExitCause::ProbeFailed,
    ExitCause::Retired,
    ExitCause::Manual,
    ExitCause::Shutdown,
];

pub(crate) fn failure_kind(error: &Error) -> usize {
    match error {
        Error::Timeout { .. } => 0,
        Error::InstanceDied { .. } => 1,
        Error::Busy { .. }
        | Error::NoHealthyInstance { .. }
        | Error::InstanceUnavailable { .. }
        | Error::Shutdown { .. }
        | Error::InvalidPrompt { .. } => 2,
        _ => 3,
    }
}

/// Counters and a latency histogram for one instance, written by its I/O thread.
#[derive(Debug, Default)]
pub(crate) struct InstanceStats {
    pub sent: AtomicU64,
    pub completed: AtomicU64,
    pub failed: [AtomicU64; FAILURE_KINDS.len()],
    pub restarts: [AtomicU64; RESTART_REASONS.len()],
    pub latency: AtomicHistogram,
    pub uptime_total_us: AtomicU64,
}

impl InstanceStats {
    pub(crate) fn on_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_success(&self, latency: Duration) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.latency.record(latency);
    }

    pub(crate) fn on_failure(&self, error: &Error) {
        self.failed[failure_kind(error)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_restart(&self, cause: ExitCause) {
        if let Some(i) = RESTART_REASONS.iter().position(|c| *c == cause) {
            self.restarts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_uptime(&self, uptime: Duration) {
        let us = u64::try_from(uptime.as_micros()).unwrap_or(u64::MAX);
        self.uptime_total_us.fetch_add(us, Ordering::Relaxed);
    }
}
