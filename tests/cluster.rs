//! ClusterManager and routing with real processes.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aim::{
    Candidate, ClusterManager, Error, InstanceState, RestartPolicy, RouteContext, Router, Strategy,
    ToolRegistry,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

fn cluster(count: usize, strategy: Strategy) -> ClusterManager {
    ClusterManager::builder(demo(&[]))
        .count(count)
        .strategy(strategy)
        .launch()
        .unwrap()
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
}

#[test]
fn round_robin_spreads_nine_prompts_three_each() {
    init_logs();
    let cluster = cluster(3, Strategy::RoundRobin);
    for i in 0..9 {
        cluster.send(format!("prompt {i}")).unwrap();
    }
    let answered: Vec<u64> = cluster
        .health()
        .instances
        .iter()
        .map(|s| s.answered)
        .collect();
    assert_eq!(answered, [3, 3, 3]);
    let pids: Vec<i32> = cluster.status().iter().map(|s| s.pid).collect();
    stop_cluster(&cluster);
    assert_gone(&pids);
}

#[test]
fn least_busy_sends_new_work_around_a_slow_instance() {
    init_logs();
    let cluster = cluster(2, Strategy::LeastBusy);
    let slow = cluster.submit("/sleep 1500").unwrap();
    let busy = slow.instance().unwrap();
    for i in 0..10 {
        let r = cluster.send(format!("quick {i}")).unwrap();
        assert_ne!(r.instance, busy, "prompt {i} went to the busy instance");
    }
    assert_eq!(slow.wait().unwrap().text, "slept\n");
    stop_cluster(&cluster);
}

#[test]
fn sticky_sessions_stay_put_and_move_once_when_their_instance_dies() {
    init_logs();
    let cluster = cluster(3, Strategy::Sticky);
    let session = cluster.session("alice");
    let first = session.send("hello").unwrap();
    for i in 0..100 {
        let r = session.send(format!("turn {i}")).unwrap();
        assert_eq!(
            (r.instance, r.generation),
            (first.instance, first.generation)
        );
        assert!(!r.context_lost);
    }
    // Other sessions spread over the cluster (new sessions go to the least loaded).
    let other = cluster.session("bob").send("hi").unwrap();
    assert!(!other.context_lost);

    sigkill(first.pid);
    wait_until(Duration::from_secs(10), "the kill to be noticed", || {
        let s = &cluster.status()[first.instance];
        s.generation > first.generation || s.state != InstanceState::Ready
    });
    let moved = session.send("are you there?").unwrap();
    assert!(moved.context_lost, "the session's context is gone");
    assert_ne!(
        (moved.instance, moved.generation),
        (first.instance, first.generation)
    );
    for i in 0..20 {
        let r = session.send(format!("after {i}")).unwrap();
        assert_eq!(
            (r.instance, r.generation),
            (moved.instance, moved.generation)
        );
        assert!(!r.context_lost, "moves exactly once");
    }
    stop_cluster(&cluster);
}

#[test]
fn sixteen_threads_sending_at_once_each_get_their_own_answers() {
    init_logs();
    let cluster = ClusterManager::builder(demo(&[]))
        .count(4)
        .strategy(Strategy::LeastBusy)
        .launch()
        .unwrap();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let cluster = cluster.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..50 {
                    let prompt = format!("thread {t} prompt {i}");
                    let r = cluster.send(prompt.clone()).unwrap();
                    assert!(
                        r.text.starts_with(&format!("You said: {prompt}\n")),
                        "{:?}",
                        r.text
                    );
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 800);
    let answered: u64 = cluster.health().instances.iter().map(|s| s.answered).sum();
    assert_eq!(answered, 800);
    stop_cluster(&cluster);
}

