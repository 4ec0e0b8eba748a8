//! A custom router: the `Router` trait works on a snapshot of candidates, so a policy is a few
//! lines and can be unit-tested without processes. This one keeps instance 0 as a "canary"
//! that gets every tenth prompt, and spreads the rest over the others by load.
//!
//! Run: `cargo run --example custom_router`

use aim::{Candidate, ClusterManager, LeastBusy, RouteContext, Router, ToolRegistry};

#[derive(Debug, Default)]
struct Canary {
    seen: usize,
    rest: LeastBusy,
}

impl Router for Canary {
    fn select(&mut self, candidates: &[Candidate], context: &RouteContext<'_>) -> Option<usize> {
        let n = self.seen;
        self.seen += 1;
        if n % 10 == 0 {
            if let Some(canary) = candidates.first().filter(|c| c.is_eligible()) {
                return Some(canary.index);
            }
        }
        // The others, by load (the canary only if nothing else can take it).
        let others = candidates.get(1..).unwrap_or(&[]);
        self.rest
            .select(others, context)
            .or_else(|| self.rest.select(candidates, context))
    }

    fn name(&self) -> &str {
        "canary"
    }
}

fn main() -> Result<(), aim::Error> {
    aim::demo::serve_if_requested();
    env_logger::init();
    let cluster = ClusterManager::builder(ToolRegistry::builtin().resolve("demo")?)
        .count(4)
        .router(Box::new(Canary::default()))
        .launch()?;
    for i in 0..40 {
        cluster.send(format!("prompt {i}"))?;
    }
    let per_instance: Vec<u64> = cluster.status().iter().map(|s| s.answered).collect();
    println!(
        "router {}: answers per instance {per_instance:?}",
        cluster.router_name()
    );
    cluster.shutdown();
    Ok(())
}
