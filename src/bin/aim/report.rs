//! Human-readable summaries on stderr.

use aim::MetricsSnapshot;

fn ms(seconds: Option<f64>) -> String {
    seconds
        .map(|s| format!("{:.1} ms", s * 1000.0))
        .unwrap_or_else(|| "-".into())
}

pub fn print_metrics_summary(m: &MetricsSnapshot) {
    let c = &m.cluster;
    let failed: u64 = c.failures.values().sum();
    eprintln!(
        "aim: {} x {} ({}): {} answered, {} failed, success {}, p50 {}, p99 {}, {:.1}/s, {} restarts",
        m.instances.len(),
        m.tool,
        m.strategy,
        c.responses,
        failed,
        c.success_rate
            .map(|r| format!("{:.2}%", r * 100.0))
            .unwrap_or_else(|| "-".into()),
        ms(c.latency.p50_s),
        ms(c.latency.p99_s),
        c.throughput_per_s,
        c.restarts
    );
}
