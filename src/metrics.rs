//! Metrics: per-instance recording on the hot path, and [`MetricsSnapshot`] built on demand.
//!
//! Each instance's I/O thread is the only writer of that instance's counters, histogram and
//! last-minute ring: recording is a few relaxed atomic adds with no lock shared by all
//! instances. A snapshot reads every instance and merges: cluster latency percentiles come
//! from merged histograms (never averages of averages), success rate is completed / (completed
//! + failed) and is `None` when there was no traffic. See `docs/metrics.md`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::breaker::CircuitState;
use crate::error::Error;
use crate::histogram::{AtomicHistogram, Histogram};
use crate::state::ExitInfo;
use crate::state::{ExitCause, InstanceState};

/// The failure kinds counted per instance (public as [`MetricsSnapshot::FAILURE_KINDS`]).
pub(crate) const FAILURE_KINDS: [&str; 4] = ["timeout", "died", "rejected", "error"];

/// The restart reasons counted per instance: every [`ExitCause`] after which the monitor
/// starts a new process (a shutdown never does). Public as
/// [`MetricsSnapshot::RESTART_REASONS`].
pub(crate) const RESTART_REASONS: [ExitCause; 11] = [
    ExitCause::Crashed,
    ExitCause::SpawnFailed,
    ExitCause::NotReady,
    ExitCause::Timeout,
    ExitCause::TooLarge,
    ExitCause::ProbeFailed,
    ExitCause::Retired,
    ExitCause::Manual,
    ExitCause::Protocol,
    ExitCause::Memory,
    ExitCause::HostDown,
];

pub(crate) fn failure_kind(error: &Error) -> usize {
    match error {
        Error::Timeout { .. } => 0,
        Error::InstanceDied { .. } => 1,
        Error::Busy { .. }
        | Error::NoHealthyInstance { .. }
        | Error::InstanceUnavailable { .. }
        | Error::Shutdown { .. }
        | Error::InvalidPrompt { .. } => 2,
        _ => 3,
    }
}

/// Seconds since the first use, for the last-minute ring.
fn mono_secs(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    now.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
        .as_secs()
}

/// Completions per second over the last 60 s: one slot per second, stamped with its second.
#[derive(Debug)]
struct MinuteRing {
    stamps: [AtomicU64; 60],
    counts: [AtomicU64; 60],
}

