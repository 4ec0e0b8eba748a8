//! Supervisor memory and launch time: resident memory of this process (the supervisor, not
//! the children) with 10, 100 and 1000 instances of `cat`, and the time to launch them all
//! ready, plus one prompt to every instance to show they all work.
//!
//! `cargo bench --bench memory`; `cargo test --benches` runs 10 and 20 instances only.

mod common;

use std::time::Instant;

use aim::{ClusterManager, Framing, Strategy, ToolSpec};
use common::*;

fn rss_kib() -> u64 {
    aim::resident_memory_bytes(std::process::id() as i32, false).unwrap_or(0) / 1024
}

fn main() {
    let sizes: &[usize] = if full_run() {
        &[10, 100, 200, 500, 1000]
    } else {
        &[10, 20]
    };
    let mut rows = Vec::new();
    for &n in sizes {
        let before = rss_kib();
        let started = Instant::now();
        let cluster = ClusterManager::builder(ToolSpec::new("cat", "cat").framing(Framing::Line))
            .count(n)
            .strategy(Strategy::RoundRobin)
            .raise_fd_limit(true)
            .launch()
            .expect("launch");
        let launch = started.elapsed();
        let tickets: Vec<_> = (0..n)
            .map(|i| cluster.submit(format!("hello {i}")).expect("submit"))
            .collect();
        for t in tickets {
            t.wait().expect("answer");
        }
        let after = rss_kib();
        let per_instance = (after.saturating_sub(before)) as f64 / n as f64;
        let report = cluster.shutdown();
        assert!(report.all_reaped());
        println!(
            "{n:5} x cat: launched ready in {:>8.1} ms, supervisor RSS {before} -> {after} KiB \
             ({per_instance:.1} KiB per instance), shut down in {:.1} ms",
            launch.as_secs_f64() * 1000.0,
            report.took.as_secs_f64() * 1000.0
        );
        rows.push(
            serde_json::json!({"instances": n, "launch_ms": launch.as_secs_f64() * 1000.0,
            "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_instance": per_instance,
            "shutdown_ms": report.took.as_secs_f64() * 1000.0}),
        );
    }
    println!("{}", serde_json::json!({"bench": "memory", "rows": rows}));
}
