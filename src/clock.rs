//! Time as a dependency: [`Clock`], the real [`SystemClock`], and a [`ManualClock`] for tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A source of monotonic time. Pure state machines take `now` as an argument; code that needs
/// to read the time takes a `Clock` so tests can drive it by hand.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// `now + d`, with `d` capped at [`crate::MAX_DURATION`] so the sum cannot overflow.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    let d = d.min(crate::duration::MAX_DURATION);
    now.checked_add(d).unwrap_or(now)
}

/// An instant stored in an `AtomicU64`: nanoseconds since a process-wide origin, plus one, so
/// that [`ATOMIC_NOW`] (0) can mean "any moment" and [`ATOMIC_NEVER`] never.
pub(crate) fn to_atomic(t: Instant) -> u64 {
    let since = t.saturating_duration_since(origin());
    u64::try_from(since.as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
        .min(u64::MAX - 1)
}

/// The instant stored by [`to_atomic`]; `None` for [`ATOMIC_NEVER`].
pub(crate) fn from_atomic(v: u64) -> Option<Instant> {
    match v {
        ATOMIC_NEVER => None,
        ATOMIC_NOW => Some(origin()),
        v => Some(after(origin(), Duration::from_nanos(v - 1))),
    }
}

/// "Any moment" in an atomic instant: earlier than every real instant.
pub(crate) const ATOMIC_NOW: u64 = 0;
/// "Never" in an atomic instant.
pub(crate) const ATOMIC_NEVER: u64 = u64::MAX;

fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to; clones share the same time.
///
/// ```
/// use aim::clock::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - t0, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Instant>>,
}

impl ManualClock {
    /// A manual clock starting at the real current instant.
    pub fn new() -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(Instant::now())),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock() += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_instants_round_trip_and_order() {
        // The origin is fixed at first use; instants before it read as the origin.
        let before = Instant::now();
        let _ = to_atomic(before);
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let (a, b) = (to_atomic(now), to_atomic(later));
        assert!(ATOMIC_NOW < a && a < b && b < ATOMIC_NEVER);
        let back = from_atomic(b).unwrap();
        assert!(back.max(later) - back.min(later) < Duration::from_micros(1));
        assert_eq!(from_atomic(ATOMIC_NEVER), None);
        assert!(from_atomic(ATOMIC_NOW).unwrap() <= now);
    }
}
