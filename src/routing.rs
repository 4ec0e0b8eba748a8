//! Routing: the [`Router`] trait and the shipped strategies. Routers are pure: a snapshot of
//! candidates in, an instance index out, so they are unit-tested without threads or processes.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::breaker::CircuitState;
use crate::error::Error;
use crate::framing::splitmix64;
use crate::state::InstanceState;

/// One instance as a router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The instance index (what [`Router::select`] returns).
    pub index: usize,
    /// Its state.
    pub state: InstanceState,
    /// Prompts queued on it or being answered.
    pub pending: usize,
    /// How many it may hold (`pending < capacity` means it has room).
    pub capacity: usize,
    /// Its circuit breaker's state.
    pub circuit: CircuitState,
    /// Its process generation (changes when it is restarted).
    pub generation: u64,
    /// Its current answer has run past the cluster's stuck threshold
    /// ([`ClusterBuilder::stuck_after`](crate::ClusterBuilder::stuck_after)): nothing new
    /// should queue behind it.
    pub stuck: bool,
}

impl Candidate {
    /// Healthy enough for traffic: ready, circuit not open, and in half-open state only when
    /// idle (one trial at a time). Says nothing about queue room.
    pub fn is_available(&self) -> bool {
        self.state == InstanceState::Ready
            && match self.circuit {
                CircuitState::Closed => true,
                CircuitState::Open => false,
                CircuitState::HalfOpen => self.pending == 0,
            }
    }

    /// Available, not stuck, and with room in its queue: a router may pick it.
    pub fn is_eligible(&self) -> bool {
        self.is_available() && !self.stuck && self.pending < self.capacity
    }

    /// Eligible with nothing queued or in flight: a prompt placed here starts at once.
    pub fn is_idle(&self) -> bool {
        self.is_eligible() && self.pending == 0
    }
}

/// What the caller knows about a prompt when it is routed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteContext<'a> {
    /// The session the prompt belongs to, if any.
    pub session: Option<&'a str>,
}

/// Chooses an instance for each prompt.
///
/// Called with `&mut self` under the cluster's routing lock (one placement at a time, so a
/// selection and the reservation of a queue slot happen together, and a router keeps its
/// state in plain fields), with a fresh snapshot taken before the call: no lock on the
/// instance list is held, so a router may read the cluster (`health`, `status`, `metrics`).
/// It must not block, and must not place prompts itself. Return an index whose candidate
/// [`Candidate::is_eligible`], or `None` to let the prompt wait until one is.
///
/// ```
/// use aim::{Candidate, RouteContext, Router};
///
/// /// Always the eligible instance with the highest index.
/// #[derive(Debug)]
/// struct Last;
/// impl Router for Last {
///     fn select(&mut self, candidates: &[Candidate], _: &RouteContext<'_>) -> Option<usize> {
///         candidates.iter().rev().find(|c| c.is_eligible()).map(|c| c.index)
///     }
/// }
/// let mut router: Box<dyn Router> = Box::new(Last);
/// assert_eq!(router.select(&[], &RouteContext::default()), None);
/// ```
pub trait Router: Send + fmt::Debug {
    /// Picks an instance index from `candidates`, or `None`.
    fn select(&mut self, candidates: &[Candidate], context: &RouteContext<'_>) -> Option<usize>;

    /// Forgets a session that has ended. Defaults to doing nothing.
    fn end_session(&mut self, _key: &str) {}

    /// A short name for logs and metrics. Defaults to `custom`.
    fn name(&self) -> &str {
        "custom"
    }
}

/// The shipped routing strategies.
///
/// ```
/// use aim::Strategy;
/// let s: Strategy = "least-busy".parse()?;
/// assert_eq!(s, Strategy::LeastBusy);
/// assert_eq!(s.to_string(), "least-busy");
/// assert!("fastest".parse::<Strategy>().unwrap_err().to_string().contains("round-robin"));
/// # Ok::<(), aim::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Cycles evenly over eligible instances.
    #[default]
    RoundRobin,
    /// The instance with the fewest prompts pending; ties broken in turn.
    LeastBusy,
    /// Sessions stay on one instance; new sessions and prompts without one go least-busy.
    Sticky,
}

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 3] = [Strategy::RoundRobin, Strategy::LeastBusy, Strategy::Sticky];

    /// The strategy's name, as parsed and printed.
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round-robin",
            Strategy::LeastBusy => "least-busy",
            Strategy::Sticky => "sticky",
        }
    }

    /// A fresh router implementing this strategy.
    pub fn router(&self) -> Box<dyn Router> {
        match self {
            Strategy::RoundRobin => Box::new(RoundRobin::new()),
            Strategy::LeastBusy => Box::new(LeastBusy::new()),
            Strategy::Sticky => Box::new(Sticky::new()),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                Error::config(
                    "strategy",
                    format!(
                        "unknown strategy {s:?}; valid: {}",
                        Strategy::ALL.map(|x| x.as_str()).join(", ")
                    ),
                )
            })
    }
}

