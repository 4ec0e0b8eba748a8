//! The README's ten-line example does what its comments say: its session stays on one
//! instance (the strategy is read from the README itself, so the two cannot drift apart).

mod support;

use std::time::Duration;

use aim::{ClusterManager, Strategy, ToolRegistry};
use support::*;

/// The strategy in the README's `launch_cluster("python", 3, Strategy::X)` line.
fn readme_strategy() -> Strategy {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("launch_cluster(\"python\", 3, Strategy::"))
        .expect("the ten-line example");
    let name = line
        .split("Strategy::")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    match name {
        "RoundRobin" => Strategy::RoundRobin,
        "LeastBusy" => Strategy::LeastBusy,
        "Sticky" => Strategy::Sticky,
        other => panic!("unknown strategy {other}"),
    }
}

#[test]
fn the_ten_line_example_keeps_its_session_on_one_instance() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: no python3");
        return;
    }
    let _w = watchdog("readme session", Duration::from_secs(60));
    let spec = ToolRegistry::builtin().resolve("python").unwrap();
    let cluster = ClusterManager::builder(spec)
        .count(3)
        .strategy(readme_strategy())
        .launch()
        .unwrap();
    assert_eq!(cluster.send("6 * 7").unwrap().text, "42\n");
    let session = cluster.session("alice");
    let first = session.send("x = 1").unwrap();
    for _ in 0..5 {
        let answer = session.send("x").unwrap();
        assert_eq!(answer.text, "1\n", "{answer:?}");
        assert_eq!(answer.instance, first.instance, "the session moved");
        assert!(!answer.context_lost, "{answer:?}");
    }
    stop_cluster(&cluster);
}
