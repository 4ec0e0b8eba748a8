//! Graceful shutdown: answers in flight get the drain timeout to finish, queued prompts fail
//! with `Error::Shutdown` (and hand their prompt back), every process is stopped by escalation
//! and reaped, and the report says how each one ended.
//!
//! Run: `cargo run --example graceful_shutdown`

use std::time::Duration;

use aim::{ClusterManager, Error, ToolRegistry};

fn main() -> Result<(), aim::Error> {
    aim::demo::serve_if_requested();
    env_logger::init();
    let cluster = ClusterManager::builder(ToolRegistry::builtin().resolve("demo")?)
        .count(2)
        .drain_timeout(Duration::from_secs(2))
        .launch()?;
    // Two slow answers in flight, a few more queued behind them.
    let tickets: Vec<_> = (0..6)
        .map(|_| cluster.submit("/sleep 500"))
        .collect::<Result<_, _>>()?;
    let waiter = std::thread::spawn(move || {
        tickets
            .into_iter()
            .map(|t| t.wait())
            .collect::<Vec<Result<aim::Response, Error>>>()
    });
    let report = cluster.shutdown();
    for outcome in &report.instances {
        println!(
            "instance {} pid {}: {:?}, {:?}",
            outcome.index, outcome.pid, outcome.method, outcome.exit
        );
    }
    println!(
        "all reaped: {}, took {:?}",
        report.all_reaped(),
        report.took
    );
    for result in waiter.join().expect("waiter") {
        match result {
            Ok(r) => println!("answered by {}: {}", r.instance, r.text.trim()),
            Err(e) => println!("failed: {e} (prompt handed back: {:?})", e.prompt()),
        }
    }
    Ok(())
}