/// Cycles evenly over eligible instances: 9 prompts over 3 instances give 3 each. An idle
/// instance is preferred to a busy one, so a prompt never queues behind a slow answer while
/// another instance has nothing to do.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// A round-robin router starting at the first instance.
    pub fn new() -> Self {
        RoundRobin::default()
    }
}

impl Router for RoundRobin {
    fn select(&mut self, candidates: &[Candidate], _: &RouteContext<'_>) -> Option<usize> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let start = self.next % n;
        let at = |k: &usize| &candidates[(start + k) % n];
        let offset = (0..n)
            .find(|k| at(k).is_idle())
            .or_else(|| (0..n).find(|k| at(k).is_eligible()))?;
        let pos = (start + offset) % n;
        self.next = pos + 1;
        Some(candidates[pos].index)
    }

    fn name(&self) -> &str {
        "round-robin"
    }
}

/// Up to this many candidates, least-busy scans them all; above, it samples two.
const EXACT_SCAN_LIMIT: usize = 64;

/// The eligible instance with the fewest prompts pending. Ties are broken by a rotating
/// starting point, so idle instances share the work instead of instance 0 taking it all.
/// Above 64 instances it uses the power of two choices (two random eligible instances, the
/// less loaded wins), which stays within a small factor of optimal at a fraction of the cost.
#[derive(Debug)]
pub struct LeastBusy {
    turn: usize,
    rng: u64,
}

impl Default for LeastBusy {
    fn default() -> Self {
        LeastBusy::new()
    }
}

impl LeastBusy {
    /// A least-busy router.
    pub fn new() -> Self {
        LeastBusy {
            turn: 0,
            rng: 0x2545_F491_4F6C_DD1D,
        }
    }

    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.rng)
    }

    /// The least-busy eligible candidate that also passes `allowed`.
    fn select_where(
        &mut self,
        candidates: &[Candidate],
        allowed: impl Fn(&Candidate) -> bool,
    ) -> Option<usize> {
        match candidates.len() {
            0 => None,
            n if n <= EXACT_SCAN_LIMIT => self.exact(candidates, allowed),
            _ => self.sampled(candidates, allowed),
        }
    }

    fn exact(
        &mut self,
        candidates: &[Candidate],
        allowed: impl Fn(&Candidate) -> bool,
    ) -> Option<usize> {
        let n = candidates.len();
        let start = self.turn % n;
        self.turn = self.turn.wrapping_add(1);
        let mut best: Option<&Candidate> = None;
        for k in 0..n {
            let c = &candidates[(start + k) % n];
            if c.is_eligible() && allowed(c) && best.is_none_or(|b| c.pending < b.pending) {
                best = Some(c);
            }
        }
        best.map(|c| c.index)
    }

    fn sampled(
        &mut self,
        candidates: &[Candidate],
        allowed: impl Fn(&Candidate) -> bool,
    ) -> Option<usize> {
        let n = candidates.len();
        let probe = |from: usize| {
            (0..n)
                .map(|k| &candidates[(from + k) % n])
                .find(|c| c.is_eligible() && allowed(c))
        };
        let (first, second) = (self.random() as usize % n, self.random() as usize % n);
        let a = probe(first)?;
        let b = probe(second).unwrap_or(a);
        Some(if b.pending < a.pending {
            b.index
        } else {
            a.index
        })
    }
}

impl Router for LeastBusy {
    fn select(&mut self, candidates: &[Candidate], _: &RouteContext<'_>) -> Option<usize> {
        self.select_where(candidates, |_| true)
    }

    fn name(&self) -> &str {
        "least-busy"
    }
}

