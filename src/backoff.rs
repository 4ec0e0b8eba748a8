//! [`Backoff`]: exponential restart delays with jitter, reset by a long healthy run. Pure: it
//! takes `now` and a seed, so tests are deterministic.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::framing::splitmix64;

/// How the delay is randomised below its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly the ceiling (deterministic; for tests and reasoning).
    None,
    /// Uniform in `[0, ceiling]`: spreads a crowd of restarts the most. The default.
    #[default]
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`: keeps a lower bound.
    Equal,
}

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// The first delay's ceiling. Defaults to 500 ms.
    #[serde(rename = "base_ms", with = "crate::duration::duration_ms")]
    pub base: Duration,
    /// Each further restart multiplies the ceiling by this. Defaults to 2.
    pub factor: f64,
    /// The largest delay. Defaults to 30 s.
    #[serde(rename = "max_ms", with = "crate::duration::duration_ms")]
    pub max: Duration,
    /// How delays are randomised. Defaults to [`Jitter::Full`].
    pub jitter: Jitter,
    /// After this long healthy, the next restart is immediate and the delays start over.
    /// Defaults to 60 s.
    #[serde(rename = "reset_after_ms", with = "crate::duration::duration_ms")]
    pub reset_after: Duration,
}

impl BackoffConfig {
    crate::setters::config_setters! {
        /// Sets [`BackoffConfig::base`], the first delay's ceiling.
        base: Duration;
        /// Sets [`BackoffConfig::factor`], the growth per restart.
        factor: f64;
        /// Sets [`BackoffConfig::max`], the largest delay.
        max: Duration;
        /// Sets [`BackoffConfig::jitter`].
        jitter: Jitter;
        /// Sets [`BackoffConfig::reset_after`], the healthy time after which delays start over.
        reset_after: Duration;
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(500),
            factor: 2.0,
            max: Duration::from_secs(30),
            jitter: Jitter::Full,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// Restart delays for one instance.
///
/// ```
/// use aim::{Backoff, BackoffConfig, Jitter};
/// use std::time::{Duration, Instant};
/// let config = BackoffConfig::default().jitter(Jitter::None);
/// let mut backoff = Backoff::new(config, 7);
/// let now = Instant::now();
/// assert_eq!(backoff.next_delay(now), Duration::from_millis(500));
/// assert_eq!(backoff.next_delay(now), Duration::from_millis(1000));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    healthy_since: Option<Instant>,
    rng: u64,
}

impl Backoff {
    /// A backoff whose jitter is drawn from `seed`.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Backoff {
            config,
            attempt: 0,
            healthy_since: None,
            rng: seed,
        }
    }

    /// How many delays have been handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Records that the instance became healthy (ready) at `now`.
    pub fn note_healthy(&mut self, now: Instant) {
        self.healthy_since = Some(now);
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = self
            .config
            .factor
            .max(1.0)
            .powi(self.attempt.min(64) as i32);
        let secs = (self.config.base.as_secs_f64() * factor).min(self.config.max.as_secs_f64());
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.config.max)
    }

    /// The delay before the next restart, for a failure at `now`.
    pub fn next_delay(&mut self, now: Instant) -> Duration {
        let long_healthy = self
            .healthy_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.config.reset_after);
        self.healthy_since = None;
        if long_healthy {
            self.attempt = 0;
            return Duration::ZERO;
        }
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        self.rng = splitmix64(self.rng);
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let scaled = |d: Duration| Duration::try_from_secs_f64(d.as_secs_f64() * unit).unwrap_or(d);
        match self.config.jitter {
            Jitter::None => ceiling,
            Jitter::Full => scaled(ceiling),
            Jitter::Equal => ceiling / 2 + scaled(ceiling / 2),
        }
    }

    /// Forgets all history.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.healthy_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn config(jitter: Jitter) -> BackoffConfig {
        BackoffConfig {
            base: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(1000),
            jitter,
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let clock = ManualClock::new();
        let mut b = Backoff::new(config(Jitter::None), 1);
        let delays: Vec<u64> = (0..6)
            .map(|_| b.next_delay(clock.now()).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn full_jitter_stays_below_the_ceiling_and_varies() {
        let clock = ManualClock::new();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let mut b = Backoff::new(config(Jitter::Full), seed);
            b.next_delay(clock.now());
            let ceiling = b.ceiling();
            let d = b.next_delay(clock.now());
            assert!(d <= ceiling);
            seen.insert(d);
        }
        assert!(
            seen.len() > 40,
            "jitter should spread delays: {}",
            seen.len()
        );
    }

    #[test]
    fn equal_jitter_keeps_half_the_ceiling() {
        let clock = ManualClock::new();
        let mut b = Backoff::new(config(Jitter::Equal), 3);
        for expected_ceiling in [100u64, 200, 400] {
            let d = b.next_delay(clock.now()).as_millis() as u64;
            assert!(d >= expected_ceiling / 2 && d <= expected_ceiling, "{d}");
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let clock = ManualClock::new();
        let mut a = Backoff::new(config(Jitter::Full), 42);
        let mut b = Backoff::new(config(Jitter::Full), 42);
        for _ in 0..5 {
            assert_eq!(a.next_delay(clock.now()), b.next_delay(clock.now()));
        }
    }

    #[test]
    fn absurd_settings_do_not_panic() {
        let clock = ManualClock::new();
        let mut b = Backoff::new(
            BackoffConfig {
                base: Duration::MAX,
                factor: 1e300,
                max: Duration::MAX,
                jitter: Jitter::Full,
                reset_after: Duration::MAX,
            },
            9,
        );
        // No arithmetic overflows (a panic would fail the test), and full jitter never goes
        // past the ceiling, which saturates at the configured maximum.
        for _ in 0..10_000 {
            let ceiling = b.ceiling();
            assert!(b.next_delay(clock.now()) <= ceiling);
        }
        assert_eq!(b.ceiling(), Duration::MAX);
    }

    #[test]
    fn a_long_healthy_run_makes_the_next_restart_immediate_and_resets() {
        let clock = ManualClock::new();
        let mut b = Backoff::new(config(Jitter::None), 1);
        b.next_delay(clock.now());
        b.next_delay(clock.now());
        b.note_healthy(clock.now());
        clock.advance(Duration::from_secs(59));
        // Not long enough: keeps growing.
        assert_eq!(b.next_delay(clock.now()), Duration::from_millis(400));
        b.note_healthy(clock.now());
        clock.advance(Duration::from_secs(60));
        assert_eq!(b.next_delay(clock.now()), Duration::ZERO);
        assert_eq!(b.next_delay(clock.now()), Duration::from_millis(100));
    }
}