#[test]
fn try_submit_says_busy_when_every_queue_is_full() {
    init_logs();
    let cluster = ClusterManager::builder(demo(&[]))
        .count(1)
        .queue_capacity(1)
        .launch()
        .unwrap();
    let slow = cluster.submit("/sleep 400").unwrap();
    let err = cluster.try_submit("no room").unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    assert_eq!(err.prompt(), Some("no room"));
    // submit (not try_) waits in the backlog and is answered once there is room.
    let waiting = cluster.submit("patient").unwrap();
    assert_eq!(waiting.instance(), None, "it waits for an instance");
    assert_eq!(slow.wait().unwrap().text, "slept\n");
    let r = waiting.wait().unwrap();
    assert!(r.text.contains("patient"));
    stop_cluster(&cluster);
}

#[test]
fn a_cluster_whose_instances_all_died_answers_with_an_error_not_a_hang() {
    init_logs();
    let spec = demo(&[]).restart(RestartPolicy::Never);
    let cluster = ClusterManager::builder(spec)
        .count(2)
        .submit_timeout(Duration::from_millis(300))
        .launch()
        .unwrap();
    let pids: Vec<i32> = cluster.status().iter().map(|s| s.pid).collect();
    pids.iter().for_each(|&p| sigkill(p));
    wait_until(
        Duration::from_secs(10),
        "both instances to be stopped",
        || {
            cluster
                .status()
                .iter()
                .all(|s| s.state == InstanceState::Stopped)
        },
    );
    let err = cluster.send("anyone?").unwrap_err();
    assert!(matches!(err, Error::NoHealthyInstance { .. }), "{err}");
    assert_eq!(err.prompt(), Some("anyone?"));
    let err = cluster.try_submit("now?").unwrap_err();
    assert!(matches!(err, Error::NoHealthyInstance { .. }), "{err}");
    assert!(!cluster.health().is_serving());
    stop_cluster(&cluster);
    assert_gone(&pids);
}

#[test]
fn python_through_a_cluster() {
    init_logs();
    let spec = ToolRegistry::builtin().resolve("python").unwrap();
    let cluster = ClusterManager::builder(spec).count(2).launch().unwrap();
    let tickets: Vec<_> = (0..10)
        .map(|i| cluster.submit(format!("{i} ** 2")).unwrap())
        .collect();
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.wait().unwrap().text, format!("{}\n", i * i));
    }
    stop_cluster(&cluster);
}

#[derive(Debug)]
struct OnlyLast;

impl Router for OnlyLast {
    fn select(&mut self, candidates: &[Candidate], _: &RouteContext<'_>) -> Option<usize> {
        candidates
            .iter()
            .rev()
            .find(|c| c.is_eligible())
            .map(|c| c.index)
    }
    fn name(&self) -> &str {
        "only-last"
    }
}

#[test]
fn a_custom_router_decides() {
    init_logs();
    let cluster = ClusterManager::builder(demo(&[]))
        .count(3)
        .router(Box::new(OnlyLast))
        .launch()
        .unwrap();
    assert_eq!(cluster.router_name(), "only-last");
    for _ in 0..5 {
        assert_eq!(cluster.send("x").unwrap().instance, 2);
    }
    stop_cluster(&cluster);
}

#[test]
fn resize_grows_and_shrinks_without_losing_prompts() {
    init_logs();
    let cluster = cluster(2, Strategy::RoundRobin);
    cluster.resize(4).unwrap();
    assert_eq!(cluster.len(), 4);
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for i in 0..8 {
        *seen
            .entry(cluster.send(format!("p{i}")).unwrap().instance)
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 4);
    let removed: Vec<i32> = cluster.status()[1..].iter().map(|s| s.pid).collect();
    // Prompts queued while shrinking are moved, not lost.
    let tickets: Vec<_> = (0..12)
        .map(|i| cluster.submit(format!("q{i}")).unwrap())
        .collect();
    cluster.resize(1).unwrap();
    assert_eq!(cluster.len(), 1);
    for t in tickets {
        assert!(t.wait().unwrap().text.starts_with("You said: q"));
    }
    assert_eq!(cluster.send("last").unwrap().instance, 0);
    assert_gone(&removed);
    assert!(matches!(
        cluster.resize(0),
        Err(Error::InvalidConfig { .. })
    ));
    stop_cluster(&cluster);
}

