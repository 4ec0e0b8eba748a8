//! Signalling one instance from the library, as tests and chaos do (no `libc::kill`, no
//! `unsafe`): the pid from `status()`, the signal through `signal(index, Signal)`; and error
//! kinds to match on.

mod support;

use std::time::Duration;

use aim::{ClusterManager, ErrorKind, InstanceState, Signal, ToolProcessPool};
use support::*;

#[test]
fn sigkill_through_the_cluster_restarts_that_instance_only() {
    init_logs();
    let _w = watchdog("cluster signal", Duration::from_secs(60));
    let cluster = ClusterManager::builder(demo(&[]))
        .count(2)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let before: Vec<i32> = cluster.status().iter().map(|s| s.pid).collect();
    let ticket = cluster.submit_to(1, "/sleep 30000").unwrap();
    wait_until(Duration::from_secs(10), "the answer to start", || {
        cluster.status()[1]
            .last_stderr
            .iter()
            .any(|l| l.contains("sleeping"))
    });
    cluster.signal(1, Signal::SIGKILL).unwrap();
    let err = ticket.wait().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Died, "{err}");
    assert_eq!(err.kind().as_str(), "died");
    assert!(matches!(err.kind(), ErrorKind::Died));
    wait_until(Duration::from_secs(10), "the restart", || {
        let s = &cluster.status()[1];
        s.state == InstanceState::Ready && s.pid != before[1]
    });
    assert!(is_gone(before[1]));
    assert_eq!(cluster.status()[0].pid, before[0], "instance 0 untouched");
    let err = cluster.signal(5, Signal::SIGTERM).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoSuchInstance);
    stop_cluster(&cluster);
}

#[test]
fn sigterm_through_the_pool_ends_that_process() {
    init_logs();
    let _w = watchdog("pool signal", Duration::from_secs(60));
    let pool = ToolProcessPool::builder(demo(&[]))
        .count(1)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let pid = pool.status()[0].pid;
    pool.signal(0, Signal::SIGTERM).unwrap();
    wait_until(Duration::from_secs(10), "the restart", || {
        let s = &pool.status()[0];
        s.state == InstanceState::Ready && s.pid != pid
    });
    assert!(is_gone(pid));
    assert_eq!(pool.send_to(0, "still here").unwrap().instance, 0);
    stop_pool(&pool);
}

#[test]
fn the_guardian_pid_is_the_crate_pid_type() {
    let guardian: Option<i32> = aim::start_guardian();
    let pid = guardian.expect("the guardian runs");
    assert!(!is_gone(pid));
}
