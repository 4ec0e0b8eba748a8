//! Instances on another host over real OpenSSH (an sshd on 127.0.1.x in its own PID
//! namespace, as in tests/remote.rs): per-prompt round trip of `cat` through `aim relay`
//! next to a plain `ssh -T host cat` driver in the same run, and the time from killing the
//! remote tool to its instance's next answer (restart over the host's control connection),
//! and the time from freezing the host's `sshd` sessions (SIGSTOP) with an answer in flight to
//! that answer failing (a silent link noticed).
//!
//! `cargo bench --bench remote` (full run; needs root and sshd, else it says SKIPPED);
//! `cargo test --benches` runs a tiny iteration.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aim::{ClusterManager, Framing, ToolSpec};
use common::*;
use support::sshd;

fn plain_ssh(hosts: &sshd::SshHosts, iterations: usize) -> Vec<Duration> {
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(&hosts.config)
        .args(["-T", "h0", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ssh");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        writeln!(stdin, "ping {i}").unwrap();
        stdin.flush().unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        samples.push(t.elapsed());
    }
    drop(stdin);
    let _ = child.wait();
    samples
}

fn cluster(hosts: &sshd::SshHosts) -> ClusterManager {
    let spec = ToolSpec::new("cat", "cat")
        .framing(Framing::Line)
        .stop_grace(Duration::from_millis(500));
    ClusterManager::builder(spec)
        .count(1)
        .hosts(["h0"])
        .ssh_config(&hosts.config)
        .remote_aim(env!("CARGO_BIN_EXE_aim"))
        .supervision(
            aim::SupervisionConfig::default()
                .backoff(
                    // A fixed 10 ms restart delay: the figure is the restart's own cost.
                    aim::BackoffConfig::default()
                        .base(Duration::from_millis(10))
                        .max(Duration::from_millis(10))
                        .jitter(aim::Jitter::None),
                )
                .budget(aim::BudgetConfig::default().max_restarts(10_000))
                .breaker(aim::BreakerConfig::default().failure_threshold(10_000)),
        )
        .launch()
        .expect("cluster over ssh")
}

fn over_relay(cluster: &ClusterManager, iterations: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        let r = cluster.send_to(0, format!("ping {i}")).expect("answer");
        samples.push(t.elapsed());
        assert_eq!(r.text, format!("ping {i}"));
    }
    samples
}

fn restarts(hosts: &sshd::SshHosts, cluster: &ClusterManager, count: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        cluster.send_to(0, "warm").expect("answer");
        let cats = hosts.hosts[0].processes("cat");
        assert_eq!(cats.len(), 1, "{cats:?}");
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(cats[0]),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // Pinned: waits for the restarted process. A prompt that reached the killed one
        // before its exit was seen fails with InstanceDied: send it again.
        let r = loop {
            match cluster.send_to(0, format!("after {i}")) {
                Err(aim::Error::InstanceDied { .. }) => continue,
                other => break other.expect("answer after restart"),
            }
        };
        samples.push(t.elapsed());
        assert_eq!(r.text, format!("after {i}"));
    }
    samples
}

/// Freezes the host's `sshd` sessions with a prompt in flight: how long until the answer
/// fails (the link taken for lost). Each sample runs its own cluster; the sessions are
/// thawed afterwards.
fn silent_links(hosts: &sshd::SshHosts, count: usize) -> Vec<Duration> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let cluster = ClusterManager::builder(support::demo(&[]))
            .count(1)
            .hosts(["h0"])
            .ssh_config(&hosts.config)
            .remote_aim(env!("CARGO_BIN_EXE_aim"))
            .launch()
            .expect("launch");
        cluster.send("/echo up").expect("first answer");
        let ticket = cluster.submit("/sleep 60000").expect("submit");
        support::wait_until(Duration::from_secs(10), "the answer in flight", || {
            cluster.metrics().cluster.in_flight == 1
        });
        let sessions = hosts.hosts[0].session_pids();
        for pid in &sessions {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
        let t = Instant::now();
        let result = ticket.wait();
        samples.push(t.elapsed());
        assert!(result.is_err(), "{result:?}");
        for pid in &sessions {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGCONT);
        }
        cluster.shutdown();
    }
    samples
}

fn main() {
    let Some(hosts) = sshd::SshHosts::start(1) else {
        println!(
            "{}",
            serde_json::json!({"bench": "remote", "skipped": true})
        );
        return;
    };
    let n = iterations(2_000, 20);
    let kills = iterations(30, 2);
    // One session starts at a time: a login shell's startup files (pyenv's rehash, say) may
    // take a lock that concurrent sessions wait on.
    let cluster = cluster(&hosts);
    over_relay(&cluster, n / 10 + 1);
    plain_ssh(&hosts, n / 10 + 1);
    let plain = summarize(&mut plain_ssh(&hosts, n));
    let relay = summarize(&mut over_relay(&cluster, n));
    print_summary("plain ssh -T cat write/read", &plain);
    print_summary("aim --host, cat via relay", &relay);
    println!(
        "per-prompt overhead over ssh: {:.1}us (median)",
        us(relay.median) - us(plain.median)
    );
    let restart = summarize(&mut restarts(&hosts, &cluster, kills));
    print_summary("remote tool killed -> next answer", &restart);
    cluster.shutdown();
    let silent = summarize(&mut silent_links(&hosts, iterations(10, 1)));
    print_summary("sshd frozen -> answer in flight fails", &silent);
    println!(
        "{}",
        serde_json::json!({"bench": "remote", "iterations": n, "plain_ssh": summary_json(&plain),
            "relay": summary_json(&relay), "overhead_us": us(relay.median) - us(plain.median),
            "restart_to_answer": summary_json(&restart), "silent_link": summary_json(&silent)})
    );
}
