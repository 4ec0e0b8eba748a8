//! The whole `/metrics` page, fetched by a real HTTP client (python3's urllib) and parsed by
//! the Prometheus reference client library (`prometheus_client`, which .ci/run installs):
//! every family parses and no two share a name.

mod support;

use std::process::Command;
use std::time::Duration;

use aim::{ClusterManager, InstanceState, Strategy};
use support::*;

/// Fetches `url` and parses it; prints `name type samples` per family, or fails on a clash.
const CHECK: &str = r#"
import sys, urllib.request
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("prometheus_client is missing: python3 -m pip install prometheus_client")
with urllib.request.urlopen(sys.argv[1], timeout=10) as reply:
    assert reply.status == 200, reply.status
    assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = reply.read().decode()
seen = {}
for family in text_string_to_metric_families(text):
    if family.name in seen:
        sys.exit(f"family name clash: {family.name} is both a {seen[family.name]} and a {family.type}")
    seen[family.name] = family.type
    print(family.name, family.type, sum(s.value for s in family.samples if s.name == family.name or s.name == family.name + "_total"))
"#;

#[test]
fn the_whole_metrics_page_parses_with_unique_family_names() {
    init_logs();
    let _w = watchdog("prometheus format", Duration::from_secs(120));
    let cluster = ClusterManager::builder(demo(&[]))
        .count(2)
        .strategy(Strategy::RoundRobin)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    for i in 0..4 {
        cluster.send(format!("prompt {i}")).unwrap();
    }
    // A restart, so the per-reason and per-generation series have something to say.
    cluster.restart_instance(1).unwrap();
    wait_until(Duration::from_secs(10), "the restart", || {
        cluster.status()[1].state == InstanceState::Ready
    });
    let server = cluster.serve_metrics("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", server.local_addr());
    let out = Command::new("python3")
        .args(["-c", CHECK, &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    let families: Vec<(&str, &str, f64)> = stdout
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            (name, kind, parts.next().unwrap().parse().unwrap())
        })
        .collect();
    let find = |name: &str| families.iter().find(|f| f.0 == name).copied();
    assert_eq!(
        find("aim_prompts_sent"),
        Some(("aim_prompts_sent", "counter", 4.0))
    );
    assert!(find("aim_response_duration_seconds").is_some_and(|f| f.1 == "histogram"));
    assert!(find("aim_instance_uptime_seconds").is_some_and(|f| f.1 == "gauge"));
    server.shutdown();
    stop_cluster(&cluster);
}