impl Default for MinuteRing {
    fn default() -> Self {
        MinuteRing {
            stamps: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl MinuteRing {
    /// Single writer (the instance's I/O thread).
    fn add(&self, now: Instant) {
        let s = mono_secs(now) + 1; // 0 marks an empty slot
        let i = (s % 60) as usize;
        if self.stamps[i].load(Ordering::Relaxed) != s {
            self.counts[i].store(0, Ordering::Relaxed);
            self.stamps[i].store(s, Ordering::Relaxed);
        }
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Completions in the 60 s before `now`.
    fn last_minute(&self, now: Instant) -> u64 {
        let s = mono_secs(now) + 1;
        (0..60)
            .filter(|&i| {
                let stamp = self.stamps[i].load(Ordering::Relaxed);
                stamp != 0 && s.saturating_sub(stamp) < 60
            })
            .map(|i| self.counts[i].load(Ordering::Relaxed))
            .sum()
    }
}

/// Counters and a latency histogram for one instance, written by its I/O thread.
#[derive(Debug)]
pub(crate) struct InstanceStats {
    enabled: bool,
    pub sent: AtomicU64,
    /// Always counted (status reports it), even with metrics off.
    pub completed: AtomicU64,
    pub failed: [AtomicU64; FAILURE_KINDS.len()],
    pub restarts: [AtomicU64; RESTART_REASONS.len()],
    pub latency: AtomicHistogram,
    pub uptime_total_us: AtomicU64,
    pub busy: AtomicBool,
    /// Bytes of output that arrived outside any answer.
    pub stray_output: AtomicU64,
    /// Tokens of answered turns: input, output, cache reads, cache writes.
    pub tokens: [AtomicU64; 4],
    /// Cost of answered turns, in nano-dollars.
    pub cost_nano_usd: AtomicU64,
    /// Tool uses denied.
    pub denials: AtomicU64,
    minute: MinuteRing,
}

impl InstanceStats {
    pub(crate) fn new(enabled: bool) -> Self {
        InstanceStats {
            enabled,
            sent: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: Default::default(),
            restarts: Default::default(),
            latency: AtomicHistogram::default(),
            uptime_total_us: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            stray_output: AtomicU64::new(0),
            tokens: Default::default(),
            cost_nano_usd: AtomicU64::new(0),
            denials: AtomicU64::new(0),
            minute: MinuteRing::default(),
        }
    }

    /// Adds what an answered turn used and how many tool uses were denied (always counted,
    /// like `completed`: they are bills and refusals, not diagnostics).
    pub(crate) fn on_usage(
        &self,
        usage: Option<crate::protocol::Usage>,
        cost_usd: Option<f64>,
        denials: usize,
    ) {
        if let Some(u) = usage {
            let kinds = [
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens,
            ];
            for (counter, n) in self.tokens.iter().zip(kinds) {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        if let Some(cost) = cost_usd.filter(|c| c.is_finite() && *c > 0.0) {
            self.cost_nano_usd
                .fetch_add((cost * 1e9).round() as u64, Ordering::Relaxed);
        }
        self.denials.fetch_add(denials as u64, Ordering::Relaxed);
    }

    /// The totals so far.
    pub(crate) fn usage_totals(&self) -> UsageTotals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        UsageTotals {
            input_tokens: load(&self.tokens[0]),
            output_tokens: load(&self.tokens[1]),
            cache_read_tokens: load(&self.tokens[2]),
            cache_write_tokens: load(&self.tokens[3]),
            cost_usd: load(&self.cost_nano_usd) as f64 / 1e9,
            denials: load(&self.denials),
        }
    }

    /// Counts output outside any answer (always, like `completed`: it signals a framing
    /// problem).
    pub(crate) fn on_stray_output(&self, bytes: usize) {
        self.stray_output.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Answers in the last 60 s.
    pub(crate) fn responses_last_minute(&self, now: Instant) -> u64 {
        self.minute.last_minute(now)
    }

    pub(crate) fn on_sent(&self) {
        if self.enabled {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn on_success(&self, latency: Duration) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if self.enabled {
            self.latency.record(latency);
            self.minute.add(Instant::now());
        }
    }

    /// Counts a failed prompt (a cancellation is the caller's choice, not a failure).
    pub(crate) fn on_failure(&self, error: &Error) {
        if self.enabled && !matches!(error, Error::Cancelled { .. }) {
            self.failed[failure_kind(error)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn on_restart(&self, cause: ExitCause) {
        if let Some(i) = RESTART_REASONS.iter().position(|c| *c == cause) {
            self.restarts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_uptime(&self, uptime: Duration) {
        let us = u64::try_from(uptime.as_micros()).unwrap_or(u64::MAX);
        self.uptime_total_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// A latency distribution in seconds: count, sum, extremes, mean and percentiles (from a
/// histogram with under 1% relative error). Every field but `count` and `sum_s` is `None`
/// when there were no values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// How many values.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_s: f64,
    /// The smallest.
    pub min_s: Option<f64>,
    /// The largest.
    pub max_s: Option<f64>,
    /// The mean.
    pub mean_s: Option<f64>,
    /// The median.
    pub p50_s: Option<f64>,
    /// The 90th percentile.
    pub p90_s: Option<f64>,
    /// The 99th percentile.
    pub p99_s: Option<f64>,
}

impl LatencySummary {
    /// Summarises a histogram.
    pub fn of(h: &Histogram) -> Self {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        LatencySummary {
            count: h.count,
            sum_s: h.sum_us as f64 / 1e6,
            min_s: secs(h.min()),
            max_s: secs(h.max()),
            mean_s: secs(h.mean()),
            p50_s: secs(h.quantile(0.5)),
            p90_s: secs(h.quantile(0.9)),
            p99_s: secs(h.quantile(0.99)),
        }
    }
}

/// Tokens, cost and denials summed over answered turns, as the tools reported them (see
/// [`Usage`](crate::protocol::Usage); turns whose tool reports nothing add nothing).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct UsageTotals {
    /// Fresh input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// Cost in US dollars, where the tool reports one.
    pub cost_usd: f64,
    /// Tool uses denied (including turns failed with [`Error::Denied`]).
    pub denials: u64,
}

impl UsageTotals {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &UsageTotals) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost_usd += other.cost_usd;
        self.denials += other.denials;
    }

    /// The token counts by kind, named as on `/metrics` (`input`, `output`, `cache_read`,
    /// `cache_write`).
    pub fn tokens_by_kind(&self) -> [(&'static str, u64); 4] {
        [
            ("input", self.input_tokens),
            ("output", self.output_tokens),
            ("cache_read", self.cache_read_tokens),
            ("cache_write", self.cache_write_tokens),
        ]
    }
}

/// One instance's metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceMetrics {
    /// The instance index.
    pub index: usize,
    /// Its state.
    pub state: InstanceState,
    /// Its circuit breaker's state.
    pub circuit: CircuitState,
    /// The current pid (0 when none).
    pub pid: i32,
    /// Processes started so far.
    pub generation: u64,
    /// Prompts written to the tool.
    pub prompts_sent: u64,
    /// Answers received.
    pub responses: u64,
    /// Failures by kind: `timeout`, `died`, `rejected`, `error`.
    pub failures: BTreeMap<String, u64>,
    /// Prompts being answered now (0 or 1).
    pub in_flight: u64,
    /// Prompts queued behind it.
    pub queued: u64,
    /// Answer latency (submission to complete answer).
    pub latency: LatencySummary,
    /// The histogram behind `latency`, for merging and export.
    pub histogram: Histogram,
    /// Answers in the last 60 s.
    pub responses_last_minute: u64,
    /// Restarts by reason (`crashed`, `timeout`, `retired`, ...).
    pub restarts: BTreeMap<String, u64>,
    /// Time since the current process started, in seconds.
    pub uptime_s: f64,
    /// Time all its processes have run, in seconds.
    pub total_uptime_s: f64,
    /// How the previous process ended.
    pub last_exit: Option<ExitInfo>,
    /// Resident memory of the process and its descendants, from `/proc`, when readable.
    pub rss_bytes: Option<u64>,
    /// Bytes of output that arrived outside any answer (dropped, never attributed to one).
    #[serde(default)]
    pub stray_output_bytes: u64,
    /// Tokens, cost and denials of its answered turns.
    #[serde(default)]
    pub usage: UsageTotals,
}

impl InstanceMetrics {
    /// All failures, of every kind.
    pub fn failures_total(&self) -> u64 {
        self.failures.values().sum()
    }

    /// All restarts, for every reason.
    pub fn restarts_total(&self) -> u64 {
        self.restarts.values().sum()
    }
}

/// Cluster-wide figures, computed from the instances (weighted, never averaged averages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterMetrics {
    /// Prompts written to tools, all instances.
    pub prompts_sent: u64,
    /// Answers received, all instances.
    pub responses: u64,
    /// Failures by kind, all instances plus prompts refused before reaching one.
    pub failures: BTreeMap<String, u64>,
    /// Of those, the prompts that failed before reaching any instance: `rejected` (busy, no
    /// healthy instance, invalid) and `timeout` (waited too long for one).
    pub dispatch_failures: BTreeMap<String, u64>,
    /// responses / (responses + failures); `None` with no traffic.
    pub success_rate: Option<f64>,
    /// Answers per second since launch.
    pub throughput_per_s: f64,
    /// Answers per second over the last minute (or since launch, if shorter).
    pub throughput_last_minute_per_s: f64,
    /// Latency over all answers: the instances' histograms merged.
    pub latency: LatencySummary,
    /// The merged histogram.
    pub histogram: Histogram,
    /// How many instances are in each state.
    pub instances_by_state: BTreeMap<String, usize>,
    /// Prompts being answered now.
    pub in_flight: u64,
    /// Prompts queued on instances plus those waiting in the backlog.
    pub queue_depth: u64,
    /// Prompts waiting for an eligible instance.
    pub backlog: u64,
    /// Restarts, all instances.
    pub restarts: u64,
    /// Tokens, cost and denials, all instances.
    #[serde(default)]
    pub usage: UsageTotals,
}

/// Counters for prompts refused or expired before reaching any instance.
#[derive(Debug, Default)]
pub(crate) struct DispatchStats {
    pub rejected: AtomicU64,
    pub timed_out: AtomicU64,
}

impl DispatchStats {
    pub(crate) fn on_refused(&self, error: &Error) {
        if matches!(error, Error::Cancelled { .. }) {
            return;
        }
        let counter = if error.is_timeout() {
            &self.timed_out
        } else {
            &self.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything measured about a cluster at one moment. Serialisable (and deserialisable, so
/// snapshots can be stored and compared); [`MetricsSnapshot::to_prometheus`] renders the
/// Prometheus text format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// The tool id.
    pub tool: String,
    /// The routing strategy.
    pub strategy: String,
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub taken_at_unix_ms: u64,
    /// Time since launch, in seconds.
    pub uptime_s: f64,
    /// Per instance.
    pub instances: Vec<InstanceMetrics>,
    /// The cluster as a whole.
    pub cluster: ClusterMetrics,
    /// Per host, when the instances run on other hosts (empty: this machine).
    #[serde(default)]
    pub hosts: Vec<crate::host_state::HostStatus>,
}

impl MetricsSnapshot {
    /// The failure kinds counted per instance, in the order of the Prometheus series.
    pub const FAILURE_KINDS: [&'static str; 4] = FAILURE_KINDS;

    /// The restart reasons counted per instance: every [`ExitCause`] after which the monitor
    /// starts a new process.
    pub const RESTART_REASONS: [ExitCause; 11] = RESTART_REASONS;

    /// Builds a snapshot from per-instance metrics plus the dispatcher's own counts.
    pub(crate) fn build(
        tool: &str,
        strategy: &str,
        uptime: Duration,
        instances: Vec<InstanceMetrics>,
        backlog: u64,
        refused: (u64, u64),
    ) -> Self {
        let mut histogram = Histogram::default();
        let mut failures: BTreeMap<String, u64> =
            FAILURE_KINDS.iter().map(|k| (k.to_string(), 0)).collect();
        let mut by_state: BTreeMap<String, usize> = InstanceState::all()
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        let (mut sent, mut responses, mut in_flight, mut queued, mut restarts, mut minute) =
            (0, 0, 0, 0, 0, 0);
        let mut usage = UsageTotals::default();
        for m in &instances {
            usage.add(&m.usage);
            histogram.merge(&m.histogram);
            for (k, v) in &m.failures {
                *failures.entry(k.clone()).or_default() += v;
            }
            *by_state.entry(m.state.as_str().to_string()).or_default() += 1;
            sent += m.prompts_sent;
            responses += m.responses;
            in_flight += m.in_flight;
            queued += m.queued;
            restarts += m.restarts_total();
            minute += m.responses_last_minute;
        }
        *failures.entry("timeout".into()).or_default() += refused.1;
        *failures.entry("rejected".into()).or_default() += refused.0;
        let failed: u64 = failures.values().sum();
        let secs = uptime.as_secs_f64();
        let cluster = ClusterMetrics {
            prompts_sent: sent,
            responses,
            success_rate: (responses + failed > 0)
                .then(|| responses as f64 / (responses + failed) as f64),
            failures,
            dispatch_failures: [
                ("rejected".to_string(), refused.0),
                ("timeout".to_string(), refused.1),
            ]
            .into_iter()
            .collect(),
            throughput_per_s: if secs > 0.0 {
                responses as f64 / secs
            } else {
                0.0
            },
            throughput_last_minute_per_s: minute as f64 / secs.clamp(1e-9, 60.0),
            latency: LatencySummary::of(&histogram),
            histogram,
            instances_by_state: by_state,
            in_flight,
            queue_depth: queued + backlog,
            backlog,
            restarts,
            usage,
        };
        MetricsSnapshot {
            tool: tool.to_string(),
            strategy: strategy.to_string(),
            taken_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            uptime_s: secs,
            instances,
            cluster,
            hosts: Vec::new(),
        }
    }

    /// The snapshot as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(index: usize, latencies_ms: &[u64], failures: u64) -> InstanceMetrics {
        let mut histogram = Histogram::default();
        for &ms in latencies_ms {
            histogram.record(Duration::from_millis(ms));
        }
        InstanceMetrics {
            index,
            state: InstanceState::Ready,
            circuit: CircuitState::Closed,
            pid: 100 + index as i32,
            generation: 1,
            prompts_sent: latencies_ms.len() as u64 + failures,
            responses: latencies_ms.len() as u64,
            failures: FAILURE_KINDS
                .iter()
                .map(|k| (k.to_string(), if *k == "died" { failures } else { 0 }))
                .collect(),
            in_flight: 0,
            queued: 0,
            latency: LatencySummary::of(&histogram),
            histogram,
            responses_last_minute: latencies_ms.len() as u64,
            restarts: BTreeMap::new(),
            uptime_s: 1.0,
            total_uptime_s: 1.0,
            last_exit: None,
            rss_bytes: None,
            stray_output_bytes: 0,
            usage: UsageTotals::default(),
        }
    }

    #[test]
    fn cluster_latency_is_weighted_not_an_average_of_averages() {
        // One instance answered 1 prompt in 1 s; another 99 prompts in 10 ms each.
        let slow = instance(0, &[1000], 0);
        let fast = instance(1, &[10; 99], 0);
        let snap = MetricsSnapshot::build(
            "t",
            "rr",
            Duration::from_secs(10),
            vec![slow, fast],
            0,
            (0, 0),
        );
        let mean = snap.cluster.latency.mean_s.unwrap();
        // Weighted: (1 + 99 * 0.01) / 100 = 0.0199 s; the average of averages would be 0.505 s.
        assert!((mean - 0.0199).abs() < 0.0005, "{mean}");
        let p50 = snap.cluster.latency.p50_s.unwrap();
        assert!((p50 - 0.010).abs() / 0.010 < 0.01, "{p50}");
        assert_eq!(snap.cluster.responses, 100);
    }

    #[test]
    fn no_traffic_means_no_success_rate_not_one_hundred_percent() {
        let idle = instance(0, &[], 0);
        let snap = MetricsSnapshot::build("t", "rr", Duration::from_secs(1), vec![idle], 0, (0, 0));
        assert_eq!(snap.cluster.success_rate, None);
        assert_eq!(snap.cluster.latency.p99_s, None);
        assert_eq!(snap.instances[0].latency.mean_s, None);
    }

    #[test]
    fn success_rate_counts_failures_and_refusals() {
        let a = instance(0, &[5, 5, 5], 1);
        let snap = MetricsSnapshot::build("t", "rr", Duration::from_secs(1), vec![a], 2, (1, 1));
        // 3 answers; 1 died + 1 refused + 1 expired in the backlog.
        assert_eq!(snap.cluster.success_rate, Some(0.5));
        assert_eq!(snap.cluster.failures["died"], 1);
        assert_eq!(snap.cluster.failures["rejected"], 1);
        assert_eq!(snap.cluster.failures["timeout"], 1);
        assert_eq!(snap.cluster.queue_depth, 2);
    }

    #[test]
    fn snapshots_round_trip_through_json() {
        let snap = MetricsSnapshot::build(
            "demo",
            "round-robin",
            Duration::from_secs(3),
            vec![instance(0, &[1, 2, 3], 0), instance(1, &[], 2)],
            0,
            (0, 0),
        );
        let back: MetricsSnapshot = serde_json::from_str(&snap.to_json()).unwrap();
        assert_eq!(back, snap);
    }

    #[test]
    fn the_minute_ring_forgets_old_seconds() {
        mono_secs(Instant::now());
        let ring = MinuteRing::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            ring.add(t0);
        }
        ring.add(t0 + Duration::from_secs(30));
        assert_eq!(ring.last_minute(t0 + Duration::from_secs(30)), 6);
        assert_eq!(ring.last_minute(t0 + Duration::from_secs(75)), 1);
        assert_eq!(ring.last_minute(t0 + Duration::from_secs(200)), 0);
        // A slot reused a minute later starts from zero.
        ring.add(t0 + Duration::from_secs(60));
        assert_eq!(ring.last_minute(t0 + Duration::from_secs(61)), 2);
    }
}
