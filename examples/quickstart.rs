//! Quickstart: launch three demo agents, send prompts (blocking and submitted), print the
//! answers and the cluster's metrics.
//!
//! Run: `cargo run --example quickstart`
//! (uses the built-in demo agent; try `python` instead of `"demo"` for real Python REPLs).

use aim::{launch_cluster, Strategy};

fn main() -> Result<(), aim::Error> {
    // Lets this binary serve as the demo agent for the cluster it launches.
    aim::demo::serve_if_requested();
    env_logger::init();

    let cluster = launch_cluster("demo", 3, Strategy::RoundRobin)?;

    // Blocking: one prompt, one answer.
    let answer = cluster.send("What does this crate do?")?;
    println!(
        "instance {} answered in {:?}:\n{}",
        answer.instance, answer.elapsed, answer.text
    );

    // Submitted: many prompts in flight, answers collected later.
    let tickets: Vec<_> = (1..=6)
        .map(|i| cluster.submit(format!("question {i}")))
        .collect::<Result<_, _>>()?;
    for ticket in tickets {
        let answer = ticket.wait()?;
        println!(
            "#{} -> {}",
            answer.instance,
            answer.text.lines().next().unwrap_or("")
        );
    }

    let metrics = cluster.metrics();
    println!(
        "answered {}, success rate {:?}, p50 {:?} s, per instance {:?}",
        metrics.cluster.responses,
        metrics.cluster.success_rate,
        metrics.cluster.latency.p50_s,
        metrics
            .instances
            .iter()
            .map(|m| m.responses)
            .collect::<Vec<_>>()
    );
    let report = cluster.shutdown();
    println!("shut down in {:?}", report.took);
    Ok(())
}
