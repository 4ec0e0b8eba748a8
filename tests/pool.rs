//! ToolProcessPool with real processes: answers, restarts, shutdown, nothing leaked.

mod support;

use std::time::Duration;

use aim::{Error, InstanceState, StopMethod, ToolProcessPool};
use support::*;

#[test]
fn demo_pool_answers_each_instance_and_shuts_down_clean() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 3).unwrap();
    assert_eq!(pool.len(), 3);
    let mut pids = Vec::new();
    for i in 0..3 {
        let r = pool.send_to(i, format!("hello {i}")).unwrap();
        assert_eq!(r.instance, i);
        assert_eq!(r.generation, 1);
        assert!(
            r.text.starts_with(&format!("You said: hello {i}\n")),
            "{:?}",
            r.text
        );
        assert!(r.text.contains("Tokens:"));
        assert!(
            !r.text.ends_with("> "),
            "the prompt marker is not part of the answer"
        );
        pids.push(r.pid);
    }
    let health = pool.check_health();
    assert!(health.iter().all(|s| s.is_healthy()), "{health:?}");
    let report = pool.shutdown();
    assert_eq!(report.instances.len(), 3);
    for outcome in &report.instances {
        assert_eq!(outcome.method, StopMethod::Quit, "{outcome:?}");
        assert_eq!(outcome.exit, Some(aim::ExitInfo::Code(0)));
    }
    assert!(pids.iter().all(|&p| !is_our_zombie(p)));
    assert_gone(&pids);
    // Idempotent: the same report again.
    assert_eq!(pool.shutdown(), report);
    assert!(matches!(
        pool.send_to(0, "late"),
        Err(Error::Shutdown { .. })
    ));
}

#[test]
fn multi_line_prompts_use_the_tools_wrapping() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let r = pool.send_to(0, "first line\nsecond line").unwrap();
    assert!(
        r.text.starts_with("You said: first line\nsecond line\n"),
        "{:?}",
        r.text
    );
    stop_pool(&pool);
}

#[test]
fn an_answer_containing_the_marker_mid_output_is_not_cut() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let r = pool.send_to(0, "/quote").unwrap();
    assert_eq!(r.text, "Here is a quote:\n> quoted line\nend of answer\n");
    stop_pool(&pool);
}

#[test]
fn restart_instance_replaces_the_process_in_place() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 2).unwrap();
    let before = pool.send_to(1, "/pid").unwrap();
    pool.restart_instance(1).unwrap();
    let after = pool.send_to(1, "/pid").unwrap();
    assert_eq!(pool.len(), 2);
    assert_eq!(after.generation, before.generation + 1);
    assert_ne!(after.pid, before.pid);
    assert_gone(&[before.pid]);
    assert!(matches!(
        pool.restart_instance(7),
        Err(Error::NoSuchInstance { index: 7, count: 2 })
    ));
    stop_pool(&pool);
}

#[test]
fn shutdown_kills_grandchildren_too() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let r = pool.send_to(0, "/grandchild").unwrap();
    let grandchild: i32 = r
        .text
        .trim()
        .strip_prefix("grandchild ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {:?}", r.text));
    assert!(!is_gone(grandchild));
    stop_pool(&pool);
    assert_gone(&[r.pid, grandchild]);
}

#[test]
fn a_crash_with_a_grandchild_holding_the_pipes_is_still_noticed() {
    init_logs();
    // The grandchild keeps stdout open, so no EOF arrives: the exit must be seen by its pid.
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let r = pool.send_to(0, "/grandchild").unwrap();
    let grandchild: i32 = r.text.trim()["grandchild ".len()..].parse().unwrap();
    let err = pool.send_to(0, "/crash 7").unwrap_err();
    match &err {
        Error::InstanceDied { exit, pid, .. } => {
            assert_eq!(*exit, Some(aim::ExitInfo::Code(7)));
            assert_eq!(*pid, r.pid);
        }
        other => panic!("expected InstanceDied, got {other}"),
    }
    assert_eq!(err.prompt(), Some("/crash 7"));
    // The group was killed when its leader died: no orphaned grandchild.
    assert_gone(&[r.pid, grandchild]);
    stop_pool(&pool);
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    init_logs();
    let spec = demo(&["--ignore-sigterm"]);
    let mut spec = spec;
    spec.quit_command = Some("/hang".into()); // the quit command does nothing useful
    spec.stop_grace = Duration::from_millis(300);
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let pid = pool.send_to(0, "/pid").unwrap().pid;
    let report = pool.shutdown();
    assert_eq!(report.instances[0].method, StopMethod::Killed);
    assert_eq!(report.instances[0].exit, Some(aim::ExitInfo::Signal(9)));
    assert!(
        report.took >= Duration::from_millis(600),
        "quit and SIGTERM each get the grace"
    );
    assert_gone(&[pid]);
}

