//! Deadlines under faults, the three cases of "every wait has a deadline":
//!
//! 1. lateness: a 500 ms `send_to_timeout` queued behind a silent `/sleep 3000` on the same
//!    instance: how long after its deadline the caller gets `Timeout` (target: 50 ms);
//! 2. all down: 200 prompts to a cluster of 2 demo agents that both stopped for good
//!    (clean exit under `on_failure`): time until every prompt has failed (target: 2 s);
//! 3. hung neighbour: `/hang` on one of 2 instances, then 20 quick prompts: how many answer,
//!    and their median latency (target: all 20, without waiting for the hung one).
//!
//! `cargo bench --bench deadlines`; `cargo test --benches` runs a tiny iteration.

mod common;

use std::time::{Duration, Instant};

use aim::{ClusterManager, InstanceState, Request, RestartPolicy, Strategy, ToolRegistry};
use common::*;

fn demo_spec() -> aim::ToolSpec {
    let mut spec = ToolRegistry::builtin().get("demo").expect("demo");
    spec.program = env!("CARGO_BIN_EXE_aim-demo").to_string();
    spec.stop_grace = Duration::from_millis(300);
    spec
}

fn lateness(runs: usize) -> Summary {
    let cluster = ClusterManager::builder(demo_spec())
        .launch()
        .expect("launch");
    let mut late = Vec::with_capacity(runs);
    for _ in 0..runs {
        let slow = cluster.submit("/sleep 3000").expect("submit");
        while cluster.metrics().cluster.in_flight == 0 {
            std::thread::yield_now();
        }
        let began = Instant::now();
        let err = cluster
            .send_to_timeout(0, "quick", Duration::from_millis(500))
            .expect_err("must time out");
        assert!(err.is_timeout(), "{err}");
        late.push(began.elapsed().saturating_sub(Duration::from_millis(500)));
        slow.wait().expect("slow answer");
    }
    cluster.shutdown();
    summarize(&mut late)
}

fn all_down(prompts: usize) -> Duration {
    // Each demo agent exits cleanly (code 0) 300 ms after start, between answers, so under
    // `on_failure` it stays down. (An exit while answering, as `/exit` is, counts as a
    // failure and is restarted.)
    let mut spec = demo_spec().restart(RestartPolicy::OnFailure);
    spec.args
        .extend(["--exit-after-ms", "300", "--exit-code", "0"].map(String::from));
    let cluster = ClusterManager::builder(spec)
        .count(2)
        .launch()
        .expect("launch");
    let stopped_by = Instant::now() + Duration::from_secs(60);
    while !cluster
        .status()
        .iter()
        .all(|s| s.state == InstanceState::Stopped)
    {
        assert!(
            Instant::now() < stopped_by,
            "instances did not stop in 60 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let began = Instant::now();
    let tickets: Vec<_> = (0..prompts)
        .map(|i| cluster.submit(format!("p{i}")))
        .collect();
    for ticket in tickets {
        let failed = match ticket {
            Ok(t) => t.wait().is_err(),
            Err(_) => true,
        };
        assert!(failed);
    }
    let took = began.elapsed();
    cluster.shutdown();
    took
}

fn hung_neighbour(quick: usize) -> (usize, Summary) {
    let cluster = ClusterManager::builder(demo_spec())
        .count(2)
        .strategy(Strategy::RoundRobin)
        .launch()
        .expect("launch");
    let _hung = cluster
        .submit(Request::new("/hang").timeout(Duration::from_secs(60)))
        .expect("submit");
    let tickets: Vec<_> = (0..quick)
        .map(|i| {
            cluster
                .submit(Request::new(format!("q{i}")).timeout(Duration::from_secs(30)))
                .expect("submit")
        })
        .collect();
    let mut latencies = Vec::new();
    for ticket in tickets {
        if let Ok(answer) = ticket.wait() {
            latencies.push(answer.elapsed);
        }
    }
    let answered = latencies.len();
    cluster.shutdown();
    (answered, summarize(&mut latencies))
}

fn main() {
    let late = lateness(iterations(10, 1));
    print_summary("queued 500 ms deadline: lateness", &late);
    let prompts = iterations(200, 20);
    let drain = all_down(prompts);
    println!(
        "{:40} {prompts} prompts failed in {:.1} ms",
        "all instances stopped: drain",
        drain.as_secs_f64() * 1e3
    );
    let quick = 20;
    let (answered, latency) = hung_neighbour(quick);
    print_summary("quick prompts beside a hung one", &latency);
    println!("{:40} {answered} of {quick} answered", "");
    println!(
        "{}",
        serde_json::json!({
            "bench": "deadlines",
            "queued_deadline_lateness": summary_json(&late),
            "all_down_drain_ms": drain.as_secs_f64() * 1e3,
            "all_down_prompts": prompts,
            "hung_neighbour_answered": answered,
            "hung_neighbour_latency": summary_json(&latency),
        })
    );
}
