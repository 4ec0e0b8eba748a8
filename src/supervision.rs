//! How instances are supervised: [`SupervisionConfig`] (poll interval, backoff, restart
//! budget, circuit breaker, retirement, liveness probe) and the builder's one-by-one
//! overrides. Plain data, read by the monitor.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::budget::BudgetConfig;
use crate::error::{Error, Result};

/// A liveness probe: a prompt sent to idle instances now and then, whose answer must contain
/// `expect`. It catches instances that are alive but stuck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LivenessProbe {
    /// The prompt.
    pub prompt: String,
    /// Text the answer must contain.
    pub expect: String,
    /// How often an idle instance is probed.
    #[serde(rename = "interval_ms", with = "crate::duration::duration_ms")]
    pub interval: Duration,
    /// How long the answer may take.
    #[serde(rename = "timeout_ms", with = "crate::duration::duration_ms")]
    pub timeout: Duration,
}

/// How instances are supervised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SupervisionConfig {
    /// How often the monitor polls `waitpid` and checks timers. Defaults to 5 s.
    #[serde(rename = "health_interval_ms", with = "crate::duration::duration_ms")]
    pub health_interval: Duration,
    /// Restart delays.
    pub backoff: BackoffConfig,
    /// The restart budget.
    pub budget: BudgetConfig,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
    /// Replace a process after this many answers (drained first). Defaults to never.
    pub max_requests: Option<u64>,
    /// Replace a process after it has run this long (drained first). Defaults to never.
    #[serde(rename = "max_lifetime_ms", with = "crate::duration::opt_duration_ms")]
    pub max_lifetime: Option<Duration>,
    /// An optional liveness probe. Defaults to none.
    pub probe: Option<LivenessProbe>,
}

/// Supervision settings given one by one on a builder; they win over a whole
/// [`SupervisionConfig`] given with `supervision(...)`, before or after it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SupervisionOverrides {
    pub health_interval: Option<Duration>,
    pub backoff: Option<BackoffConfig>,
    pub budget: Option<BudgetConfig>,
    pub breaker: Option<BreakerConfig>,
    pub max_requests: Option<u64>,
    pub max_lifetime: Option<Duration>,
    pub probe: Option<LivenessProbe>,
}

impl SupervisionOverrides {
    /// `base` with every setting given here.
    pub(crate) fn apply(&self, mut base: SupervisionConfig) -> SupervisionConfig {
        if let Some(v) = self.health_interval {
            base.health_interval = v;
        }
        if let Some(v) = self.backoff {
            base.backoff = v;
        }
        if let Some(v) = self.budget {
            base.budget = v;
        }
        if let Some(v) = self.breaker {
            base.breaker = v;
        }
        if let Some(v) = self.max_requests {
            base.max_requests = Some(v);
        }
        if let Some(v) = self.max_lifetime {
            base.max_lifetime = Some(v);
        }
        if let Some(v) = &self.probe {
            base.probe = Some(v.clone());
        }
        base
    }
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            health_interval: Duration::from_secs(5),
            backoff: BackoffConfig::default(),
            budget: BudgetConfig::default(),
            breaker: BreakerConfig::default(),
            max_requests: None,
            max_lifetime: None,
            probe: None,
        }
    }
}

