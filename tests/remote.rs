//! Instances on other hosts over real OpenSSH: `sshd` on 127.0.1.x in its own PID namespace
//! per host (tests/support/sshd.rs), keys and an ssh config per run, `aim relay` on the far
//! side. Skipped (said on stderr) without root or sshd.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use aim::{ClusterManager, Error, Framing, InstanceState, ToolRegistry};
use support::sshd::SshHosts;
use support::*;

fn aim_bin() -> &'static str {
    env!("CARGO_BIN_EXE_aim")
}

fn cluster_on(hosts: &SshHosts, spec: aim::ToolSpec, count: usize) -> ClusterManager {
    ClusterManager::builder(spec)
        .count(count)
        .hosts(hosts.aliases())
        .ssh_config(&hosts.config)
        .remote_aim(aim_bin())
        .supervision(fast_supervision())
        .launch()
        .unwrap()
}

fn python() -> Option<aim::ToolSpec> {
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return None;
    }
    Some(ToolRegistry::builtin().get("python").unwrap())
}

#[test]
fn answers_come_from_two_hosts() {
    init_logs();
    let Some(hosts) = SshHosts::start(2) else {
        return;
    };
    let _w = watchdog("answers over two hosts", Duration::from_secs(120));
    let cluster = cluster_on(&hosts, demo(&[]), 4);
    let mut seen = Vec::new();
    for i in 0..4 {
        let answer = cluster.send_to(i, format!("/echo from {i}")).unwrap();
        assert_eq!(answer.text.trim(), format!("from {i}"));
        seen.push(answer.host.unwrap());
    }
    assert_eq!(seen, ["h0", "h1", "h0", "h1"]);
    // Each tool runs on its host, not here.
    assert_eq!(hosts.hosts[0].processes("aim-demo").len(), 2);
    assert_eq!(hosts.hosts[1].processes("aim-demo").len(), 2);
    stop_cluster(&cluster);
    wait_until(Duration::from_secs(5), "no tool left on the hosts", || {
        hosts
            .hosts
            .iter()
            .all(|h| h.processes("aim-demo").is_empty())
    });
}

#[test]
fn sigkill_of_the_supervisor_leaves_no_remote_process() {
    init_logs();
    let Some(hosts) = SshHosts::start(2) else {
        return;
    };
    if python().is_none() {
        return;
    }
    let _w = watchdog("supervisor SIGKILL", Duration::from_secs(120));
    let config = hosts.config.display().to_string();
    let mut run = spawn_aim([
        "run",
        "python",
        "-n",
        "2",
        "--host",
        "h0",
        "--host",
        "h1",
        "--ssh-config",
        &config,
        "--remote-aim",
        aim_bin(),
    ]);
    let mut stdin = run.stdin.take().unwrap();
    writeln!(stdin, "import time; time.sleep(60)").unwrap();
    writeln!(stdin, "import time; time.sleep(60)").unwrap();
    stdin.flush().unwrap();
    wait_until(
        Duration::from_secs(60),
        "python sleeping on both hosts",
        || {
            hosts.hosts.iter().all(|h| {
                h.processes("python3")
                    .iter()
                    .any(|pid| sleeping_in_clock_nanosleep(*pid))
            })
        },
    );
    run.kill().unwrap();
    let _ = run.wait();
    let killed = Instant::now();
    wait_until(Duration::from_secs(5), "no python left on any host", || {
        hosts
            .hosts
            .iter()
            .all(|h| h.processes("python3").is_empty())
    });
    eprintln!("remote tools gone {:?} after SIGKILL", killed.elapsed());
    drop(stdin);
}

/// Whether `pid` is blocked in `clock_nanosleep` (`time.sleep`), from `/proc/PID/syscall`.
fn sleeping_in_clock_nanosleep(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.starts_with("230 ") || s.starts_with("35 "))
}

#[test]
fn cancel_of_a_remote_turn_interrupts_the_tool() {
    init_logs();
    let Some(hosts) = SshHosts::start(1) else {
        return;
    };
    let Some(spec) = python() else { return };
    let _w = watchdog("remote cancel", Duration::from_secs(120));
    let cluster = cluster_on(&hosts, spec, 1);
    let before = cluster.send("x = 7").unwrap();
    let ticket = cluster.submit("import time; time.sleep(30)").unwrap();
    wait_until(Duration::from_secs(20), "the remote sleep", || {
        hosts.hosts[0]
            .processes("python3")
            .iter()
            .any(|pid| sleeping_in_clock_nanosleep(*pid))
    });
    let began = Instant::now();
    ticket.cancel();
    let result = ticket.wait();
    assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
    assert!(began.elapsed() < Duration::from_secs(20));
    // KeyboardInterrupt on the far side: the same REPL, its state kept.
    let after = cluster.send("print(x)").unwrap();
    assert_eq!(after.text, "7\n");
    assert_eq!(after.pid, before.pid);
    stop_cluster(&cluster);
}

