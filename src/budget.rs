//! [`RestartBudget`]: at most N restarts within a sliding window. Pure: takes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Restart budget settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Restarts allowed within `window`; one more puts the instance in `Failed`. Defaults to 5.
    pub max_restarts: u32,
    /// The sliding window. Defaults to 60 s.
    #[serde(rename = "window_ms", with = "crate::duration::duration_ms")]
    pub window: Duration,
    /// How long a failed instance waits before it is tried again on its own. Defaults to
    /// 10 minutes.
    #[serde(rename = "failed_cooldown_ms", with = "crate::duration::duration_ms")]
    pub failed_cooldown: Duration,
}

impl BudgetConfig {
    crate::setters::config_setters! {
        /// Sets [`BudgetConfig::max_restarts`], the restarts allowed within the window.
        max_restarts: u32;
        /// Sets [`BudgetConfig::window`], the sliding window.
        window: Duration;
        /// Sets [`BudgetConfig::failed_cooldown`], how long a failed instance waits.
        failed_cooldown: Duration;
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            max_restarts: 5,
            window: Duration::from_secs(60),
            failed_cooldown: Duration::from_secs(600),
        }
    }
}

/// Counts restarts in a sliding window.
///
/// ```
/// use aim::{BudgetConfig, RestartBudget};
/// use std::time::Instant;
/// let mut budget = RestartBudget::new(BudgetConfig::default().max_restarts(2));
/// let now = Instant::now();
/// assert!(budget.try_consume(now));
/// assert!(budget.try_consume(now));
/// assert!(!budget.try_consume(now)); // the third restart within the window is refused
/// ```
#[derive(Debug, Clone)]
pub struct RestartBudget {
    config: BudgetConfig,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// A full budget.
    pub fn new(config: BudgetConfig) -> Self {
        RestartBudget {
            config,
            recent: VecDeque::new(),
        }
    }

    /// Takes one restart from the budget at `now`; false when the budget is exhausted.
    pub fn try_consume(&mut self, now: Instant) -> bool {
        while let Some(&first) = self.recent.front() {
            if now.saturating_duration_since(first) >= self.config.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.config.max_restarts as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// Restarts counted in the current window.
    pub fn used(&self) -> usize {
        self.recent.len()
    }

    /// Refills the budget (a manual restart).
    pub fn reset(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn refuses_past_the_limit_and_recovers_as_the_window_slides() {
        let clock = ManualClock::new();
        let mut b = RestartBudget::new(BudgetConfig {
            max_restarts: 3,
            window: Duration::from_secs(10),
            failed_cooldown: Duration::from_secs(60),
        });
        for _ in 0..3 {
            assert!(b.try_consume(clock.now()));
            clock.advance(Duration::from_secs(2));
        }
        assert!(!b.try_consume(clock.now()));
        assert_eq!(b.used(), 3);
        // The first restart (t=0) leaves the window at t=10.
        clock.advance(Duration::from_secs(4));
        assert!(b.try_consume(clock.now()));
        assert!(!b.try_consume(clock.now()));
        b.reset();
        assert!(b.try_consume(clock.now()));
    }

    #[test]
    fn zero_budget_refuses_everything() {
        let clock = ManualClock::new();
        let mut b = RestartBudget::new(BudgetConfig {
            max_restarts: 0,
            ..BudgetConfig::default()
        });
        assert!(!b.try_consume(clock.now()));
    }
}
