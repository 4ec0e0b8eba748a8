//! Cancelling prompts: waiting ones are dropped, answers in flight are interrupted the
//! tool's way, and the instance stays usable.

mod support;

use std::time::{Duration, Instant};

use aim::{ClusterManager, Error, Strategy, ToolRegistry};
use support::*;

fn is_cancelled(result: aim::Result<aim::Response>) -> bool {
    matches!(result, Err(Error::Cancelled { .. }))
}

#[test]
fn cancelling_a_python_computation_interrupts_it_and_keeps_the_process() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let _w = watchdog("python cancel", Duration::from_secs(60));
    let spec = ToolRegistry::builtin().get("python").unwrap();
    let cluster = ClusterManager::builder(spec)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let before = cluster.send("x = 7").unwrap();
    let began = Instant::now();
    let ticket = cluster.submit("import time; time.sleep(30)").unwrap();
    wait_until(Duration::from_secs(5), "the sleep in flight", || {
        cluster.metrics().cluster.in_flight == 1
    });
    ticket.cancel();
    ticket.cancel(); // twice is harmless
    let result = ticket.wait();
    assert!(
        matches!(
            result,
            Err(Error::Cancelled {
                recycled: false,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(20));
    // SIGINT stopped the sleep, not the REPL: same process, same state.
    let after = cluster.send("print(x)").unwrap();
    assert_eq!(after.text, "7\n");
    assert_eq!(after.pid, before.pid);
    assert_eq!(cluster.metrics().cluster.restarts, 0);
    stop_cluster(&cluster);
}

#[test]
fn cancelling_queued_and_waiting_prompts_drops_them_at_once() {
    init_logs();
    let _w = watchdog("queued cancel", Duration::from_secs(60));
    let cluster = ClusterManager::builder(demo(&[]))
        .queue_capacity(2)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let slow = cluster.submit("/sleep 1500").unwrap();
    let queued = cluster.submit("queued").unwrap();
    let waiting = (0..3)
        .map(|i| cluster.submit(format!("backlog {i}")).unwrap())
        .collect::<Vec<_>>();
    assert!(
        cluster.health().backlog > 0,
        "some prompts wait in the backlog"
    );
    let began = Instant::now();
    queued.cancel();
    for ticket in &waiting {
        ticket.cancel();
    }
    assert!(is_cancelled(queued.wait()));
    for ticket in waiting {
        assert!(is_cancelled(ticket.wait()));
    }
    assert!(
        began.elapsed() < Duration::from_millis(1400),
        "not after the slow answer"
    );
    assert_eq!(slow.wait().unwrap().text, "slept\n");
    stop_cluster(&cluster);
}

#[test]
fn cancelling_an_answer_of_a_tool_without_a_sigint_handler_recycles_it() {
    init_logs();
    let _w = watchdog("demo cancel", Duration::from_secs(60));
    let cluster = ClusterManager::builder(demo(&[]))
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let ticket = cluster.submit("/hang").unwrap();
    wait_until(Duration::from_secs(5), "the hang in flight", || {
        cluster.metrics().cluster.in_flight == 1
    });
    ticket.cancel();
    assert!(is_cancelled(ticket.wait()));
    // The demo agent dies of SIGINT; the replacement answers, and no failure was counted.
    let next = cluster.send("next").unwrap();
    assert!(next.text.starts_with("You said: next"));
    let metrics = cluster.metrics();
    assert_eq!(metrics.instances[0].failures_total(), 0);
    assert_eq!(metrics.instances[0].restarts["manual"], 1);
    stop_cluster(&cluster);
}

#[test]
fn a_session_cancels_all_its_prompts_and_goes_on() {
    init_logs();
    let _w = watchdog("session cancel", Duration::from_secs(60));
    let cluster = ClusterManager::builder(demo(&[]))
        .strategy(Strategy::Sticky)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let session = cluster.session("s");
    let a = session.submit("/sleep 3000").unwrap();
    let b = session.submit("second").unwrap();
    session.cancel();
    assert!(is_cancelled(a.wait()));
    assert!(is_cancelled(b.wait()));
    assert!(session
        .send("third")
        .unwrap()
        .text
        .starts_with("You said: third"));
    stop_cluster(&cluster);
}

/// Cancels `slow` on a one-instance cluster of the built-in `tool` after `setup`; returns the
/// cluster, the error and the pid that answered `setup`.
fn cancel_on(tool: &str, setup: &str, slow: &str) -> Option<(ClusterManager, Error, i32)> {
    let program = if tool == "sqlite3" { "sqlite3" } else { "bc" };
    if !have(program) {
        eprintln!("SKIPPED: {program} not installed");
        return None;
    }
    let spec = ToolRegistry::builtin().get(tool).unwrap();
    let cluster = ClusterManager::builder(spec)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let pid = cluster.send(setup).unwrap().pid;
    let ticket = cluster.submit(slow).unwrap();
    wait_until(Duration::from_secs(5), "the slow prompt in flight", || {
        cluster.metrics().cluster.in_flight == 1
    });
    ticket.cancel();
    let err = ticket.wait().unwrap_err();
    Some((cluster, err, pid))
}

#[test]
fn cancelling_a_sqlite3_query_ends_its_process_and_the_error_says_so() {
    init_logs();
    let _w = watchdog("sqlite3 cancel", Duration::from_secs(60));
    let Some((cluster, err, pid)) = cancel_on(
        "sqlite3",
        "CREATE TABLE t(x); INSERT INTO t VALUES (5);",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c;",
    ) else {
        return;
    };
    // sqlite3 -batch stops the query on SIGINT, then exits at its next input line.
    assert!(
        matches!(err, Error::Cancelled { recycled: true, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("recycled"), "{err}");
    let after = cluster.send("SELECT count(*) FROM t;").unwrap();
    assert_ne!(after.pid, pid);
    assert!(after.stderr.contains("no such table"), "{after:?}");
    stop_cluster(&cluster);
}

#[test]
fn cancelling_a_bc_computation_ends_its_process_and_the_error_says_so() {
    init_logs();
    let _w = watchdog("bc cancel", Duration::from_secs(60));
    let Some((cluster, err, pid)) = cancel_on("bc", "x = 5", "for (i = 0; i < 10^12; i++) {}")
    else {
        return;
    };
    // bc without -i dies of SIGINT.
    assert!(
        matches!(err, Error::Cancelled { recycled: true, .. }),
        "{err:?}"
    );
    let after = cluster.send("x").unwrap();
    assert_ne!(after.pid, pid);
    assert_eq!(after.text, "0\n", "the new process has no x");
    stop_cluster(&cluster);
}
