//! Metrics from a real cluster: snapshot, Prometheus text, and the HTTP endpoint.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use aim::{ClusterManager, InstanceState, MetricsSnapshot, Strategy};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

fn http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply
}

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn nine_prompts_round_robin_show_three_each_in_snapshot_and_prometheus() {
    init_logs();
    let cluster = ClusterManager::builder(demo(&[]))
        .count(3)
        .strategy(Strategy::RoundRobin)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    assert_eq!(
        cluster.metrics().cluster.success_rate,
        None,
        "no traffic is not 100%"
    );
    for i in 0..9 {
        cluster.send(format!("prompt {i}")).unwrap();
    }
    let snap = cluster.metrics();
    let sent: Vec<u64> = snap.instances.iter().map(|m| m.prompts_sent).collect();
    assert_eq!(sent, [3, 3, 3]);
    assert_eq!(snap.cluster.responses, 9);
    assert_eq!(snap.cluster.success_rate, Some(1.0));
    assert_eq!(snap.cluster.latency.count, 9);
    assert!(snap.cluster.latency.p50_s.unwrap() > 0.0);
    assert!(snap.instances.iter().all(|m| m.rss_bytes.unwrap_or(0) > 0));
    assert_eq!(snap.cluster.instances_by_state["ready"], 3);
    let text = snap.to_prometheus();
    for i in 0..3 {
        let line = format!("aim_prompts_sent_total{{tool=\"demo\",instance=\"{i}\"}} 3");
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
    // Stored and compared later: JSON round trip.
    let back: MetricsSnapshot = serde_json::from_str(&snap.to_json()).unwrap();
    assert_eq!(back, snap);

    // A killed instance shows a restart and a failure.
    let victim = cluster.status()[1].pid;
    let ticket = cluster.submit_to(1, "/sleep 2000").unwrap();
    wait_until(Duration::from_secs(10), "the sleep to start", || {
        cluster.status()[1]
            .last_stderr
            .iter()
            .any(|l| l.contains("sleeping"))
    });
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    assert!(ticket.wait().is_err());
    wait_until(Duration::from_secs(10), "the restart", || {
        cluster.status()[1].state == InstanceState::Ready && cluster.status()[1].generation == 2
    });
    let snap = cluster.metrics();
    assert_eq!(snap.instances[1].failures["died"], 1);
    assert_eq!(snap.instances[1].restarts["crashed"], 1);
    assert_eq!(snap.cluster.restarts, 1);
    assert_eq!(snap.instances[1].last_exit, Some(aim::ExitInfo::Signal(9)));
    assert!(snap.cluster.success_rate.unwrap() < 1.0);
    let text = snap.to_prometheus();
    assert_eq!(
        sample(
            &text,
            "aim_restarts_total{tool=\"demo\",instance=\"1\",reason=\"crashed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "aim_failures_total{tool=\"demo\",instance=\"1\",kind=\"died\"}"
        ),
        Some(1.0)
    );
    stop_cluster(&cluster);
}

#[test]
fn the_endpoint_answers_get_and_rejects_bad_requests_without_dying() {
    init_logs();
    let cluster = ClusterManager::builder(demo(&[]))
        .count(1)
        .launch()
        .unwrap();
    cluster.send("hello").unwrap();
    let server = cluster.serve_metrics("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());

    let ok = http(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
    assert!(ok.contains("aim_responses_total{tool=\"demo\",instance=\"0\"} 1"));

    let post = http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert!(post.contains("Allow: GET"));
    let missing = http(addr, b"GET /other HTTP/1.1\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let garbage = http(addr, b"\x00\xff nonsense\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    let too_big = http(addr, &huge);
    assert!(
        too_big.is_empty() || too_big.starts_with("HTTP/1.1 431"),
        "{too_big}"
    );
    // A client that connects and says nothing is timed out, not waited for forever.
    let _silent = TcpStream::connect(addr).unwrap();

    // Still alive after all that.
    let again = http(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert!(again.starts_with("HTTP/1.1 200 OK"), "{again}");

    // The server does not keep the cluster alive.
    drop(cluster);
    let gone = http(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(gone.starts_with("HTTP/1.1 503"), "{gone}");
    server.shutdown();
}
