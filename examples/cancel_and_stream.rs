//! Streaming an answer as it arrives, and cancelling one that takes too long.
//!
//! Run: `cargo run --example cancel_and_stream`

use std::time::Duration;

use aim::{launch_cluster, Error, Request, Strategy};

fn main() -> Result<(), aim::Error> {
    aim::demo::serve_if_requested();
    env_logger::init();
    let cluster = launch_cluster("demo", 1, Strategy::RoundRobin)?;

    // Streaming: pieces of the answer as the tool writes them; then the answer itself.
    let ticket = cluster.submit(Request::new("/lines 5").stream(true))?;
    for chunk in ticket.chunks() {
        println!("piece: {chunk:?}");
    }
    println!("answer: {:?}", ticket.wait()?.text);

    // Cancel, whether the prompt still waits or is being answered: it is dropped or
    // interrupted the tool's way, and the instance goes on.
    let slow = cluster.submit(Request::new("/sleep 60000").timeout(Duration::from_secs(120)))?;
    slow.cancel();
    match slow.wait() {
        Err(Error::Cancelled { prompt, .. }) => println!("cancelled {prompt:?}"),
        other => println!("unexpected: {other:?}"),
    }
    println!("next: {:?}", cluster.send("still here?")?.text);
    cluster.shutdown();
    Ok(())
}