impl LivenessProbe {
    /// A probe sending `prompt` to each idle instance every 30 s, whose answer must contain
    /// `expect` within 10 s.
    ///
    /// ```
    /// use aim::LivenessProbe;
    /// use std::time::Duration;
    /// let probe = LivenessProbe::new("1 + 1", "2").interval(Duration::from_secs(5));
    /// assert_eq!(probe.timeout, Duration::from_secs(10));
    /// ```
    pub fn new(prompt: impl Into<String>, expect: impl Into<String>) -> Self {
        LivenessProbe {
            prompt: prompt.into(),
            expect: expect.into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }

    crate::setters::config_setters! {
        /// Sets [`LivenessProbe::interval`], how often an idle instance is probed.
        interval: Duration;
        /// Sets [`LivenessProbe::timeout`], how long the answer may take.
        timeout: Duration;
    }
}

impl SupervisionConfig {
    crate::setters::config_setters! {
        /// Sets [`SupervisionConfig::health_interval`], how often the monitor polls.
        health_interval: Duration;
        /// Sets [`SupervisionConfig::backoff`].
        backoff: BackoffConfig;
        /// Sets [`SupervisionConfig::budget`].
        budget: BudgetConfig;
        /// Sets [`SupervisionConfig::breaker`].
        breaker: BreakerConfig;
        /// Sets [`SupervisionConfig::max_requests`] (`None`: never replaced for that).
        max_requests: Option<u64>;
        /// Sets [`SupervisionConfig::max_lifetime`] (`None`: never replaced for that).
        max_lifetime: Option<Duration>;
        /// Sets [`SupervisionConfig::probe`].
        probe: Option<LivenessProbe>;
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        use crate::spec::check_duration;
        check_duration("health_interval_ms", self.health_interval, true)?;
        check_duration("backoff.base_ms", self.backoff.base, false)?;
        check_duration("backoff.max_ms", self.backoff.max, false)?;
        check_duration("backoff.reset_after_ms", self.backoff.reset_after, false)?;
        check_duration("budget.window_ms", self.budget.window, true)?;
        check_duration(
            "budget.failed_cooldown_ms",
            self.budget.failed_cooldown,
            false,
        )?;
        check_duration("breaker.cooldown_ms", self.breaker.cooldown, true)?;
        check_duration("breaker.max_cooldown_ms", self.breaker.max_cooldown, true)?;
        if let Some(lifetime) = self.max_lifetime {
            check_duration("max_lifetime_ms", lifetime, true)?;
        }
        if !(self.backoff.factor >= 1.0 && self.backoff.factor.is_finite()) {
            return Err(Error::config(
                "backoff.factor",
                "must be a finite number >= 1",
            ));
        }
        if self.backoff.max < self.backoff.base {
            return Err(Error::config(
                "backoff.max_ms",
                "must be at least backoff.base_ms",
            ));
        }
        if self.budget.window.is_zero() {
            return Err(Error::config("budget.window_ms", "must be positive"));
        }
        if self.breaker.cooldown.is_zero() || self.breaker.max_cooldown < self.breaker.cooldown {
            return Err(Error::config(
                "breaker.cooldown_ms",
                "must be positive and at most breaker.max_cooldown_ms",
            ));
        }
        if self.max_requests == Some(0) {
            return Err(Error::config("max_requests", "must be positive"));
        }
        if let Some(probe) = &self.probe {
            check_duration("probe.interval_ms", probe.interval, true)?;
            check_duration("probe.timeout_ms", probe.timeout, true)?;
            if probe.prompt.trim().is_empty() {
                return Err(Error::config("probe.prompt", "must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Jitter;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    // The expected value is built field by field on purpose: that is what the setters replace.
    #[allow(clippy::field_reassign_with_default)]
    fn each_setter_sets_its_own_field_and_nothing_else() {
        let config = SupervisionConfig::default()
            .health_interval(ms(1))
            .backoff(
                BackoffConfig::default()
                    .base(ms(2))
                    .factor(3.0)
                    .max(ms(4))
                    .jitter(Jitter::None)
                    .reset_after(ms(5)),
            )
            .budget(
                BudgetConfig::default()
                    .max_restarts(6)
                    .window(ms(7))
                    .failed_cooldown(ms(8)),
            )
            .breaker(
                BreakerConfig::default()
                    .failure_threshold(9)
                    .cooldown(ms(10))
                    .max_cooldown(ms(11)),
            )
            .max_requests(Some(12))
            .max_lifetime(Some(ms(13)))
            .probe(Some(
                LivenessProbe::new("p", "e")
                    .interval(ms(14))
                    .timeout(ms(15)),
            ));
        let mut expected = SupervisionConfig::default();
        expected.health_interval = ms(1);
        expected.backoff.base = ms(2);
        expected.backoff.factor = 3.0;
        expected.backoff.max = ms(4);
        expected.backoff.jitter = Jitter::None;
        expected.backoff.reset_after = ms(5);
        expected.budget.max_restarts = 6;
        expected.budget.window = ms(7);
        expected.budget.failed_cooldown = ms(8);
        expected.breaker.failure_threshold = 9;
        expected.breaker.cooldown = ms(10);
        expected.breaker.max_cooldown = ms(11);
        expected.max_requests = Some(12);
        expected.max_lifetime = Some(ms(13));
        let mut probe = LivenessProbe::new("p", "e");
        probe.interval = ms(14);
        probe.timeout = ms(15);
        expected.probe = Some(probe);
        assert_eq!(config, expected);
        assert_ne!(config, SupervisionConfig::default());
    }
}
