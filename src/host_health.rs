//! [`HostHealth`]: the pure state machine behind a host's [`HostState`]. It takes `now` on
//! every call, so tests drive it with a `ManualClock`; the monitor runs the checks it asks
//! for and feeds it their results.
//!
//! - **up → suspect**: an instance on the host lost its link or failed to launch there. A
//!   check is due at once.
//! - **suspect → up**: the check passed (the failure was the tool's own).
//! - **suspect → down**: the check failed or passed its deadline, or failures kept coming
//!   (the host's circuit breaker, with the instances' `failure_threshold`, opened).
//! - **down → up**: a check on backoff (the instances' backoff settings: growing delays,
//!   jittered) passed. Failures while down change nothing.

use std::time::{Duration, Instant};

use crate::backoff::{Backoff, BackoffConfig};
use crate::breaker::{BreakerConfig, BreakerTransition, CircuitBreaker};
use crate::host_state::HostState;

/// How long a check of a host may take before it counts as failed.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// One host's health. Pure: every method takes `now`.
#[derive(Debug, Clone)]
pub(crate) struct HostHealth {
    state: HostState,
    backoff: Backoff,
    breaker: CircuitBreaker,
    /// When the next check starts (`None`: none planned).
    next_check: Option<Instant>,
    /// A check runs: when it started and its deadline.
    checking: Option<(Instant, Instant)>,
    check_timeout: Duration,
}

