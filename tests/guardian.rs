//! Nothing outlives the supervisor: when it dies by any means (SIGKILL included), every
//! tool process group it started is killed, grandchildren included.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Every descendant of `pid` (children, grandchildren, ...), from /proc.

#[test]
fn sigkill_of_aim_run_leaves_no_tool_or_grandchild_running() {
    init_logs();
    let _w = watchdog("guardian", Duration::from_secs(60));
    let mut aim = Command::new(env!("CARGO_BIN_EXE_aim"))
        .args(["run", "demo", "-n", "2", "-s", "least-busy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = aim.stdin.take().unwrap();
    // Each instance starts a grandchild that sleeps forever and holds the tool's stdout.
    stdin.write_all(b"/grandchild\n/grandchild\n").unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(aim.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.contains("grandchild"), "{line}");
    }
    let tree = descendants(aim.id());
    // 2 tools + 2 grandchildren (+ the guardian, once there is one).
    assert!(tree.len() >= 4, "{tree:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(aim.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = aim.wait();
    // stdin stays open until here: the run was killed, not ended.
    drop(stdin);
    wait_until(Duration::from_secs(10), "every descendant gone", || {
        tree.iter().all(|&pid| is_gone(pid))
    });
}

const LIBRARY_PROGRAM: &str = "AIM_TEST_LIBRARY_PROGRAM";

#[test]
fn sigkill_of_a_library_program_leaves_no_tool_or_grandchild_running() {
    if std::env::var_os(LIBRARY_PROGRAM).is_some() {
        // The library program: a cluster whose tools start grandchildren, then it waits.
        let cluster = aim::ClusterManager::builder(demo(&[]))
            .count(2)
            .launch()
            .unwrap();
        for i in 0..2 {
            cluster.send_to(i, "/grandchild").unwrap();
        }
        println!("READY");
        let _ = std::io::stdout().flush();
        loop {
            std::thread::park();
        }
    }
    init_logs();
    let _w = watchdog("guardian, library program", Duration::from_secs(60));
    let mut program = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_of_a_library_program_leaves_no_tool_or_grandchild_running",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(LIBRARY_PROGRAM, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(program.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the program ended early"
        );
    }
    let tree = descendants(program.id());
    assert!(tree.len() >= 4, "{tree:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(program.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = program.wait();
    wait_until(Duration::from_secs(10), "every descendant gone", || {
        tree.iter().all(|&pid| is_gone(pid))
    });
}
