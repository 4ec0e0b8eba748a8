//! The Prometheus text exposition format (0.0.4) for a [`MetricsSnapshot`].
//!
//! Conventions: every name starts with `aim_`, counters end in `_total`, durations are in
//! seconds, each family has its `# HELP` and `# TYPE` lines and all its samples together.
//! Labels are `tool` and `instance` (plus `kind`, `reason`, `state`, `le`; `host` and
//! `result` on the per-host families); session keys never appear in labels (they are
//! unbounded).

use std::fmt::Write;

use crate::breaker::CircuitState;
use crate::histogram::PROMETHEUS_BOUNDS;
use crate::metrics::{InstanceMetrics, MetricsSnapshot};
use crate::state::InstanceState;

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Writer {
    out: String,
    tool: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "{name}{{tool=\"{}\"", self.tool);
        for (k, v) in labels {
            let _ = write!(self.out, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.out, "}} {}", format_value(value));
    }

    /// One sample per instance.
    fn per_instance(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        instances: &[InstanceMetrics],
        value: impl Fn(&InstanceMetrics) -> Option<f64>,
    ) {
        self.family(name, kind, help);
        for m in instances {
            if let Some(v) = value(m) {
                let index = m.index.to_string();
                self.sample(name, &[("instance", &index)], v);
            }
        }
    }
}

impl Writer {
    /// Several samples per instance, told apart by one more label (`kind`, `reason`, `state`).
    fn per_instance_by(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        instances: &[InstanceMetrics],
        label: &str,
        values: impl Fn(&InstanceMetrics) -> Vec<(String, f64)>,
    ) {
        self.family(name, kind, help);
        for m in instances {
            let index = m.index.to_string();
            for (value_label, v) in values(m) {
                self.sample(name, &[("instance", &index), (label, &value_label)], v);
            }
        }
    }
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> Vec<(String, f64)> {
    map.iter().map(|(k, v)| (k.clone(), *v as f64)).collect()
}

/// 1 for the label equal to `current`, 0 for the others.
fn one_hot<'a>(all: impl Iterator<Item = &'a str>, current: &str) -> Vec<(String, f64)> {
    all.map(|s| (s.to_string(), if s == current { 1.0 } else { 0.0 }))
        .collect()
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl MetricsSnapshot {
    /// The snapshot in the Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        render(self)
    }
}

