//! Sticky sessions: each conversation stays with the process that holds its context; when
//! that process dies, the session moves once and the next answer says its context was lost.
//!
//! Run: `cargo run --example sticky_sessions`

use aim::{launch_cluster, Strategy};

fn main() -> Result<(), aim::Error> {
    aim::demo::serve_if_requested();
    env_logger::init();
    let cluster = launch_cluster("demo", 3, Strategy::Sticky)?;

    let alice = cluster.session("alice");
    let bob = cluster.session("bob");
    for turn in [
        "/add main.rs",
        "/ask what does main do?",
        "/ask and the tests?",
    ] {
        let a = alice.send(turn)?;
        let b = bob.send(turn)?;
        println!(
            "alice -> instance {}   bob -> instance {}",
            a.instance, b.instance
        );
    }

    // Kill alice's instance: her next prompt moves, once, and says the context is gone.
    let before = alice.send("/pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| aim::Error::Io {
        context: "kill".into(),
        source: e.into(),
    })?;
    loop {
        match alice.send("are you there?") {
            Ok(r) => {
                println!(
                    "alice now on instance {} (generation {}), context lost: {}",
                    r.instance, r.generation, r.context_lost
                );
                break;
            }
            // The prompt raced the kill and reached the dying process.
            Err(e) if e.is_retryable() => println!("retrying after: {e}"),
            Err(e) => return Err(e),
        }
    }
    let next = alice.send("and now?")?;
    println!("next answer: context lost: {}", next.context_lost);
    cluster.shutdown();
    Ok(())
}
