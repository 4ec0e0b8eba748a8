//! Helpers shared by the benchmarks: run mode, summary statistics, the final JSON line.
#![allow(dead_code)]

use std::io::BufReader;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// A `cat` child with piped stdin and buffered stdout, for the bare baselines.
pub fn spawn_cat() -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cat");
    let stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    (child, stdin, stdout)
}

/// True under `cargo bench` (which passes `--bench`); false under `cargo test --benches`,
/// where each benchmark runs a tiny iteration just to stay alive.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Picks `full` under `cargo bench`, `tiny` otherwise.
pub fn iterations(full: usize, tiny: usize) -> usize {
    if full_run() {
        full
    } else {
        tiny
    }
}

/// min, median, p99 and max of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub min: Duration,
    pub median: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub n: usize,
}

pub fn summarize(samples: &mut [Duration]) -> Summary {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let at =
        |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    Summary {
        min: samples[0],
        median: at(0.5),
        p99: at(0.99),
        max: samples[samples.len() - 1],
        n: samples.len(),
    }
}

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn print_summary(name: &str, s: &Summary) {
    println!(
        "{name:40} n={:<7} min={:>9.1}us median={:>9.1}us p99={:>9.1}us max={:>9.1}us",
        s.n,
        us(s.min),
        us(s.median),
        us(s.p99),
        us(s.max)
    );
}

pub fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({
        "n": s.n,
        "min_us": us(s.min),
        "median_us": us(s.median),
        "p99_us": us(s.p99),
        "max_us": us(s.max),
    })
}

/// Median of a list of numbers.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[values.len() / 2]
}