#[test]
fn a_restarted_remote_instance_leaves_nothing_behind() {
    init_logs();
    let Some(hosts) = SshHosts::start(1) else {
        return;
    };
    let Some(spec) = python() else { return };
    let _w = watchdog("remote restart", Duration::from_secs(120));
    let cluster = cluster_on(&hosts, spec, 1);
    cluster.send("x = 1").unwrap();
    let first = hosts.hosts[0].processes("python3");
    assert_eq!(first.len(), 1, "{first:?}");
    for round in 0..3 {
        cluster.restart_instance(0).unwrap();
        wait_until(Duration::from_secs(30), "the instance back", || {
            cluster.status()[0].state == InstanceState::Ready
                && cluster.status()[0].generation == round + 2
        });
        assert_eq!(cluster.send("print(2)").unwrap().text, "2\n");
        wait_until(Duration::from_secs(5), "one python on the host", || {
            hosts.hosts[0].processes("python3").len() == 1
        });
    }
    assert!(first
        .iter()
        .all(|pid| !hosts.hosts[0].all_pids().contains(pid)));
    stop_cluster(&cluster);
    wait_until(Duration::from_secs(5), "no python left", || {
        hosts.hosts[0].processes("python3").is_empty()
    });
}

#[test]
fn work_moves_off_a_dead_host_and_the_host_returns() {
    init_logs();
    let Some(mut hosts) = SshHosts::start(2) else {
        return;
    };
    let _w = watchdog("host down and back", Duration::from_secs(180));
    let cluster = cluster_on(&hosts, demo(&[]), 2);
    assert_eq!(
        cluster.send_to(1, "/echo b").unwrap().host.as_deref(),
        Some("h1")
    );
    hosts.hosts[1].kill();
    wait_until(
        Duration::from_secs(30),
        "h1's instance noticed down",
        || cluster.status()[1].state != InstanceState::Ready,
    );
    for i in 0..4 {
        let answer = cluster.send(format!("/echo moved {i}")).unwrap();
        assert_eq!(answer.host.as_deref(), Some("h0"));
    }
    hosts.hosts[1].start();
    hosts.hosts[1].wait_listening();
    wait_until(Duration::from_secs(60), "h1's instance back", || {
        cluster.status()[1].state == InstanceState::Ready
    });
    assert_eq!(
        cluster.send_to(1, "/echo back").unwrap().host.as_deref(),
        Some("h1")
    );
    stop_cluster(&cluster);
}

#[test]
fn a_silent_link_is_noticed() {
    init_logs();
    let Some(hosts) = SshHosts::start(1) else {
        return;
    };
    let _w = watchdog("silent link", Duration::from_secs(120));
    let cluster = cluster_on(&hosts, demo(&[]), 1);
    cluster.send("/echo up").unwrap();
    let ticket = cluster.submit("/sleep 60000").unwrap();
    wait_until(Duration::from_secs(10), "the answer in flight", || {
        cluster.metrics().cluster.in_flight == 1
    });
    // Freeze the far side's sshd sessions: the TCP connection stays, nothing moves on it.
    let sessions = hosts.hosts[0].session_pids();
    assert!(!sessions.is_empty());
    for pid in &sessions {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
    }
    let stopped = Instant::now();
    let result = ticket.wait();
    let noticed = stopped.elapsed();
    eprintln!("silent link noticed after {noticed:?}: {result:?}");
    // The relay stopped answering pings (sent every 2 s): taken for lost after 8 s of
    // silence, so 6-8 s after the stop, before OpenSSH's own keepalives (about 12 s).
    match &result {
        Err(Error::InstanceDied { stderr, .. }) => assert!(
            stderr
                .iter()
                .any(|l| l.contains("nothing from the relay on h0")),
            "{stderr:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(noticed >= Duration::from_secs(5), "{noticed:?}");
    // The bound (issue 19): noticed within 15 s, with 7 s to spare.
    assert!(noticed < Duration::from_secs(15), "{noticed:?}");
    stop_cluster(&cluster);
}

#[test]
fn await_read_framing_works_remotely() {
    init_logs();
    let Some(hosts) = SshHosts::start(1) else {
        return;
    };
    let _w = watchdog("remote await_read", Duration::from_secs(120));
    let spec = demo(&[]).framing(Framing::Prompt {
        marker: "> ".into(),
        stream: aim::Stream::Stdout,
        settle: Duration::ZERO,
        await_read: true,
    });
    let cluster = cluster_on(&hosts, spec, 1);
    // A prompt-looking line, a pause, then the rest: only the far side's read(0) check
    // knows the answer is not over at the pause.
    let answer = cluster.send("/stall 300").unwrap();
    assert!(answer.text.lines().count() > 1, "{answer:?}");
    let answer = cluster.send("/quote").unwrap();
    assert!(answer.text.contains("> "), "{answer:?}");
    stop_cluster(&cluster);
}
