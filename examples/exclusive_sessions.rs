//! Exclusive sessions: each conversation owns its process. When alice's process dies she
//! waits for her own instance to come back rather than joining bob's conversation, and a
//! third session waits until one ends.
//!
//! Run: `cargo run --example exclusive_sessions`

use std::time::Duration;

use aim::{ClusterManager, Request, SessionMode, Strategy, ToolRegistry};

fn main() -> Result<(), aim::Error> {
    aim::demo::serve_if_requested();
    env_logger::init();
    // Agent protocols (aider, claude, codex) are exclusive by default; the demo agent is a
    // framed tool, so ask for it.
    let cluster = ClusterManager::builder(ToolRegistry::builtin().resolve("demo")?)
        .count(2)
        .strategy(Strategy::Sticky)
        .session_mode(SessionMode::Exclusive)
        .launch()?;
    let alice = cluster.session("alice");
    let bob = cluster.session("bob");
    let a = alice.send("hello from alice")?;
    let b = bob.send("hello from bob")?;
    println!(
        "alice owns instance {}, bob owns instance {}",
        a.instance, b.instance
    );

    // Kill alice's process; wait until the cluster has seen it.
    kill(a.pid)?;
    while cluster.status()[a.instance].state == aim::InstanceState::Ready {
        std::thread::sleep(Duration::from_millis(10));
    }
    let again = alice.send("are you there?")?;
    println!(
        "alice answered by instance {} again (generation {}); context lost: {} ({})",
        again.instance,
        again.generation,
        again.context_lost,
        again.context_note.as_deref().unwrap_or("")
    );
    assert_eq!(again.instance, a.instance, "never bob's process");

    // A third session has no free instance: it waits, here for at most 300 ms.
    let carol = cluster.session("carol");
    let waited = carol.send(Request::new("hi").timeout(Duration::from_millis(300)));
    println!("carol while both are owned: {}", waited.unwrap_err());
    drop(bob); // bob's conversation ends: his instance is free
    let c = carol.send("hi again")?;
    println!("carol now owns instance {}", c.instance);
    cluster.shutdown();
    Ok(())
}

fn kill(pid: i32) -> Result<(), aim::Error> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| aim::Error::Io {
        context: "kill".into(),
        source: e.into(),
    })
}