#[test]
fn dropping_the_last_handle_stops_everything() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 2).unwrap();
    let pids: Vec<i32> = pool.status().iter().map(|s| s.pid).collect();
    assert!(pids.iter().all(|&p| p > 0));
    let clone = pool.clone();
    drop(pool);
    assert!(!is_gone(pids[0]), "a clone still holds the pool");
    drop(clone);
    assert_gone(&pids);
}

#[test]
fn status_reports_state_generation_and_stderr() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    pool.send_to(0, "/flood-stderr 200").unwrap();
    let status = &pool.status()[0];
    assert_eq!(status.state, InstanceState::Ready);
    assert_eq!(status.generation, 1);
    assert!(status.alive);
    assert!(status.uptime > Duration::ZERO);
    assert!(
        status
            .last_stderr
            .iter()
            .any(|l| l.contains("stderr noise")),
        "{:?}",
        status.last_stderr
    );
    stop_pool(&pool);
}

#[test]
fn queue_capacity_turns_extra_prompts_away_with_busy() {
    init_logs();
    let pool = ToolProcessPool::builder(demo(&[]))
        .count(1)
        .queue_capacity(2)
        .launch()
        .unwrap();
    let slow = pool.submit_to(0, "/sleep 300").unwrap();
    let queued = pool.submit_to(0, "queued").unwrap();
    let err = pool.submit_to(0, "one too many").unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");
    assert_eq!(err.into_prompt().as_deref(), Some("one too many"));
    assert_eq!(slow.instance(), Some(0));
    assert_eq!(slow.wait().unwrap().text, "slept\n");
    assert!(queued.wait().unwrap().text.contains("queued"));
    stop_pool(&pool);
}

#[test]
fn children_never_inherit_each_others_pipes() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 6).unwrap();
    let fds = |pid: i32| -> Vec<(String, String)> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let target = std::fs::read_link(e.path()).ok()?.display().to_string();
                Some((e.file_name().to_string_lossy().into_owned(), target))
            })
            .collect()
    };
    let pids: Vec<i32> = pool.status().iter().map(|s| s.pid).collect();
    // Each child's stdin, stdout and stderr: three pipes of its own.
    let own: Vec<Vec<String>> = pids
        .iter()
        .map(|&pid| {
            fds(pid)
                .into_iter()
                .filter(|(n, _)| ["0", "1", "2"].contains(&n.as_str()))
                .map(|(_, t)| t)
                .collect()
        })
        .collect();
    for (i, &pid) in pids.iter().enumerate() {
        assert_eq!(own[i].len(), 3);
        assert!(
            own[i].iter().all(|t| t.starts_with("pipe:")),
            "{:?}",
            own[i]
        );
        for (_, target) in fds(pid) {
            for (j, other) in own.iter().enumerate() {
                if j != i {
                    assert!(
                        !other.contains(&target),
                        "pid {pid} holds {target} of instance {j}"
                    );
                }
            }
        }
    }
    stop_pool(&pool);
}

#[test]
fn children_start_with_no_blocked_signals() {
    init_logs();
    // I/O threads block SIGPIPE for themselves; the children they spawn must not inherit it.
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let pid = pool.status()[0].pid;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let blocked = status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(u64::from_str_radix(&blocked, 16).unwrap(), 0, "{blocked}");
    stop_pool(&pool);
}

#[test]
fn restart_instance_lets_the_answer_in_flight_finish_first() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let before = pool.send_to(0, "/pid").unwrap();
    let slow = pool.submit_to(0, "/sleep 300").unwrap();
    wait_until(Duration::from_secs(10), "the sleep to start", || {
        pool.status()[0]
            .last_stderr
            .iter()
            .any(|l| l.contains("sleeping 300"))
    });
    pool.restart_instance(0).unwrap();
    // The answer in flight was drained, not cut off; the next comes from a new process.
    assert_eq!(slow.wait().unwrap().text, "slept\n");
    let after = pool.send_to(0, "/pid").unwrap();
    assert_eq!(after.generation, before.generation + 1);
    assert_gone(&[before.pid]);
    stop_pool(&pool);
}
