//! [`CircuitBreaker`]: a pure state machine that stops traffic to an instance that keeps
//! failing, and lets one trial through after a cooldown that grows on repeated opening.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Traffic flows.
    Closed,
    /// Traffic is stopped until the cooldown ends.
    Open,
    /// One trial request is admitted; its outcome closes or reopens the circuit.
    HalfOpen,
}

impl CircuitState {
    pub(crate) fn from_u8(v: u8) -> CircuitState {
        match v {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }

    /// The state as a word (`closed`, `open`, `half_open`).
    pub fn as_str(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// Circuit breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit. Defaults to 5.
    pub failure_threshold: u32,
    /// The first cooldown. Defaults to 10 s.
    #[serde(rename = "cooldown_ms", with = "crate::duration::duration_ms")]
    pub cooldown: Duration,
    /// The longest cooldown; each reopening without a close in between doubles it up to
    /// this. Defaults to 300 s.
    #[serde(rename = "max_cooldown_ms", with = "crate::duration::duration_ms")]
    pub max_cooldown: Duration,
}

impl BreakerConfig {
    crate::setters::config_setters! {
        /// Sets [`BreakerConfig::failure_threshold`], the failures in a row that open it.
        failure_threshold: u32;
        /// Sets [`BreakerConfig::cooldown`], the first cooldown.
        cooldown: Duration;
        /// Sets [`BreakerConfig::max_cooldown`], the longest cooldown.
        max_cooldown: Duration;
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// A state change the breaker made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerTransition {
    /// Closed or half-open -> open, for this long.
    Opened {
        /// How long it stays open.
        cooldown: Duration,
    },
    /// Open -> half-open.
    HalfOpened,
    /// Half-open -> closed.
    Closed,
}

/// A circuit breaker for one instance. Pure: every method takes `now`.
///
/// ```
/// use aim::{BreakerConfig, CircuitBreaker, CircuitState};
/// use std::time::{Duration, Instant};
/// let config = BreakerConfig::default().failure_threshold(2);
/// let mut breaker = CircuitBreaker::new(config);
/// let t0 = Instant::now();
/// breaker.on_failure(t0);
/// breaker.on_failure(t0);
/// assert_eq!(breaker.state(), CircuitState::Open);
/// assert!(!breaker.allow(t0));
/// assert!(breaker.allow(t0 + Duration::from_secs(10))); // the one trial
/// breaker.on_success(t0 + Duration::from_secs(11));
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: CircuitState,
    failures: u32,
    openings: u32,
    open_until: Option<Instant>,
    trial_taken: bool,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config,
            state: CircuitState::Closed,
            failures: 0,
            openings: 0,
            open_until: None,
            trial_taken: false,
        }
    }

    /// The state as last changed (call [`CircuitBreaker::poll`] to apply an ended cooldown).
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Consecutive failures counted so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// When an open circuit becomes half-open.
    pub fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    /// Applies time: an open circuit whose cooldown has ended becomes half-open.
    pub fn poll(&mut self, now: Instant) -> Option<BreakerTransition> {
        match (self.state, self.open_until) {
            (CircuitState::Open, Some(until)) if now >= until => {
                self.state = CircuitState::HalfOpen;
                self.open_until = None;
                self.trial_taken = false;
                Some(BreakerTransition::HalfOpened)
            }
            _ => None,
        }
    }