/// Whether sessions may share a tool process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// A session owns its instance: no other session, and no prompt without a session, is
    /// ever placed on it, so conversations never mix. A session whose instance is restarting
    /// waits for it (its conversation may be restored); one whose instance failed for good or
    /// was removed moves to a free instance, never to another session's. With more sessions
    /// than instances, new sessions wait for one to end (up to their deadline). The default
    /// for AI agents (the aider, claude and codex protocols).
    Exclusive,
    /// Several sessions may share an instance (today's REPL behaviour: cheap, and their
    /// state is shared anyway). A session moves only when its instance is not available,
    /// and every session already on the instance it moves to is told
    /// ([`Response::context_mixed`](crate::Response::context_mixed)). The default for framed
    /// tools.
    #[default]
    Shared,
}

/// Keeps each session on one instance with an explicit session -> instance map (hashing alone
/// would move sessions whenever instances come and go). New sessions go to the least-busy
/// instance allowed by the [`SessionMode`]. In shared mode a session moves only when its
/// instance is not available (dead, restarting, failed, circuit open, removed), and then
/// once: the map is updated, so it never silently moves back. When its instance is merely
/// full (or stuck), the prompt waits for room instead of moving.
#[derive(Debug, Default)]
pub struct Sticky {
    bindings: Bindings,
    placement: LeastBusy,
    mode: SessionMode,
}

#[derive(Debug, Default)]
struct Bindings {
    by_session: HashMap<String, usize>,
    /// Exclusive mode: the session that owns each instance.
    owner: HashMap<usize, String>,
}

impl Bindings {
    fn bind(&mut self, key: &str, index: usize, exclusive: bool) {
        self.forget(key);
        self.by_session.insert(key.to_string(), index);
        if exclusive {
            self.owner.insert(index, key.to_string());
        }
    }

    /// Drops `key`'s binding, and its ownership of its instance if it had it.
    fn forget(&mut self, key: &str) {
        if let Some(index) = self.by_session.remove(key) {
            if self.owner.get(&index).is_some_and(|k| k == key) {
                self.owner.remove(&index);
            }
        }
    }
}

impl Sticky {
    /// A sticky router in [`SessionMode::Shared`] with least-busy placement.
    pub fn new() -> Self {
        Sticky::default()
    }

    /// A sticky router in `mode`.
    pub fn with_mode(mode: SessionMode) -> Self {
        Sticky {
            mode,
            ..Sticky::default()
        }
    }

    /// Its session mode.
    pub fn mode(&self) -> SessionMode {
        self.mode
    }

    /// How many sessions are mapped.
    pub fn sessions(&self) -> usize {
        self.bindings.by_session.len()
    }

    fn select_shared(&mut self, candidates: &[Candidate], key: &str) -> Option<usize> {
        if let Some(&bound) = self.bindings.by_session.get(key) {
            if let Some(c) = find(candidates, bound) {
                if c.is_available() {
                    return c.is_eligible().then_some(bound);
                }
            }
        }
        let chosen = self.placement.select_where(candidates, |_| true)?;
        self.bindings.bind(key, chosen, false);
        Some(chosen)
    }

    fn select_exclusive(&mut self, candidates: &[Candidate], key: &str) -> Option<usize> {
        let bindings = &mut self.bindings;
        if let Some(&bound) = bindings.by_session.get(key) {
            match find(candidates, bound) {
                // Coming back (or merely busy): wait for it, its conversation lives there.
                Some(c) if !matches!(c.state, InstanceState::Failed | InstanceState::Stopped) => {
                    return c.is_eligible().then_some(bound);
                }
                // Failed for good or removed: give it up, take a free instance below.
                _ => {
                    bindings.by_session.remove(key);
                    bindings.owner.remove(&bound);
                }
            }
        }
        let owner = &bindings.owner;
        let chosen = self
            .placement
            .select_where(candidates, |c| !owner.contains_key(&c.index))?;
        bindings.bind(key, chosen, true);
        Some(chosen)
    }
}

/// The candidate for instance `index`: snapshots list instances in index order, so look
/// there first.
fn find(candidates: &[Candidate], index: usize) -> Option<&Candidate> {
    candidates
        .get(index)
        .filter(|c| c.index == index)
        .or_else(|| candidates.iter().find(|c| c.index == index))
}

