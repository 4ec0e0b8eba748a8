//! Round-trip time of one `cat` instance in line framing through the pool, next to a bare
//! write/read loop over a `cat` child in the same run.
//!
//! `cargo bench --bench roundtrip` (full run); `cargo test --benches` runs a tiny iteration.

mod common;

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use aim::{Framing, ToolProcessPool, ToolSpec};
use common::*;

fn bare(iterations: usize) -> Vec<Duration> {
    let (mut child, mut stdin, mut stdout) = spawn_cat();
    let mut line = String::new();
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        writeln!(stdin, "ping {i}").expect("write");
        stdin.flush().expect("flush");
        line.clear();
        stdout.read_line(&mut line).expect("read");
        samples.push(t.elapsed());
    }
    drop(stdin);
    let _ = child.wait();
    samples
}

fn pooled(iterations: usize) -> Vec<Duration> {
    let spec = ToolSpec::new("cat", "cat").framing(Framing::Line);
    let pool = ToolProcessPool::new(spec, 1).expect("pool");
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let t = Instant::now();
        let r = pool.send_to(0, format!("ping {i}")).expect("answer");
        samples.push(t.elapsed());
        assert_eq!(r.text, format!("ping {i}"));
    }
    pool.shutdown();
    samples
}

fn main() {
    let n = iterations(20_000, 200);
    let runs = if full_run() { 5 } else { 1 };
    // Warm up both paths.
    bare(n / 10 + 1);
    pooled(n / 10 + 1);
    let (mut bare_medians, mut pool_medians) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let b = summarize(&mut bare(n));
        let p = summarize(&mut pooled(n));
        print_summary(&format!("run {run}: bare cat write/read"), &b);
        print_summary(&format!("run {run}: pool send_to(cat)"), &p);
        bare_medians.push(us(b.median));
        pool_medians.push(us(p.median));
    }
    let b = median(&mut bare_medians);
    let p = median(&mut pool_medians);
    println!(
        "median of run medians: bare {b:.1}us, pool {p:.1}us, overhead {:.1}us",
        p - b
    );
    println!(
        "{}",
        serde_json::json!({"bench": "roundtrip", "iterations": n, "runs": runs,
            "bare_median_us": b, "pool_median_us": p, "overhead_us": p - b})
    );
}
