//! Hosts are supervised: a host whose sshd dies is checked, reported down in `health()` and
//! the metrics, its prompts go to the other host at once, its instances are not restarted
//! against it, and they return when it does. Real OpenSSH `sshd` per host on 127.0.1.x in
//! its own PID namespace (tests/support/sshd.rs). Skipped (said on stderr) without root or
//! sshd.

mod support;

use std::time::{Duration, Instant};

use aim::{ClusterManager, Error, HostState, InstanceState};
use support::sshd::SshHosts;
use support::*;

/// Far longer than the test's own deadline: a prompt that waited for an instance's timeout
/// would trip the watchdog.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

fn cluster_on(hosts: &SshHosts, count: usize) -> ClusterManager {
    ClusterManager::builder(demo(&[]))
        .count(count)
        .hosts(hosts.aliases())
        .ssh_config(&hosts.config)
        .remote_aim(env!("CARGO_BIN_EXE_aim"))
        .supervision(fast_supervision())
        .request_timeout(REQUEST_TIMEOUT)
        .launch()
        .unwrap()
}

fn host_state(cluster: &ClusterManager, host: usize) -> HostState {
    cluster.health().hosts[host].state
}

#[test]
fn a_dead_host_goes_down_its_work_moves_and_it_returns() {
    init_logs();
    let Some(mut hosts) = SshHosts::start(2) else {
        return;
    };
    let _w = watchdog("host down and back", Duration::from_secs(150));
    let cluster = cluster_on(&hosts, 4);
    let health = cluster.health();
    assert_eq!(health.hosts.len(), 2);
    assert!(health.hosts.iter().all(|h| h.is_up()), "{health:?}");
    assert_eq!(health.hosts[1].instances, [1, 3]);
    assert_eq!(health.instances[1].host.as_deref(), Some("h1"));
    // A prompt in flight on h1 when it dies.
    let in_flight = cluster.submit_to(1, "/sleep 300000").unwrap();
    wait_until(Duration::from_secs(10), "the answer in flight", || {
        cluster.metrics().instances[1].in_flight == 1
    });

    hosts.hosts[1].kill();
    let killed = Instant::now();
    // New prompts answer from h0 at once. Until its links are seen to end, h1 looks ready:
    // a prompt placed there in those milliseconds dies with it, and is resent (idempotent).
    let mut first_elsewhere = None;
    for i in 0..6 {
        let request = aim::Request::new(format!("/echo moved {i}")).idempotent(true);
        let answer = cluster.send(request).unwrap();
        assert_eq!(answer.text.trim(), format!("moved {i}"));
        assert_eq!(answer.host.as_deref(), Some("h0"), "{answer:?}");
        first_elsewhere.get_or_insert(killed.elapsed());
    }
    // Once the host is suspect, nothing is placed on it.
    wait_until(Duration::from_secs(30), "h1 no longer up", || {
        host_state(&cluster, 1) != HostState::Up
    });
    for i in 0..4 {
        let answer = cluster.send(format!("/echo plain {i}")).unwrap();
        assert_eq!(answer.host.as_deref(), Some("h0"), "{answer:?}");
    }
    let result = in_flight.wait();
    assert!(
        matches!(result, Err(Error::InstanceDied { instance: 1, .. })),
        "{result:?}"
    );
    wait_until(Duration::from_secs(30), "h1 reported down", || {
        host_state(&cluster, 1) == HostState::Down
    });
    let down_after = killed.elapsed();
    eprintln!(
        "sshd killed: first prompt answered elsewhere after {:?}, host down after {down_after:?}",
        first_elsewhere.unwrap()
    );
    assert!(host_state(&cluster, 0) == HostState::Up);

    // Down: checked on backoff, its instances not restarted against it.
    let generations: Vec<u64> = cluster.status().iter().map(|s| s.generation).collect();
    let checks_failed = |c: &ClusterManager| c.health().hosts[1].checks["failed"];
    let before = checks_failed(&cluster);
    wait_until(Duration::from_secs(30), "three more failed checks", || {
        checks_failed(&cluster) >= before + 3
    });
    let status = cluster.status();
    for i in [1, 3] {
        assert_eq!(status[i].generation, generations[i], "{:?}", status[i]);
        assert_ne!(status[i].state, InstanceState::Ready);
    }
    let metrics = cluster.metrics();
    assert_eq!(metrics.hosts[1].state, HostState::Down);
    assert!(metrics.hosts[1].failures >= 1);
    let text = metrics.to_prometheus();
    assert!(
        text.contains("aim_host_up{tool=\"demo\",host=\"h1\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("aim_host_up{tool=\"demo\",host=\"h0\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("aim_host_state{tool=\"demo\",host=\"h1\",state=\"down\"} 1"),
        "{text}"
    );
    // Still served while down.
    assert_eq!(
        cluster.send("/echo still").unwrap().host.as_deref(),
        Some("h0")
    );

    hosts.hosts[1].start();
    hosts.hosts[1].wait_listening();
    wait_until(Duration::from_secs(60), "h1 up with its instances", || {
        let health = cluster.health();
        health.hosts[1].is_up()
            && [1, 3]
                .iter()
                .all(|&i| health.instances[i].state == InstanceState::Ready)
    });
    for i in [1, 3] {
        let answer = cluster.send_to(i, "/echo back").unwrap();
        assert_eq!(answer.host.as_deref(), Some("h1"));
        assert_eq!(answer.text.trim(), "back");
    }
    let h1 = &cluster.health().hosts[1];
    assert!(
        h1.transitions["down"] >= 1 && h1.transitions["up"] >= 1,
        "{h1:?}"
    );
    assert!(h1.checks["ok"] >= 1, "{h1:?}");
    stop_cluster(&cluster);
    hosts.wait_until_none_left("aim-demo");
}

#[test]
fn a_crashed_tool_on_a_healthy_host_leaves_it_up() {
    init_logs();
    let Some(hosts) = SshHosts::start(1) else {
        return;
    };
    let _w = watchdog("tool crash, host up", Duration::from_secs(120));
    let cluster = cluster_on(&hosts, 2);
    cluster.send_to(0, "/echo a").unwrap();
    let pids = hosts.hosts[0].processes("aim-demo");
    assert_eq!(pids.len(), 2, "{pids:?}");
    // Kill one tool on the far side: its relay reports the exit, the link was not lost.
    for pid in &pids[..1] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    wait_until(
        Duration::from_secs(30),
        "both instances ready again",
        || {
            cluster.status().iter().map(|s| s.generation).sum::<u64>() == 3
                && cluster
                    .status()
                    .iter()
                    .all(|s| s.state == InstanceState::Ready)
        },
    );
    let h0 = &cluster.health().hosts[0];
    assert!(h0.is_up(), "{h0:?}");
    assert_eq!(h0.transitions["down"], 0, "{h0:?}");
    for i in 0..2 {
        assert_eq!(cluster.send_to(i, "/echo ok").unwrap().text.trim(), "ok");
    }
    stop_cluster(&cluster);
}

#[test]
fn an_idempotent_prompt_in_flight_on_a_dead_host_is_answered_by_another() {
    init_logs();
    let Some(mut hosts) = SshHosts::start(2) else {
        return;
    };
    let _w = watchdog(
        "idempotent resend off a dead host",
        Duration::from_secs(120),
    );
    let cluster = cluster_on(&hosts, 2);
    // h0 busy for a while, so the routed prompt goes to h1's idle instance.
    let busy = cluster.submit_to(0, "/sleep 1500").unwrap();
    wait_until(Duration::from_secs(10), "h0 busy", || {
        cluster.metrics().instances[0].in_flight == 1
    });
    let ticket = cluster
        .submit(aim::Request::new("/sleep 500").idempotent(true))
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the prompt in flight on h1",
        || cluster.metrics().instances[1].in_flight == 1,
    );
    hosts.hosts[1].kill();
    let answer = ticket.wait().unwrap();
    assert_eq!(answer.host.as_deref(), Some("h0"), "{answer:?}");
    assert_eq!(answer.instance, 0);
    assert!(busy.wait().is_ok());
    wait_until(Duration::from_secs(30), "h1 reported down", || {
        host_state(&cluster, 1) == HostState::Down
    });
    stop_cluster(&cluster);
}

/// Sends `signal` to every process of `host` (its sshd, sessions, relays and tools).
fn signal_host(host: &support::sshd::SshHost, signal: nix::sys::signal::Signal) {
    for pid in host.all_pids() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

#[test]
fn a_frozen_host_goes_down_when_its_check_gets_no_answer_and_returns_when_thawed() {
    use nix::sys::signal::Signal;
    init_logs();
    let Some(hosts) = SshHosts::start(2) else {
        return;
    };
    let _w = watchdog("frozen host", Duration::from_secs(150));
    let cluster = cluster_on(&hosts, 2);
    assert_eq!(
        cluster.send_to(1, "/echo b").unwrap().host.as_deref(),
        Some("h1")
    );
    // Everything on h1 stopped: its TCP connections stay open, nothing answers on them.
    signal_host(&hosts.hosts[1], Signal::SIGSTOP);
    let frozen = Instant::now();
    // Until the silence is noticed, a prompt placed on h1 waits there; idempotent, it is
    // resent to h0 when h1's link ends.
    for i in 0..3 {
        let request = aim::Request::new(format!("/echo during {i}")).idempotent(true);
        let answer = cluster.send(request).unwrap();
        assert_eq!(answer.host.as_deref(), Some("h0"), "{answer:?}");
    }
    wait_until(Duration::from_secs(60), "h1 reported down", || {
        host_state(&cluster, 1) == HostState::Down
    });
    eprintln!("frozen host reported down after {:?}", frozen.elapsed());
    for i in 0..3 {
        let answer = cluster.send(format!("/echo down {i}")).unwrap();
        assert_eq!(answer.host.as_deref(), Some("h0"), "{answer:?}");
    }
    assert!(cluster.health().hosts[1].checks["failed"] >= 1);
    signal_host(&hosts.hosts[1], Signal::SIGCONT);
    wait_until(Duration::from_secs(60), "h1 up with its instance", || {
        let health = cluster.health();
        health.hosts[1].is_up() && health.instances[1].state == InstanceState::Ready
    });
    assert_eq!(
        cluster.send_to(1, "/echo thawed").unwrap().host.as_deref(),
        Some("h1")
    );
    stop_cluster(&cluster);
}