impl HostHealth {
    /// An up host.
    pub(crate) fn new(
        backoff: BackoffConfig,
        breaker: BreakerConfig,
        seed: u64,
        check_timeout: Duration,
    ) -> Self {
        HostHealth {
            state: HostState::Up,
            backoff: Backoff::new(backoff, seed),
            breaker: CircuitBreaker::new(breaker),
            next_check: None,
            checking: None,
            check_timeout,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> HostState {
        self.state
    }

    /// An instance on the host lost its link or could not be launched there. Returns the
    /// new state when it changed.
    pub(crate) fn on_failure(&mut self, now: Instant) -> Option<HostState> {
        let opened = matches!(
            self.breaker.on_failure(now),
            Some(BreakerTransition::Opened { .. })
        );
        match self.state {
            HostState::Down => None,
            _ if opened => Some(self.go_down(now)),
            HostState::Up => {
                self.state = HostState::Suspect;
                if self.checking.is_none() {
                    self.next_check = Some(now);
                }
                Some(HostState::Suspect)
            }
            HostState::Suspect => None,
        }
    }

    /// Whether a check should start now.
    pub(crate) fn check_due(&self, now: Instant) -> bool {
        self.checking.is_none() && self.next_check.is_some_and(|t| now >= t)
    }

    /// A check started at `now`; returns its deadline.
    pub(crate) fn on_check_started(&mut self, now: Instant) -> Instant {
        let deadline = crate::clock::after(now, self.check_timeout);
        self.checking = Some((now, deadline));
        self.next_check = None;
        deadline
    }

    /// The running check's deadline.
    pub(crate) fn check_deadline(&self) -> Option<Instant> {
        self.checking.map(|(_, deadline)| deadline)
    }

    /// A check ended (`ok: false` also when it passed its deadline or could not start).
    /// Returns the new state when it changed.
    pub(crate) fn on_check_result(&mut self, ok: bool, now: Instant) -> Option<HostState> {
        self.checking = None;
        if ok {
            self.breaker.reset();
            self.backoff.reset();
            self.next_check = None;
            let changed = self.state != HostState::Up;
            self.state = HostState::Up;
            return changed.then_some(HostState::Up);
        }
        let _ = self.breaker.on_failure(now);
        if self.state == HostState::Down {
            self.next_check = Some(crate::clock::after(now, self.backoff.next_delay(now)));
            return None;
        }
        Some(self.go_down(now))
    }

    fn go_down(&mut self, now: Instant) -> HostState {
        self.state = HostState::Down;
        if self.checking.is_none() {
            self.next_check = Some(crate::clock::after(now, self.backoff.next_delay(now)));
        }
        HostState::Down
    }

    /// The earliest its instances may take prompts again while it is not up: now when a
    /// check runs (it may pass any moment), else when the next check starts.
    pub(crate) fn returns_at(&self, now: Instant) -> Option<Instant> {
        match self.state {
            HostState::Up => Some(now),
            _ if self.checking.is_some() => Some(now),
            _ => self.next_check,
        }
    }

    /// When the monitor must look at this host next (a check to start or to time out).
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        match (self.next_check, self.check_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Jitter;
    use crate::clock::{Clock, ManualClock};

    fn health(threshold: u32) -> HostHealth {
        HostHealth::new(
            BackoffConfig::default()
                .jitter(Jitter::None)
                .base(Duration::from_millis(500))
                .max(Duration::from_secs(4)),
            BreakerConfig::default().failure_threshold(threshold),
            1,
            Duration::from_secs(10),
        )
    }

    #[test]
    fn a_lost_link_makes_the_host_suspect_until_a_check_passes() {
        let clock = ManualClock::new();
        let mut h = health(5);
        assert_eq!(h.state(), HostState::Up);
        assert!(!h.check_due(clock.now()));
        assert_eq!(h.on_failure(clock.now()), Some(HostState::Suspect));
        assert!(h.check_due(clock.now()));
        let deadline = h.on_check_started(clock.now());
        assert_eq!(deadline, clock.now() + Duration::from_secs(10));
        assert!(!h.check_due(clock.now()));
        // A second instance's link lost meanwhile: still suspect, no second check.
        assert_eq!(h.on_failure(clock.now()), None);
        assert!(!h.check_due(clock.now()));
        assert_eq!(h.returns_at(clock.now()), Some(clock.now()));
        clock.advance(Duration::from_millis(40));
        assert_eq!(h.on_check_result(true, clock.now()), Some(HostState::Up));
        assert_eq!(h.next_timer(), None);
    }

    #[test]
    fn a_failed_check_takes_it_down_and_checks_follow_on_backoff() {
        let clock = ManualClock::new();
        let mut h = health(5);
        h.on_failure(clock.now());
        h.on_check_started(clock.now());
        assert_eq!(h.on_check_result(false, clock.now()), Some(HostState::Down));
        let t0 = clock.now();
        assert_eq!(h.returns_at(t0), Some(t0 + Duration::from_millis(500)));
        // Failures while down change nothing and start no check.
        assert_eq!(h.on_failure(t0), None);
        clock.advance(Duration::from_millis(499));
        assert!(!h.check_due(clock.now()));
        clock.advance(Duration::from_millis(1));
        assert!(h.check_due(clock.now()));
        h.on_check_started(clock.now());
        assert_eq!(h.on_check_result(false, clock.now()), None);
        // The delays grow: 500 ms, then 1 s, up to the cap.
        assert_eq!(
            h.next_timer(),
            Some(clock.now() + Duration::from_millis(1000))
        );
        clock.advance(Duration::from_millis(1000));
        h.on_check_started(clock.now());
        assert_eq!(h.on_check_result(true, clock.now()), Some(HostState::Up));
        // Up again: the next outage starts from the first delay.
        h.on_failure(clock.now());
        h.on_check_started(clock.now());
        h.on_check_result(false, clock.now());
        assert_eq!(
            h.next_timer(),
            Some(clock.now() + Duration::from_millis(500))
        );
    }

    #[test]
    fn failures_in_a_row_open_the_breaker_without_waiting_for_the_check() {
        let clock = ManualClock::new();
        let mut h = health(3);
        assert_eq!(h.on_failure(clock.now()), Some(HostState::Suspect));
        h.on_check_started(clock.now());
        assert_eq!(h.on_failure(clock.now()), None);
        assert_eq!(h.on_failure(clock.now()), Some(HostState::Down));
        // The running check still decides when it ends: it passed, the host is up.
        assert_eq!(h.check_deadline(), Some(clock.now() + CHECK_TIMEOUT));
        assert_eq!(h.on_check_result(true, clock.now()), Some(HostState::Up));
    }

    #[test]
    fn a_check_past_its_deadline_counts_as_failed() {
        let clock = ManualClock::new();
        let mut h = health(5);
        h.on_failure(clock.now());
        let deadline = h.on_check_started(clock.now());
        assert_eq!(h.next_timer(), Some(deadline));
        clock.advance(Duration::from_secs(10));
        // The monitor sees the deadline pass and reports a failed check.
        assert!(clock.now() >= deadline);
        assert_eq!(h.on_check_result(false, clock.now()), Some(HostState::Down));
        assert!(h.check_deadline().is_none());
    }
}