pub(crate) fn render(snap: &MetricsSnapshot) -> String {
    let mut w = Writer {
        out: String::with_capacity(4096 + snap.instances.len() * 4096),
        tool: escape(&snap.tool),
    };
    let instances = &snap.instances;
    w.per_instance(
        "aim_prompts_sent_total",
        "counter",
        "Prompts written to a tool instance.",
        instances,
        |m| Some(m.prompts_sent as f64),
    );
    w.per_instance(
        "aim_responses_total",
        "counter",
        "Complete answers received from a tool instance.",
        instances,
        |m| Some(m.responses as f64),
    );
    w.per_instance_by(
        "aim_failures_total",
        "counter",
        "Prompts an instance failed, by kind (timeout, died, rejected, error).",
        instances,
        "kind",
        |m| counts(&m.failures),
    );
    w.family(
        "aim_dispatch_failures_total",
        "counter",
        "Prompts that failed before reaching any instance, by kind (rejected, timeout).",
    );
    for (kind, v) in &snap.cluster.dispatch_failures {
        w.sample("aim_dispatch_failures_total", &[("kind", kind)], *v as f64);
    }
    w.per_instance_by(
        "aim_restarts_total",
        "counter",
        "Processes started to replace an instance's previous one, by reason.",
        instances,
        "reason",
        |m| counts(&m.restarts),
    );
    w.per_instance(
        "aim_stray_output_bytes_total",
        "counter",
        "Bytes a tool instance wrote outside any answer (dropped, never attributed to one).",
        instances,
        |m| Some(m.stray_output_bytes as f64),
    );
    w.per_instance_by(
        "aim_tokens_total",
        "counter",
        "Tokens of answered turns as the tool reported them, by kind (input, output, cache_read, cache_write).",
        instances,
        "kind",
        |m| {
            m.usage
                .tokens_by_kind()
                .iter()
                .map(|(k, v)| (k.to_string(), *v as f64))
                .collect()
        },
    );
    w.per_instance(
        "aim_cost_usd_total",
        "counter",
        "Cost of answered turns in US dollars, where the tool reports it.",
        instances,
        |m| Some(m.usage.cost_usd),
    );
    w.per_instance(
        "aim_denials_total",
        "counter",
        "Tool uses an agent was denied (permissions, approvals, answered questions).",
        instances,
        |m| Some(m.usage.denials as f64),
    );
    w.per_instance(
        "aim_in_flight",
        "gauge",
        "Prompts an instance is answering now.",
        instances,
        |m| Some(m.in_flight as f64),
    );
    w.per_instance(
        "aim_queued",
        "gauge",
        "Prompts queued on an instance behind the one in flight.",
        instances,
        |m| Some(m.queued as f64),
    );
    w.per_instance(
        "aim_instance_up",
        "gauge",
        "1 when the instance is ready for prompts, else 0.",
        instances,
        |m| {
            Some(if m.state == InstanceState::Ready {
                1.0
            } else {
                0.0
            })
        },
    );
    w.per_instance_by(
        "aim_instance_state",
        "gauge",
        "The instance's state: 1 for the current one.",
        instances,
        "state",
        |m| {
            one_hot(
                InstanceState::all().iter().map(|s| s.as_str()),
                m.state.as_str(),
            )
        },
    );
    w.per_instance_by(
        "aim_circuit_state",
        "gauge",
        "The instance's circuit breaker state: 1 for the current one.",
        instances,
        "state",
        |m| {
            let all = [
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
            ];
            one_hot(all.iter().map(|s| s.as_str()), m.circuit.as_str())
        },
    );
    w.per_instance(
        "aim_instance_generation",
        "gauge",
        "How many processes the instance has started.",
        instances,
        |m| Some(m.generation as f64),
    );
    w.per_instance(
        "aim_instance_uptime_seconds",
        "gauge",
        "Time since the instance's current process started.",
        instances,
        |m| Some(m.uptime_s),
    );
    w.per_instance(
        "aim_instance_run_seconds_total",
        "counter",
        "Time all of the instance's processes have run.",
        instances,
        |m| Some(m.total_uptime_s),
    );
    w.per_instance(
        "aim_instance_resident_memory_bytes",
        "gauge",
        "Resident memory of the instance's process and its descendants.",
        instances,
        |m| m.rss_bytes.map(|b| b as f64),
    );
    w.family(
        "aim_response_duration_seconds",
        "histogram",
        "Time from submitting a prompt to its complete answer.",
    );
    for m in instances {
        let index = m.index.to_string();
        let mut cumulative = 0;
        for (le, n) in PROMETHEUS_BOUNDS.iter().zip(m.histogram.prometheus.iter()) {
            cumulative += n;
            let le = format_value(*le);
            w.sample(
                "aim_response_duration_seconds_bucket",
                &[("instance", &index), ("le", &le)],
                cumulative as f64,
            );
        }
        w.sample(
            "aim_response_duration_seconds_bucket",
            &[("instance", &index), ("le", "+Inf")],
            m.histogram.count as f64,
        );
        w.sample(
            "aim_response_duration_seconds_sum",
            &[("instance", &index)],
            m.histogram.sum_us as f64 / 1e6,
        );
        w.sample(
            "aim_response_duration_seconds_count",
            &[("instance", &index)],
            m.histogram.count as f64,
        );
    }
    let c = &snap.cluster;
    w.family(
        "aim_backlog",
        "gauge",
        "Prompts waiting for an eligible instance.",
    );
    w.sample("aim_backlog", &[], c.backlog as f64);
    w.family(
        "aim_throughput_last_minute",
        "gauge",
        "Answers per second over the last minute.",
    );
    w.sample(
        "aim_throughput_last_minute",
        &[],
        c.throughput_last_minute_per_s,
    );
    if let Some(rate) = c.success_rate {
        w.family(
            "aim_success_ratio",
            "gauge",
            "Answers / (answers + failures) since launch; absent before any traffic.",
        );
        w.sample("aim_success_ratio", &[], rate);
    }
    w.family(
        "aim_uptime_seconds",
        "gauge",
        "Time since the cluster was launched.",
    );
    w.sample("aim_uptime_seconds", &[], snap.uptime_s);
    render_hosts(&mut w, &snap.hosts);
    w.out
}

