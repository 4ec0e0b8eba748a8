//! Failover: time from SIGKILL of an instance to its replacement answering, over 100 kills of
//! the demo agent. The monitor's `waitpid` poll stays at its 5 s default: the restart must
//! come from the exit being noticed at once, not from the poll. Backoff is the default except
//! `reset_after` (100 ms), and each kill comes after a healthy run longer than that, so each
//! restart is the immediate "first restart after a healthy run".
//!
//! `cargo bench --bench failover`; `cargo test --benches` runs a tiny iteration.

mod common;

use std::time::{Duration, Instant};

use aim::{BackoffConfig, ClusterManager, Error, SupervisionConfig, ToolRegistry};
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn demo_spec() -> aim::ToolSpec {
    let mut spec = ToolRegistry::builtin().get("demo").expect("demo");
    spec.program = env!("CARGO_BIN_EXE_aim-demo").to_string();
    spec
}

fn main() {
    let kills = iterations(100, 3);
    let supervision = SupervisionConfig::default()
        .backoff(BackoffConfig::default().reset_after(Duration::from_millis(100)))
        .budget(aim::BudgetConfig::default().max_restarts(10_000))
        .breaker(aim::BreakerConfig::default().failure_threshold(10_000));
    let cluster = ClusterManager::builder(demo_spec())
        .count(3)
        .supervision(supervision)
        .launch()
        .expect("cluster");
    let mut samples = Vec::with_capacity(kills);
    for _ in 0..kills {
        let before = cluster.send_to(0, "/pid").expect("answer before the kill");
        // A healthy run longer than reset_after.
        std::thread::sleep(Duration::from_millis(150));
        kill(Pid::from_raw(before.pid), Signal::SIGKILL).expect("kill");
        let killed = Instant::now();
        loop {
            match cluster.send_to_timeout(0, "ping", Duration::from_secs(30)) {
                Ok(r) if r.generation > before.generation => break,
                Ok(_) | Err(Error::InstanceDied { .. }) => continue,
                Err(e) => panic!("unexpected error during failover: {e}"),
            }
        }
        samples.push(killed.elapsed());
    }
    cluster.shutdown();
    let s = summarize(&mut samples);
    print_summary("SIGKILL -> replacement answering", &s);
    println!(
        "{}",
        serde_json::json!({"bench": "failover", "kills": kills, "failover": summary_json(&s)})
    );
}
