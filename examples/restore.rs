//! Conversations that survive a restart: a python session is killed after `x = 41`, and
//! `print(x + 1)` still answers 42, because the restarted process replayed the session's
//! prompts first. (claude, codex and aider restore their own way: `--resume`,
//! `thread/resume`, `--restore-chat-history`.)
//!
//! Run: `cargo run --example restore` (needs python3)

use std::time::Duration;

use aim::{ClusterManager, Replay, Strategy, ToolRegistry};

fn main() -> Result<(), aim::Error> {
    env_logger::init();
    let python = ToolRegistry::builtin()
        .resolve("python")?
        .replay(Replay::default());
    let cluster = ClusterManager::builder(python)
        .strategy(Strategy::Sticky)
        .launch()?;
    let session = cluster.session("calc");
    session.send("x = 41")?;
    let before = session.send("import os; print(os.getpid())")?;
    println!("python pid {}", before.text.trim());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .map_err(|e| aim::Error::Io {
        context: "kill".into(),
        source: e.into(),
    })?;
    while cluster.status()[before.instance].state == aim::InstanceState::Ready {
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = session.send("print(x + 1)")?;
    println!(
        "after the kill: {} (context restored: {}, {})",
        answer.text.trim(),
        answer.context_restored,
        answer.context_note.as_deref().unwrap_or("")
    );
    assert_eq!(answer.text, "42\n");
    cluster.shutdown();
    Ok(())
}