/// The per-host families (none when the instances run on this machine).
fn render_hosts(w: &mut Writer, hosts: &[crate::host_state::HostStatus]) {
    use crate::host_state::HostState;
    if hosts.is_empty() {
        return;
    }
    w.family(
        "aim_host_up",
        "gauge",
        "1 when the host is up, 0 when it is suspect or down.",
    );
    for h in hosts {
        w.sample(
            "aim_host_up",
            &[("host", &h.host)],
            f64::from(u8::from(h.is_up())),
        );
    }
    w.family(
        "aim_host_state",
        "gauge",
        "The host's state (up, suspect, down): 1 for the current one.",
    );
    for h in hosts {
        for (state, v) in one_hot(HostState::ALL.iter().map(|s| s.as_str()), h.state.as_str()) {
            w.sample("aim_host_state", &[("host", &h.host), ("state", &state)], v);
        }
    }
    w.family(
        "aim_host_transitions_total",
        "counter",
        "State changes of the host, by the state entered.",
    );
    for h in hosts {
        for (state, v) in counts(&h.transitions) {
            w.sample(
                "aim_host_transitions_total",
                &[("host", &h.host), ("state", &state)],
                v,
            );
        }
    }
    w.family(
        "aim_host_failures_total",
        "counter",
        "Failures the host's instances reported: links lost, launches that failed.",
    );
    for h in hosts {
        w.sample(
            "aim_host_failures_total",
            &[("host", &h.host)],
            h.failures as f64,
        );
    }
    w.family(
        "aim_host_checks_total",
        "counter",
        "Checks of the host (ssh HOST true), by result (ok, failed).",
    );
    for h in hosts {
        for (result, v) in counts(&h.checks) {
            w.sample(
                "aim_host_checks_total",
                &[("host", &h.host), ("result", &result)],
                v,
            );
        }
    }
    w.family(
        "aim_host_instances",
        "gauge",
        "Instances placed on the host.",
    );
    for h in hosts {
        w.sample(
            "aim_host_instances",
            &[("host", &h.host)],
            h.instances.len() as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsSnapshot;
    use std::collections::{BTreeMap, HashMap};
    use std::time::Duration;

    fn snapshot() -> MetricsSnapshot {
        let mut histogram = crate::Histogram::default();
        for ms in [1u64, 3, 30, 300, 3000, 30_000] {
            histogram.record(Duration::from_millis(ms));
        }
        let m = InstanceMetrics {
            index: 0,
            state: InstanceState::Ready,
            circuit: crate::CircuitState::Closed,
            pid: 42,
            generation: 2,
            prompts_sent: 7,
            responses: 6,
            failures: crate::metrics::FAILURE_KINDS
                .iter()
                .map(|k| (k.to_string(), u64::from(*k == "died")))
                .collect(),
            in_flight: 0,
            queued: 0,
            latency: crate::metrics::LatencySummary::of(&histogram),
            histogram,
            responses_last_minute: 6,
            restarts: [("crashed".to_string(), 1)].into_iter().collect(),
            uptime_s: 2.5,
            total_uptime_s: 4.0,
            last_exit: None,
            rss_bytes: Some(1 << 20),
            stray_output_bytes: 0,
            usage: crate::metrics::UsageTotals {
                input_tokens: 10,
                output_tokens: 4,
                cache_read_tokens: 20,
                cache_write_tokens: 5,
                cost_usd: 0.25,
                denials: 3,
            },
        };
        let mut snap = MetricsSnapshot::build(
            "de\"mo",
            "round-robin",
            Duration::from_secs(10),
            vec![m],
            0,
            (2, 0),
        );
        let host = crate::host_state::HostShared::new("h\"0".into());
        let now = std::time::Instant::now();
        host.set_state(crate::HostState::Down, None, now);
        host.on_check(false);
        snap.hosts = vec![host.status(vec![0])];
        snap
    }

    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the text back: families, their types, and samples.
    fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
        let mut types = HashMap::new();
        let mut helps = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').unwrap();
                helps.insert(name.to_string(), ());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_string(), kind.to_string());
            } else {
                let open = line.find('{').unwrap();
                let close = line.rfind('}').unwrap();
                let name = line[..open].to_string();
                let mut labels = BTreeMap::new();
                let body = &line[open + 1..close];
                let mut rest = body;
                while !rest.is_empty() {
                    let eq = rest.find('=').unwrap();
                    let key = rest[..eq].to_string();
                    let mut value = String::new();
                    let mut chars = rest[eq + 2..].char_indices();
                    let mut end = 0;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                let (_, n) = chars.next().unwrap();
                                value.push(if n == 'n' { '\n' } else { n });
                            }
                            '"' => {
                                end = eq + 2 + i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    labels.insert(key, value);
                    rest = rest[end..].trim_start_matches(',');
                }
                let value: f64 = line[close + 1..].trim().parse().unwrap();
                samples.push((name, labels, value));
            }
        }
        for name in types.keys() {
            assert!(helps.contains_key(name), "{name} has TYPE but no HELP");
        }
        (types, samples)
    }

    #[test]
    fn every_family_has_help_and_type_and_names_follow_conventions() {
        let text = snapshot().to_prometheus();
        let (types, samples) = parse(&text);
        for (name, labels, _) in &samples {
            assert!(name.starts_with("aim_"), "{name}");
            let family = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
                .unwrap_or(name);
            let kind = types
                .get(family)
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            assert_eq!(
                labels["tool"], "de\"mo",
                "the tool label is escaped and parses back"
            );
            assert!(!labels.contains_key("session"));
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_equals_count() {
        let text = snapshot().to_prometheus();
        let (_, samples) = parse(&text);
        let buckets: Vec<(String, f64)> = samples
            .iter()
            .filter(|(n, _, _)| n == "aim_response_duration_seconds_bucket")
            .map(|(_, l, v)| (l["le"].clone(), *v))
            .collect();
        assert_eq!(buckets.len(), PROMETHEUS_BOUNDS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[1].1 >= w[0].1), "{buckets:?}");
        let count = samples
            .iter()
            .find(|(n, _, _)| n == "aim_response_duration_seconds_count")
            .unwrap()
            .2;
        assert_eq!(buckets.last().unwrap(), &("+Inf".to_string(), count));
        assert_eq!(count, 6.0);
        // 1 ms, 3 ms and 30 ms are at or under 0.05 s.
        let le_005 = buckets.iter().find(|(le, _)| le == "0.05").unwrap().1;
        assert_eq!(le_005, 3.0);
        let sum = samples
            .iter()
            .find(|(n, _, _)| n == "aim_response_duration_seconds_sum")
            .unwrap()
            .2;
        assert!((sum - 33.334).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn counts_and_refusals_appear() {
        let text = snapshot().to_prometheus();
        assert!(text.contains(
            "aim_tokens_total{tool=\"de\\\"mo\",instance=\"0\",kind=\"cache_read\"} 20\n"
        ));
        assert!(text.contains("aim_cost_usd_total{tool=\"de\\\"mo\",instance=\"0\"} 0.25\n"));
        assert!(text.contains("aim_denials_total{tool=\"de\\\"mo\",instance=\"0\"} 3\n"));
        assert!(text.contains("aim_prompts_sent_total{tool=\"de\\\"mo\",instance=\"0\"} 7\n"));
        assert!(
            text.contains("aim_failures_total{tool=\"de\\\"mo\",instance=\"0\",kind=\"died\"} 1\n")
        );
        assert!(
            text.contains("aim_dispatch_failures_total{tool=\"de\\\"mo\",kind=\"rejected\"} 2\n")
        );
        assert!(text.contains(
            "aim_restarts_total{tool=\"de\\\"mo\",instance=\"0\",reason=\"crashed\"} 1\n"
        ));
        assert!(text.contains(
            "aim_instance_resident_memory_bytes{tool=\"de\\\"mo\",instance=\"0\"} 1048576\n"
        ));
    }

    #[test]
    fn hosts_have_their_own_families() {
        let (_, samples) = parse(&snapshot().to_prometheus());
        let value = |name: &str, extra: &[(&str, &str)]| {
            samples
                .iter()
                .find(|(n, labels, _)| {
                    n == name
                        && labels["host"] == "h\"0"
                        && extra.iter().all(|(k, v)| labels[*k] == *v)
                })
                .map(|s| s.2)
        };
        assert_eq!(value("aim_host_up", &[]), Some(0.0));
        assert_eq!(value("aim_host_state", &[("state", "down")]), Some(1.0));
        assert_eq!(value("aim_host_state", &[("state", "up")]), Some(0.0));
        assert_eq!(
            value("aim_host_transitions_total", &[("state", "down")]),
            Some(1.0)
        );
        assert_eq!(
            value("aim_host_checks_total", &[("result", "failed")]),
            Some(1.0)
        );
        assert_eq!(value("aim_host_instances", &[]), Some(1.0));
        // Without hosts, no host family at all.
        let mut local = snapshot();
        local.hosts.clear();
        assert!(!local.to_prometheus().contains("aim_host_"));
    }

    #[test]
    fn no_traffic_omits_the_success_ratio() {
        let snap = MetricsSnapshot::build("t", "rr", Duration::from_secs(1), vec![], 0, (0, 0));
        assert!(!snap.to_prometheus().contains("aim_success_ratio"));
    }
}
