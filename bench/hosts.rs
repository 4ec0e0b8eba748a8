//! A host dying under a cluster, over real OpenSSH (two sshd on 127.0.1.x, each in its own
//! PID namespace, as in tests/remote_hosts.rs): from killing one host's sshd (and everything
//! under it) to the first answer to a prompt sent at that moment (idempotent: one that
//! reached the dying host is resent), and to the host being reported down in `health()`;
//! then from starting the sshd again to the host's instances answering again.
//!
//! `cargo bench --bench hosts` (full run: 10 rounds; needs root and sshd, else it says
//! SKIPPED); `cargo test --benches` runs one round.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use aim::{ClusterManager, Framing, HostState, InstanceState, Request, ToolSpec};
use common::*;
use support::sshd;

fn cluster(hosts: &sshd::SshHosts) -> ClusterManager {
    let spec = ToolSpec::new("cat", "cat")
        .framing(Framing::Line)
        .stop_grace(Duration::from_millis(500));
    ClusterManager::builder(spec)
        .count(4)
        .hosts(hosts.aliases())
        .ssh_config(&hosts.config)
        .remote_aim(env!("CARGO_BIN_EXE_aim"))
        .request_timeout(Duration::from_secs(600))
        .supervision(
            aim::SupervisionConfig::default().backoff(
                aim::BackoffConfig::default()
                    .base(Duration::from_millis(50))
                    .max(Duration::from_millis(500)),
            ),
        )
        .launch()
        .expect("cluster over ssh")
}

/// Polls `cond` every millisecond for up to 60 s; the time it took.
fn time_until(since: Instant, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    while !cond() {
        assert!(since.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    since.elapsed()
}

struct Round {
    answered: Duration,
    down: Duration,
    back: Duration,
}

fn round() -> Option<Round> {
    let mut hosts = sshd::SshHosts::start(2)?;
    let cluster = cluster(&hosts);
    for i in 0..4 {
        cluster.send_to(i, "warm").expect("answer");
    }
    hosts.hosts[1].kill();
    let killed = Instant::now();
    let answer = cluster
        .send(Request::new("moved").idempotent(true))
        .expect("an answer from h0");
    let answered = killed.elapsed();
    assert_eq!(answer.host.as_deref(), Some("h0"));
    let down = time_until(killed, "h1 down", || {
        cluster.health().hosts[1].state == HostState::Down
    });
    hosts.hosts[1].start();
    let started = Instant::now();
    let back = time_until(started, "h1 back", || {
        let health = cluster.health();
        health.hosts[1].is_up()
            && [1, 3]
                .iter()
                .all(|&i| health.instances[i].state == InstanceState::Ready)
    });
    assert_eq!(
        cluster
            .send_to(1, "back")
            .expect("h1 answers")
            .host
            .as_deref(),
        Some("h1")
    );
    cluster.shutdown();
    Some(Round {
        answered,
        down,
        back,
    })
}

fn main() {
    let rounds = iterations(10, 1);
    let mut results = Vec::new();
    for _ in 0..rounds {
        match round() {
            Some(r) => results.push(r),
            None => {
                println!("{}", serde_json::json!({"bench": "hosts", "skipped": true}));
                return;
            }
        }
    }
    let mut answered: Vec<Duration> = results.iter().map(|r| r.answered).collect();
    let mut down: Vec<Duration> = results.iter().map(|r| r.down).collect();
    let mut back: Vec<Duration> = results.iter().map(|r| r.back).collect();
    let answered = summarize(&mut answered);
    let down = summarize(&mut down);
    let back = summarize(&mut back);
    print_summary(
        "sshd killed -> first new prompt answered elsewhere",
        &answered,
    );
    print_summary("sshd killed -> host reported down", &down);
    print_summary("sshd started -> host up, its instances ready", &back);
    println!(
        "{}",
        serde_json::json!({"bench": "hosts", "rounds": rounds,
            "killed_to_answer": summary_json(&answered),
            "killed_to_down": summary_json(&down),
            "started_to_up": summary_json(&back)})
    );
}
