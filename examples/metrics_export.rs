//! Metrics export: a JSON snapshot, the Prometheus text, and a `/metrics` endpoint scraped
//! once over loopback.
//!
//! Run: `cargo run --example metrics_export`

use std::io::{Read, Write};

use aim::{launch_cluster, Strategy};

fn main() -> Result<(), aim::Error> {
    aim::demo::serve_if_requested();
    env_logger::init();
    let cluster = launch_cluster("demo", 2, Strategy::LeastBusy)?;
    for i in 0..20 {
        cluster.send(format!("prompt {i}"))?;
    }
    let _ = cluster.send("/crash"); // one failure, one restart, to see them counted

    let snapshot = cluster.metrics();
    println!("--- JSON (cluster part) ---");
    println!(
        "{}",
        serde_json::to_string_pretty(&snapshot.cluster).unwrap_or_default()
    );

    println!("--- Prometheus (first lines) ---");
    for line in snapshot.to_prometheus().lines().take(12) {
        println!("{line}");
    }

    let server = cluster.serve_metrics("127.0.0.1:0")?;
    let io = |e: std::io::Error| aim::Error::Io {
        context: "scrape".into(),
        source: e,
    };
    let mut stream = std::net::TcpStream::connect(server.local_addr()).map_err(io)?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .map_err(io)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(io)?;
    println!(
        "--- scraped http://{}/metrics: {} ({} bytes) ---",
        server.local_addr(),
        reply.lines().next().unwrap_or(""),
        reply.len()
    );
    server.shutdown();
    cluster.shutdown();
    Ok(())
}
