//! `max_rss_bytes`: an instance over its memory limit is recycled once idle and killed at
//! twice the limit, counted as restart reason `memory` (a real python3 that allocates).

mod support;

use std::time::Duration;

use aim::{ClusterManager, InstanceState, ToolRegistry};
use support::*;

fn memory_restarts(cluster: &ClusterManager) -> u64 {
    cluster.metrics().instances[0]
        .restarts
        .get("memory")
        .copied()
        .unwrap_or(0)
}

#[test]
fn over_the_limit_an_idle_instance_is_recycled_and_at_twice_it_killed() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: no python3");
        return;
    }
    let _w = watchdog("memory limit", Duration::from_secs(120));
    let spec = ToolRegistry::builtin()
        .resolve("python")
        .unwrap()
        .max_rss_bytes(60 << 20);
    let cluster = ClusterManager::builder(spec)
        .count(1)
        .supervision(fast_supervision().health_interval(Duration::from_millis(100)))
        .launch()
        .unwrap();
    let first = cluster.status()[0].pid;
    // 90 MiB resident (bytes are written, so the pages are real): over 60, under 120.
    let held = cluster.send("b = b'x' * (90 * 2**20)").unwrap();
    assert_eq!(held.text, "");
    wait_until(Duration::from_secs(30), "the idle recycle", || {
        let s = &cluster.status()[0];
        s.state == InstanceState::Ready && s.pid != first
    });
    assert_eq!(memory_restarts(&cluster), 1);
    // The new process starts small: the state went with the old one.
    let fresh = cluster.send("'b' in dir()").unwrap();
    assert_eq!(fresh.text, "False\n");

    // 150 MiB while answering: over twice the limit, killed without waiting for the answer.
    let second = cluster.status()[0].pid;
    let ticket = cluster
        .submit("b = b'x' * (150 * 2**20); import time; time.sleep(60)")
        .unwrap();
    let err = ticket.wait().unwrap_err();
    assert_eq!(err.kind(), "died", "{err}");
    wait_until(
        Duration::from_secs(30),
        "the restart after the kill",
        || {
            let s = &cluster.status()[0];
            s.state == InstanceState::Ready && s.pid != second
        },
    );
    assert_eq!(memory_restarts(&cluster), 2);
    assert!(is_gone(first) && is_gone(second));
    stop_cluster(&cluster);
}

#[test]
fn a_zero_limit_is_refused() {
    let spec = ToolRegistry::builtin()
        .resolve("python")
        .unwrap()
        .max_rss_bytes(0);
    let err = ClusterManager::builder(spec).launch().unwrap_err();
    assert!(err.to_string().contains("max_rss_bytes"), "{err}");
}
