//! Least-busy and round-robin with uneven latency: instance i answers in i*10 ms (the spec's
//! `{index}` expands per instance) and 8 senders keep the cluster busy. Least-busy sends
//! each prompt to the instance with the fewest pending, so the fast ones get most of the
//! work. Round-robin takes turns but prefers an idle instance, so it too sends more to the
//! fast ones (one run: [145, 24, 17, 14]); neither waits on the slow one. The two lines it
//! prints show both splits and how long each took.
//!
//! Run: `cargo run --release --example least_busy`

use std::time::Instant;

use aim::{ClusterManager, Strategy, ToolRegistry};

fn run(strategy: Strategy) -> Result<(), aim::Error> {
    let mut spec = ToolRegistry::builtin().resolve("demo")?;
    spec.args = vec!["--latency-ms".into(), "{index}0".into()];
    // Instance 0 answers at once, 1 after 10 ms, 2 after 20 ms, 3 after 30 ms.
    let cluster = ClusterManager::builder(spec)
        .count(4)
        .strategy(strategy)
        .launch()?;
    let started = Instant::now();
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let cluster = cluster.clone();
            std::thread::spawn(move || -> Result<(), aim::Error> {
                for i in 0..25 {
                    cluster.send(format!("sender {t} prompt {i}"))?;
                }
                Ok(())
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender thread")?;
    }
    let per_instance: Vec<u64> = cluster.status().iter().map(|s| s.answered).collect();
    println!(
        "{strategy:12} 200 prompts in {:>6.0?}; answers per instance (fast to slow): {per_instance:?}",
        started.elapsed()
    );
    cluster.shutdown();
    Ok(())
}

fn main() -> Result<(), aim::Error> {
    aim::demo::serve_if_requested();
    env_logger::init();
    run(Strategy::RoundRobin)?;
    run(Strategy::LeastBusy)?;
    Ok(())
}
