//! What a cluster knows about each host its instances run on: [`HostState`] (up, suspect,
//! down), the counters behind the per-host metrics, and [`HostStatus`], the snapshot that
//! `health()` and `metrics()` report. Written by the monitor only; read by routers (through
//! each instance's candidate), `health()` and `metrics()`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Where a host stands, as its monitor judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostState {
    /// Reachable: its instances take prompts and restart as usual.
    Up,
    /// An instance's link to it was lost or a launch on it failed; a check (`ssh HOST true`
    /// through its control connection) is running. Its instances take no new prompts and are
    /// not restarted until the check ends.
    Suspect,
    /// A check failed (or failures kept coming): its instances are stopped and take no
    /// prompts; it is checked again on backoff, and its instances restart when a check passes.
    Down,
}

impl HostState {
    /// Every state, in the order of the metrics series.
    pub const ALL: [HostState; 3] = [HostState::Up, HostState::Suspect, HostState::Down];

    /// The state as a lowercase word (`up`, `suspect`, `down`), as used in metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Suspect => "suspect",
            HostState::Down => "down",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            HostState::Up => 0,
            HostState::Suspect => 1,
            HostState::Down => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> HostState {
        match v {
            1 => HostState::Suspect,
            2 => HostState::Down,
            _ => HostState::Up,
        }
    }
}

/// One host at one moment, from [`ClusterManager::health`](crate::ClusterManager::health) and
/// [`ClusterManager::metrics`](crate::ClusterManager::metrics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostStatus {
    /// The host as given (`--host`, [`ClusterBuilder::hosts`](crate::ClusterBuilder::hosts)).
    pub host: String,
    /// Its state.
    pub state: HostState,
    /// The instances placed on it (instance `i` runs on host `i % hosts`).
    pub instances: Vec<usize>,
    /// Time in the current state, in seconds.
    pub state_s: f64,
    /// State changes so far, by the state entered (`up`, `suspect`, `down`).
    pub transitions: BTreeMap<String, u64>,
    /// Failures its instances reported: links lost, launches that failed.
    pub failures: u64,
    /// Checks run, by result (`ok`, `failed`).
    pub checks: BTreeMap<String, u64>,
}

impl HostStatus {
    /// True when the host is up.
    pub fn is_up(&self) -> bool {
        self.state == HostState::Up
    }
}

/// A host's shared state: written by the monitor, read by anyone.
#[derive(Debug)]
pub(crate) struct HostShared {
    pub name: String,
    state: AtomicU8,
    /// When its instances may take prompts again while it is not up (an atomic instant,
    /// see `clock`): the end of the running check, or of the next one on backoff.
    returns_at: AtomicU64,
    since: Mutex<Instant>,
    transitions: [AtomicU64; 3],
    failures: AtomicU64,
    checks_ok: AtomicU64,
    checks_failed: AtomicU64,
}

impl HostShared {
    pub(crate) fn new(name: String) -> Self {
        HostShared {
            name,
            state: AtomicU8::new(HostState::Up.to_u8()),
            returns_at: AtomicU64::new(crate::clock::ATOMIC_NOW),
            since: Mutex::new(Instant::now()),
            transitions: Default::default(),
            failures: AtomicU64::new(0),
            checks_ok: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
        }
    }

    pub(crate) fn state(&self) -> HostState {
        HostState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether its instances may take prompts (the host is up).
    pub(crate) fn is_up(&self) -> bool {
        self.state() == HostState::Up
    }

    /// Records a new state; `returns_at` is when it may be up again (ignored when up).
    pub(crate) fn set_state(&self, state: HostState, returns_at: Option<Instant>, now: Instant) {
        self.set_returns_at(returns_at);
        if self.state() != state {
            *self.since.lock() = now;
            self.transitions[state.to_u8() as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.state.store(state.to_u8(), Ordering::Release);
    }

    pub(crate) fn set_returns_at(&self, at: Option<Instant>) {
        let v = at.map_or(crate::clock::ATOMIC_NEVER, crate::clock::to_atomic);
        self.returns_at.store(v, Ordering::Release);
    }

    /// How long until it may be up again, at `now` (`Some(0)` when up; `None`: unknown).
    pub(crate) fn returns_in(&self, now: Instant) -> Option<Duration> {
        if self.is_up() {
            return Some(Duration::ZERO);
        }
        crate::clock::from_atomic(self.returns_at.load(Ordering::Acquire))
            .map(|at| at.saturating_duration_since(now))
    }

    pub(crate) fn on_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn on_check(&self, ok: bool) {
        let counter = if ok {
            &self.checks_ok
        } else {
            &self.checks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot; `instances` are the indices placed on it.
    pub(crate) fn status(&self, instances: Vec<usize>) -> HostStatus {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HostStatus {
            host: self.name.clone(),
            state: self.state(),
            instances,
            state_s: self.since.lock().elapsed().as_secs_f64(),
            transitions: HostState::ALL
                .iter()
                .map(|s| {
                    (
                        s.as_str().to_string(),
                        load(&self.transitions[s.to_u8() as usize]),
                    )
                })
                .collect(),
            failures: load(&self.failures),
            checks: [
                ("ok".to_string(), load(&self.checks_ok)),
                ("failed".to_string(), load(&self.checks_failed)),
            ]
            .into_iter()
            .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_transitions_are_counted_once() {
        for s in HostState::ALL {
            assert_eq!(HostState::from_u8(s.to_u8()), s);
        }
        let host = HostShared::new("h0".into());
        let now = Instant::now();
        assert_eq!(host.returns_in(now), Some(Duration::ZERO));
        host.set_state(HostState::Suspect, Some(now + Duration::from_secs(3)), now);
        host.set_state(HostState::Suspect, Some(now + Duration::from_secs(3)), now);
        assert_eq!(host.returns_in(now), Some(Duration::from_secs(3)));
        host.set_state(HostState::Down, None, now);
        assert_eq!(host.returns_in(now), None);
        host.on_check(false);
        let status = host.status(vec![1, 3]);
        assert_eq!(status.state, HostState::Down);
        assert_eq!(status.transitions["suspect"], 1);
        assert_eq!(status.transitions["down"], 1);
        assert_eq!(status.transitions["up"], 0);
        assert_eq!(status.checks["failed"], 1);
        assert!(!status.is_up());
    }
}
