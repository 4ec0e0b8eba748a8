//! Human-readable summaries on stderr.

use aim::MetricsSnapshot;

fn ms(seconds: Option<f64>) -> String {
    seconds
        .map(|s| format!("{:.1} ms", s * 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// The run's summary line: `answered` and `failed` are the run's own counts (what its
/// output lines and exit code say, bad input lines included); latency, throughput and
/// restarts come from the cluster.
pub fn print_metrics_summary(m: &MetricsSnapshot, answered: usize, failed: usize) {
    let c = &m.cluster;
    let total = answered + failed;
    eprintln!(
        "aim: {} x {} ({}): {} answered, {} failed, success {}, p50 {}, p99 {}, {:.1}/s, {} restarts",
        m.instances.len(),
        m.tool,
        m.strategy,
        answered,
        failed,
        if total == 0 {
            "-".to_string()
        } else {
            format!("{:.2}%", answered as f64 * 100.0 / total as f64)
        },
        ms(c.latency.p50_s),
        ms(c.latency.p99_s),
        c.throughput_per_s,
        c.restarts
    );
    let u = &c.usage;
    let tokens = u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens;
    if tokens > 0 || u.cost_usd > 0.0 || u.denials > 0 {
        eprintln!(
            "aim: usage: {} input, {} output, {} cache read, {} cache write tokens; cost ${:.6}; {} denied",
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.cost_usd,
            u.denials
        );
    }
}