    /// Whether a request may go through now; in half-open state only the first caller gets
    /// `true` until an outcome is recorded.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.poll(now);
        match self.state {
            CircuitState::Closed => true,
            CircuitState::Open => false,
            CircuitState::HalfOpen if self.trial_taken => false,
            CircuitState::HalfOpen => {
                self.trial_taken = true;
                true
            }
        }
    }

    /// Records a success.
    pub fn on_success(&mut self, now: Instant) -> Option<BreakerTransition> {
        self.poll(now);
        self.failures = 0;
        match self.state {
            CircuitState::HalfOpen => {
                self.state = CircuitState::Closed;
                self.openings = 0;
                self.trial_taken = false;
                Some(BreakerTransition::Closed)
            }
            _ => None,
        }
    }

    /// Records a failure.
    pub fn on_failure(&mut self, now: Instant) -> Option<BreakerTransition> {
        self.poll(now);
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            CircuitState::Closed => self.failures >= self.config.failure_threshold.max(1),
            CircuitState::HalfOpen => true,
            CircuitState::Open => false,
        };
        if !open {
            return None;
        }
        let factor = 1u32 << self.openings.min(16);
        let cooldown = self
            .config
            .cooldown
            .saturating_mul(factor)
            .min(self.config.max_cooldown);
        self.openings = self.openings.saturating_add(1);
        self.state = CircuitState::Open;
        self.open_until = Some(crate::clock::after(now, cooldown));
        self.trial_taken = false;
        Some(BreakerTransition::Opened { cooldown })
    }

    /// Closes the breaker and forgets all history (a manual restart).
    pub fn reset(&mut self) {
        *self = CircuitBreaker::new(self.config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn breaker(threshold: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: threshold,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(25),
        })
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let clock = ManualClock::new();
        let mut b = breaker(3);
        assert_eq!(b.on_failure(clock.now()), None);
        assert_eq!(b.on_failure(clock.now()), None);
        assert_eq!(
            b.on_failure(clock.now()),
            Some(BreakerTransition::Opened {
                cooldown: Duration::from_secs(10)
            })
        );
        assert_eq!(b.state(), CircuitState::Open);
        assert!(!b.allow(clock.now()));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let clock = ManualClock::new();
        let mut b = breaker(2);
        b.on_failure(clock.now());
        b.on_success(clock.now());
        assert_eq!(b.on_failure(clock.now()), None);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn half_open_admits_exactly_one_trial() {
        let clock = ManualClock::new();
        let mut b = breaker(1);
        b.on_failure(clock.now());
        clock.advance(Duration::from_secs(9));
        assert_eq!(b.poll(clock.now()), None);
        clock.advance(Duration::from_secs(1));
        assert_eq!(b.poll(clock.now()), Some(BreakerTransition::HalfOpened));
        assert!(b.allow(clock.now()));
        assert!(!b.allow(clock.now()));
    }

    #[test]
    fn trial_success_closes_and_trial_failure_reopens_longer() {
        let clock = ManualClock::new();
        let mut b = breaker(1);
        b.on_failure(clock.now());
        clock.advance(Duration::from_secs(10));
        assert!(b.allow(clock.now()));
        assert_eq!(
            b.on_failure(clock.now()),
            Some(BreakerTransition::Opened {
                cooldown: Duration::from_secs(20)
            })
        );
        clock.advance(Duration::from_secs(20));
        assert!(b.allow(clock.now()));
        // Capped at max_cooldown.
        assert_eq!(
            b.on_failure(clock.now()),
            Some(BreakerTransition::Opened {
                cooldown: Duration::from_secs(25)
            })
        );
        clock.advance(Duration::from_secs(25));
        assert!(b.allow(clock.now()));
        assert_eq!(b.on_success(clock.now()), Some(BreakerTransition::Closed));
        assert_eq!(b.state(), CircuitState::Closed);
        // After closing, the cooldown starts from the beginning again.
        assert_eq!(
            b.on_failure(clock.now()),
            Some(BreakerTransition::Opened {
                cooldown: Duration::from_secs(10)
            })
        );
    }

    #[test]
    fn failures_while_open_do_not_extend_the_cooldown() {
        let clock = ManualClock::new();
        let mut b = breaker(1);
        b.on_failure(clock.now());
        let until = b.open_until();
        clock.advance(Duration::from_secs(3));
        assert_eq!(b.on_failure(clock.now()), None);
        assert_eq!(b.open_until(), until);
    }

    #[test]
    fn absurd_cooldowns_do_not_overflow() {
        let clock = ManualClock::new();
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            cooldown: Duration::MAX,
            max_cooldown: Duration::MAX,
        });
        assert!(b.on_failure(clock.now()).is_some());
        assert!(b.open_until().is_some());
    }

    #[test]
    fn states_round_trip_through_u8() {
        for s in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::HalfOpen,
        ] {
            assert_eq!(CircuitState::from_u8(s.to_u8()), s);
        }
    }
}
