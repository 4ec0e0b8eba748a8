//! Routing cost and end-to-end throughput.
//!
//! 1. Nanoseconds per selection for each router at 5, 100 and 1000 instances, on one thread
//!    and with 8 threads contending for the router under a lock (as the cluster holds it).
//! 2. Prompts per second through a cluster of 5 `cat` instances in line framing with 16
//!    concurrent senders, next to a bare write/read loop over 5 `cat` children (one thread
//!    per child) in the same run.
//!
//! `cargo bench --bench routing`; `cargo test --benches` runs a tiny iteration.

mod common;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use aim::{
    Candidate, CircuitState, ClusterManager, Framing, InstanceState, RouteContext, Strategy,
    ToolSpec,
};
use common::*;
use parking_lot::Mutex;

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            index: i,
            state: InstanceState::Ready,
            pending: (i * 7919) % 5,
            capacity: 64,
            circuit: CircuitState::Closed,
            generation: 1,
            stuck: false,
        })
        .collect()
}

fn selection_ns(strategy: Strategy, n: usize, threads: usize, iterations: usize) -> f64 {
    let router = Arc::new(Mutex::new(strategy.router()));
    let snapshot = Arc::new(candidates(n));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let router = Arc::clone(&router);
            let snapshot = Arc::clone(&snapshot);
            std::thread::spawn(move || {
                let key = format!("session-{t}");
                let mut sink = 0usize;
                for i in 0..iterations {
                    let session =
                        (strategy == Strategy::Sticky && i % 2 == 0).then_some(key.as_str());
                    let ctx = RouteContext { session };
                    sink = sink.wrapping_add(router.lock().select(&snapshot, &ctx).unwrap_or(0));
                }
                sink
            })
        })
        .collect();
    let mut total = 0usize;
    for h in handles {
        total = total.wrapping_add(h.join().expect("thread"));
    }
    std::hint::black_box(total);
    start.elapsed().as_nanos() as f64 / (iterations * threads) as f64
}

fn cluster_throughput(prompts: usize, senders: usize, metrics: bool) -> f64 {
    let spec = ToolSpec::new("cat", "cat").framing(Framing::Line);
    let cluster = ClusterManager::builder(spec)
        .count(5)
        .strategy(Strategy::LeastBusy)
        .record_metrics(metrics)
        .launch()
        .expect("cluster");
    let per = prompts / senders;
    let start = Instant::now();
    let handles: Vec<_> = (0..senders)
        .map(|t| {
            let cluster = cluster.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let r = cluster.send(format!("t{t} p{i}")).expect("answer");
                    assert_eq!(r.text.len(), format!("t{t} p{i}").len());
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().expect("sender"));
    let rate = (per * senders) as f64 / start.elapsed().as_secs_f64();
    cluster.shutdown();
    rate
}

fn bare_throughput(prompts: usize) -> f64 {
    let per = prompts / 5;
    let start = Instant::now();
    let handles: Vec<_> = (0..5)
        .map(|c| {
            std::thread::spawn(move || {
                let (mut child, mut stdin, mut stdout) = spawn_cat();
                let mut line = String::new();
                for i in 0..per {
                    writeln!(stdin, "c{c} p{i}").expect("write");
                    stdin.flush().expect("flush");
                    line.clear();
                    stdout.read_line(&mut line).expect("read");
                }
                drop(stdin);
                let _ = child.wait();
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().expect("bare"));
    (per * 5) as f64 / start.elapsed().as_secs_f64()
}

/// One thread, round-robin over 5 `cat` children: the plain write/read loop.
fn bare_single_thread(prompts: usize) -> f64 {
    let mut children: Vec<_> = (0..5).map(|_| spawn_cat()).collect();
    let mut line = String::new();
    let start = Instant::now();
    for i in 0..prompts {
        let (_, stdin, stdout) = &mut children[i % 5];
        writeln!(stdin, "p{i}").expect("write");
        stdin.flush().expect("flush");
        line.clear();
        stdout.read_line(&mut line).expect("read");
    }
    let rate = prompts as f64 / start.elapsed().as_secs_f64();
    for (mut child, stdin, _) in children {
        drop(stdin);
        let _ = child.wait();
    }
    rate
}

fn main() {
    let rounds = iterations(200_000, 2_000);
    let mut selection = Vec::new();
    for strategy in Strategy::ALL {
        for n in [5, 100, 1000] {
            let single = selection_ns(strategy, n, 1, rounds);
            let contended = selection_ns(strategy, n, 8, rounds / 8);
            println!(
                "select {:12} n={n:<5} 1 thread {single:8.1} ns   8 threads {contended:8.1} ns",
                strategy.as_str()
            );
            selection.push(
                serde_json::json!({"strategy": strategy.as_str(), "instances": n,
                "ns_single": single, "ns_8_threads": contended}),
            );
        }
    }
    let prompts = iterations(50_000, 500);
    let runs = if full_run() { 3 } else { 1 };
    let (mut cluster_rates, mut bare_rates, mut single_rates, mut off_rates) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let single = bare_single_thread(prompts);
        let bare = bare_throughput(prompts);
        let cluster = cluster_throughput(prompts, 16, true);
        let off = cluster_throughput(prompts, 16, false);
        println!(
            "run {run}: bare loop 1 thread {single:9.0}/s   bare 5 threads {bare:9.0}/s   \
             cluster (16 senders) {cluster:9.0}/s   metrics off {off:9.0}/s"
        );
        single_rates.push(single);
        bare_rates.push(bare);
        cluster_rates.push(cluster);
        off_rates.push(off);
    }
    let single = median(&mut single_rates);
    let bare = median(&mut bare_rates);
    let cluster = median(&mut cluster_rates);
    let off = median(&mut off_rates);
    println!(
        "median: metrics on {cluster:.0}/s, off {off:.0}/s ({:+.1}%)",
        100.0 * (cluster / off - 1.0)
    );
    println!(
        "median: cluster = {:.0}% of the one-thread bare loop, {:.0}% of five bare threads",
        100.0 * cluster / single,
        100.0 * cluster / bare
    );
    println!(
        "{}",
        serde_json::json!({"bench": "routing", "selection": selection,
            "bare_single_thread_prompts_per_s": single,
            "bare_five_threads_prompts_per_s": bare, "cluster_prompts_per_s": cluster,
            "cluster_metrics_off_prompts_per_s": off,
            "cluster_vs_single": cluster / single, "cluster_vs_five_threads": cluster / bare})
    );
}