impl Router for Sticky {
    fn select(&mut self, candidates: &[Candidate], context: &RouteContext<'_>) -> Option<usize> {
        let exclusive = self.mode == SessionMode::Exclusive;
        match (context.session, exclusive) {
            (None, false) => self.placement.select_where(candidates, |_| true),
            // Never into a session's process: it would join that conversation.
            (None, true) => {
                let owner = &self.bindings.owner;
                self.placement
                    .select_where(candidates, |c| !owner.contains_key(&c.index))
            }
            (Some(key), false) => self.select_shared(candidates, key),
            (Some(key), true) => self.select_exclusive(candidates, key),
        }
    }

    fn end_session(&mut self, key: &str) {
        self.bindings.forget(key);
    }

    fn name(&self) -> &str {
        "sticky"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(index: usize, pending: usize) -> Candidate {
        Candidate {
            index,
            state: InstanceState::Ready,
            pending,
            capacity: 8,
            circuit: CircuitState::Closed,
            generation: 1,
            stuck: false,
        }
    }

    fn count_picks(router: &mut dyn Router, candidates: &[Candidate], n: usize) -> Vec<usize> {
        let mut counts = vec![0; candidates.len()];
        for _ in 0..n {
            let i = router.select(candidates, &RouteContext::default()).unwrap();
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let c = [ready(0, 0), ready(1, 0), ready(2, 0)];
        assert_eq!(count_picks(&mut RoundRobin::new(), &c, 9), [3, 3, 3]);
    }

    #[test]
    fn round_robin_skips_ineligible_instances() {
        let mut c = [ready(0, 0), ready(1, 0), ready(2, 0)];
        c[1].state = InstanceState::Restarting;
        c[2].circuit = CircuitState::Open;
        let mut r = RoundRobin::new();
        assert_eq!(count_picks(&mut r, &c, 4), [4, 0, 0]);
        c[0].pending = 8; // full
        assert_eq!(r.select(&c, &RouteContext::default()), None);
    }

    #[test]
    fn round_robin_prefers_an_idle_instance_to_a_busy_one() {
        let c = [ready(0, 1), ready(1, 0), ready(2, 1)];
        let mut r = RoundRobin::new();
        assert_eq!(count_picks(&mut r, &c, 5), [0, 5, 0]);
        // With nobody idle, it cycles over the eligible ones.
        let busy = [ready(0, 1), ready(1, 1), ready(2, 1)];
        assert_eq!(count_picks(&mut r, &busy, 6), [2, 2, 2]);
    }

    #[test]
    fn no_strategy_places_a_prompt_on_a_stuck_instance() {
        let mut c = [ready(0, 1), ready(1, 3)];
        c[0].stuck = true;
        assert!(c[0].is_available() && !c[0].is_eligible());
        for s in Strategy::ALL {
            let mut r = s.router();
            for _ in 0..10 {
                assert_eq!(r.select(&c, &RouteContext::default()), Some(1), "{s}");
            }
        }
        // A session bound to a stuck instance waits for it instead of moving.
        let mut sticky = Sticky::new();
        let ctx = RouteContext {
            session: Some("alice"),
        };
        c[0].stuck = false;
        c[0].pending = 0;
        assert_eq!(sticky.select(&c, &ctx), Some(0));
        c[0].stuck = true;
        assert_eq!(sticky.select(&c, &ctx), None);
    }

    #[test]
    fn half_open_admits_one_trial() {
        let mut c = ready(0, 0);
        c.circuit = CircuitState::HalfOpen;
        assert!(c.is_eligible());
        c.pending = 1;
        assert!(!c.is_eligible());
    }

    #[test]
    fn least_busy_prefers_the_idle_and_rotates_ties() {
        let c = [ready(0, 3), ready(1, 0), ready(2, 5)];
        let mut r = LeastBusy::new();
        assert_eq!(r.select(&c, &RouteContext::default()), Some(1));
        let ties = [ready(0, 0), ready(1, 0), ready(2, 0), ready(3, 0)];
        assert_eq!(count_picks(&mut r, &ties, 400), [100, 100, 100, 100]);
    }

    #[test]
    fn least_busy_samples_large_clusters_and_stays_sensible() {
        let mut c: Vec<Candidate> = (0..1000).map(|i| ready(i, 5)).collect();
        c[10].pending = 0;
        let mut r = LeastBusy::new();
        for _ in 0..100 {
            let i = r.select(&c, &RouteContext::default()).unwrap();
            assert!(c[i].is_eligible());
        }
        // Only one eligible instance: always found.
        for (i, cand) in c.iter_mut().enumerate() {
            if i != 777 {
                cand.state = InstanceState::Failed;
            }
        }
        assert_eq!(r.select(&c, &RouteContext::default()), Some(777));
    }

    #[test]
    fn least_busy_two_choices_beats_random_on_skewed_load() {
        // Half the instances are loaded: two choices picks a light one 3/4 of the time.
        let c: Vec<Candidate> = (0..200)
            .map(|i| ready(i, if i % 2 == 0 { 6 } else { 0 }))
            .collect();
        let mut r = LeastBusy::new();
        let light = (0..4000)
            .filter(|_| c[r.select(&c, &RouteContext::default()).unwrap()].pending == 0)
            .count();
        assert!(light > 2700, "{light} of 4000");
    }

    #[test]
    fn sticky_keeps_sessions_and_moves_them_once() {
        let mut c = [ready(0, 0), ready(1, 0), ready(2, 0)];
        let mut r = Sticky::new();
        let ctx = RouteContext {
            session: Some("alice"),
        };
        let first = r.select(&c, &ctx).unwrap();
        for _ in 0..100 {
            assert_eq!(r.select(&c, &ctx), Some(first));
        }
        // Its instance dies: the session moves once, to another instance.
        c[first].state = InstanceState::Restarting;
        let moved = r.select(&c, &ctx).unwrap();
        assert_ne!(moved, first);
        // The old instance comes back: the session stays where it moved.
        c[first].state = InstanceState::Ready;
        for _ in 0..10 {
            assert_eq!(r.select(&c, &ctx), Some(moved));
        }
        // Full is not dead: the session waits rather than moving.
        c[moved].pending = 8;
        assert_eq!(r.select(&c, &ctx), None);
        r.end_session("alice");
        assert_eq!(r.sessions(), 0);
    }

    #[test]
    fn exclusive_sessions_never_share_an_instance() {
        let mut c = [ready(0, 0), ready(1, 0)];
        let mut r = Sticky::with_mode(SessionMode::Exclusive);
        let ctx = |k| RouteContext { session: Some(k) };
        let alice = r.select(&c, &ctx("alice")).unwrap();
        let bob = r.select(&c, &ctx("bob")).unwrap();
        assert_ne!(alice, bob);
        // A third session and sessionless prompts have nowhere to go: they wait.
        assert_eq!(r.select(&c, &ctx("carol")), None);
        assert_eq!(r.select(&c, &RouteContext::default()), None);
        // Alice's instance restarts: she waits for it, and nobody takes it meanwhile.
        c[alice].state = InstanceState::Restarting;
        assert_eq!(r.select(&c, &ctx("alice")), None);
        assert_eq!(r.select(&c, &ctx("carol")), None);
        c[alice].state = InstanceState::Ready;
        assert_eq!(r.select(&c, &ctx("alice")), Some(alice));
        // Alice's instance fails for good: she never moves onto Bob's.
        c[alice].state = InstanceState::Failed;
        assert_eq!(r.select(&c, &ctx("alice")), None);
        assert_eq!(r.select(&c, &ctx("bob")), Some(bob));
        // Bob ends: his instance is free, and Alice (or anyone) may take it.
        r.end_session("bob");
        assert_eq!(r.select(&c, &ctx("alice")), Some(bob));
        assert_eq!(r.select(&c, &ctx("carol")), None);
        r.end_session("alice");
        assert_eq!(r.sessions(), 0);
        assert_eq!(r.select(&c, &RouteContext::default()), Some(bob));
    }

    #[test]
    fn sticky_places_new_sessions_on_the_least_loaded() {
        let c = [ready(0, 4), ready(1, 1), ready(2, 3)];
        let mut r = Sticky::new();
        assert_eq!(r.select(&c, &RouteContext { session: Some("s") }), Some(1));
        assert_eq!(r.select(&c, &RouteContext::default()), Some(1));
    }

    #[test]
    fn strategies_parse_and_print() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
            assert_eq!(s.router().name(), s.as_str());
        }
        let err = "random".parse::<Strategy>().unwrap_err().to_string();
        assert!(err.contains("round-robin, least-busy, sticky"), "{err}");
    }

    #[test]
    fn empty_snapshots_select_nothing() {
        for s in Strategy::ALL {
            assert_eq!(s.router().select(&[], &RouteContext::default()), None);
        }
    }
}