#[test]
fn launch_cluster_rejects_unknown_tools_and_strategies() {
    init_logs();
    let err = aim::launch_cluster("no-such-tool", 1, Strategy::RoundRobin).unwrap_err();
    assert!(matches!(err, Error::UnknownTool { .. }));
    let err = "fastest".parse::<Strategy>().unwrap_err();
    assert!(err.to_string().contains("round-robin, least-busy, sticky"));
}

#[test]
fn manual_addressing_bypasses_the_router() {
    init_logs();
    let cluster = cluster(3, Strategy::RoundRobin);
    for _ in 0..3 {
        assert_eq!(cluster.send_to(1, "to one").unwrap().instance, 1);
    }
    assert!(matches!(
        cluster.send_to(9, "nowhere"),
        Err(Error::NoSuchInstance { index: 9, count: 3 })
    ));
    stop_cluster(&cluster);
}

#[test]
fn the_cluster_handle_is_send_sync_and_shuts_down_on_last_drop() {
    init_logs();
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<ClusterManager>();
    let cluster = Arc::new(cluster(2, Strategy::RoundRobin));
    let pids: Vec<i32> = cluster.status().iter().map(|s| s.pid).collect();
    drop(cluster);
    assert_gone(&pids);
}

#[test]
fn the_deadline_family_ends_requests_on_time() {
    init_logs();
    let cluster = cluster(1, Strategy::RoundRobin);
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    let err = cluster.send_deadline("/hang", deadline).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(std::time::Instant::now() >= deadline);
    // The recycled instance comes back and answers within a generous deadline.
    let r = cluster
        .send_deadline("after", std::time::Instant::now() + Duration::from_secs(30))
        .unwrap();
    assert!(r.text.contains("after"));
    let ticket = cluster.submit("/sleep 300").unwrap();
    let early = ticket.wait_deadline(std::time::Instant::now() + Duration::from_millis(50));
    assert!(
        early.is_none(),
        "the caller stops waiting, the request goes on"
    );
    assert_eq!(ticket.wait().unwrap().text, "slept\n");
    stop_cluster(&cluster);
}

/// A router that reads the cluster it routes for: the instance that answered least so far,
/// from `health()`, and the strategy name and backlog from `metrics()`.
#[derive(Debug, Default)]
struct FewestAnswered {
    cluster: Arc<std::sync::OnceLock<ClusterManager>>,
    consulted: usize,
}

impl Router for FewestAnswered {
    fn select(&mut self, candidates: &[Candidate], _: &RouteContext<'_>) -> Option<usize> {
        let cluster = self.cluster.get()?;
        let health = cluster.health();
        let metrics = cluster.metrics();
        assert_eq!(metrics.strategy, "fewest-answered");
        self.consulted += 1;
        candidates
            .iter()
            .filter(|c| c.is_eligible())
            .min_by_key(|c| health.instances[c.index].answered)
            .map(|c| c.index)
    }

    fn name(&self) -> &str {
        "fewest-answered"
    }
}

#[test]
fn a_custom_router_may_read_the_cluster_it_routes_for() {
    init_logs();
    let _w = watchdog("router reading cluster state", Duration::from_secs(60));
    let slot = Arc::new(std::sync::OnceLock::new());
    let cluster = ClusterManager::builder(demo(&[]))
        .count(3)
        .router(Box::new(FewestAnswered {
            cluster: Arc::clone(&slot),
            consulted: 0,
        }))
        .launch()
        .unwrap();
    slot.set(cluster.clone()).unwrap();
    for i in 0..9 {
        cluster.send(format!("p{i}")).unwrap();
    }
    let answered: Vec<u64> = cluster
        .health()
        .instances
        .iter()
        .map(|s| s.answered)
        .collect();
    assert_eq!(answered, [3, 3, 3]);
    stop_cluster(&cluster);
}
