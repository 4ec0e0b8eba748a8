//! `aim run` and `aim soak` in real pipelines: signals, closed pipes, bad input, stderr,
//! ordering and timeouts, and a /metrics endpoint that slow clients cannot block.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Runs `aim run ARGS` with `input`; returns (exit code, stdout lines, stderr).
fn run(args: &[&str], input: &[u8]) -> (i32, Vec<serde_json::Value>, String) {
    let out = run_aim([&["run"], args].concat(), input);
    (
        out.status.code().unwrap_or(-1),
        json_lines(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn signal_mid_run(signal: Signal, expected_code: i32) {
    let _w = watchdog("signal mid-run", Duration::from_secs(60));
    let mut child = spawn_aim(["run", "demo", "-n", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    // Four quick prompts, two slow ones in flight, and more input that never gets read.
    stdin
        .write_all(b"a\nb\nc\nd\n/sleep 800\n/sleep 800\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        lines.push(line);
    }
    let tree = descendants(child.id());
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    drop(stdin);
    assert_eq!(status.code(), Some(expected_code), "{stderr}");
    let all = json_lines(&(lines.concat() + &rest));
    // One line per prompt sent, the slow ones finished.
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(all.iter().all(|l| l["text"].is_string()), "{all:?}");
    assert!(stderr.contains("answered"), "the summary: {stderr}");
    assert!(stderr.contains(&signal.to_string()), "{stderr}");
    wait_until(Duration::from_secs(10), "no process left", || {
        tree.iter().all(|&pid| is_gone(pid))
    });
}

#[test]
fn sigint_mid_run_finishes_what_was_sent_prints_a_summary_and_exits_130() {
    init_logs();
    signal_mid_run(Signal::SIGINT, 130);
}

#[test]
fn sigterm_mid_run_exits_143() {
    init_logs();
    signal_mid_run(Signal::SIGTERM, 143);
}

#[test]
fn a_second_signal_cancels_the_prompts_in_flight() {
    init_logs();
    let _w = watchdog("second signal", Duration::from_secs(60));
    let mut child = spawn_aim(["run", "demo", "-n", "1"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"a\n/sleep 30000\n").unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let mut notice = String::new();
    while !notice.contains("no more input") {
        notice.clear();
        err.read_line(&mut notice).unwrap();
    }
    let began = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "not after the 30 s sleep"
    );
    let lines = json_lines(&rest);
    assert_eq!(lines.len(), 1, "{rest}");
    assert_eq!(lines[0]["kind"], "cancelled");
    drop(stdin);
}

#[test]
fn soak_prints_its_verdict_when_interrupted() {
    init_logs();
    let _w = watchdog("soak signal", Duration::from_secs(60));
    let mut child = spawn_aim(["soak", "--duration", "60s"]);
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("answered") {
        line.clear();
        err.read_line(&mut line).unwrap();
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let verdict: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(verdict["lost"], 0);
    assert!(verdict["duration_s"].as_f64().unwrap() < 60.0);
}

#[test]
fn a_closed_stdout_ends_the_run_promptly() {
    init_logs();
    let _w = watchdog("closed stdout", Duration::from_secs(60));
    let mut child = spawn_aim(["run", "demo", "-n", "2"]);
    let mut stdin = child.stdin.take().unwrap();
    let input: String = (0..500).map(|_| "/sleep 20\n").collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let began = Instant::now();
    drop(out); // like `| head -1`
    let status = child.wait().unwrap();
    // 500 prompts of 20 ms on 2 instances would take 5 s.
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(status.code(), Some(141));
    let _ = writer.join();
}

#[test]
fn bad_input_lines_get_their_own_error_and_the_rest_is_answered() {
    init_logs();
    let input = b"one\ntwo\n\xff\xfe bad\nfour\nfive\n";
    let (code, lines, stderr) = run(&["demo", "-n", "2"], input);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[2]["kind"], "input");
    assert!(lines[2]["error"]
        .as_str()
        .unwrap()
        .contains("line 3: invalid UTF-8"));
    for i in [0, 1, 3, 4] {
        assert!(lines[i]["text"].is_string(), "{:?}", lines[i]);
    }
    // jsonl: unknown fields and garbage are errors of their line only; a blank line is
    // skipped.
    let input = b"{\"prompt\": \"ok\"}\n{\"prompt\": \"x\", \"sesion\": \"a\"}\n{nope\n\n{\"prompt\": \"fine\"}\n";
    let (code, lines, _) = run(&["demo", "--input", "jsonl"], input);
    assert_eq!(code, 1);
    let kinds: Vec<_> = lines
        .iter()
        .map(|l| l["kind"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(kinds, ["ok", "input", "input", "ok"]);
    assert_eq!(lines[3]["id"], 4);
    assert!(lines[1]["error"].as_str().unwrap().contains("sesion"));
}

#[test]
fn sessions_with_an_explicit_non_sticky_strategy_are_refused_per_line() {
    init_logs();
    let input = b"{\"prompt\": \"hi\", \"session\": \"a\"}\n{\"prompt\": \"plain\"}\n";
    let (_, lines, _) = run(&["demo", "--input", "jsonl", "-s", "round-robin"], input);
    assert_eq!(lines[0]["kind"], "input");
    assert!(lines[0]["error"].as_str().unwrap().contains("sticky"));
    assert!(lines[1]["text"].is_string());
}

#[test]
fn python_answers_text_lines_verbatim_and_reports_stderr() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let (code, lines, stderr) = run(&["python", "-n", "1"], b"{1: 2}\n1/0\nx = 1\nx\n");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines[0]["text"], "{1: 2}\n");
    assert!(lines[1]["stderr"]
        .as_str()
        .unwrap()
        .contains("ZeroDivisionError"));
    assert!(lines[2].get("stderr").is_none());
    assert_eq!(lines[3]["text"], "1\n");
}

#[test]
fn the_answer_timeout_counts_from_when_the_prompt_is_written() {
    init_logs();
    let _w = watchdog("answer timeout", Duration::from_secs(60));
    // One instance: the quick prompts wait behind a 2 s one, longer than their 1.5 s timeout.
    let (code, lines, stderr) = run(
        &["demo", "-n", "1", "--timeout", "3s"],
        b"/sleep 2000\nq1\nq2\n/sleep 5000\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(lines[0]["text"].is_string());
    assert!(lines[1]["text"].is_string(), "{:?}", lines[1]);
    assert!(lines[2]["text"].is_string(), "{:?}", lines[2]);
    assert_eq!(lines[3]["kind"], "timeout");
    assert!(lines[3]["error"]
        .as_str()
        .unwrap()
        .contains("did not finish answering"));
}

#[test]
fn unordered_prints_answers_as_they_complete() {
    init_logs();
    let (code, lines, _) = run(&["demo", "-n", "2", "--unordered"], b"/sleep 1500\nquick\n");
    assert_eq!(code, 0);
    assert_eq!(lines[0]["id"], 1, "the quick answer first: {lines:?}");
    assert_eq!(lines[1]["id"], 0);
}

#[test]
fn metrics_answer_a_scrape_while_hundreds_of_slow_clients_are_connected() {
    init_logs();
    let _w = watchdog("slowloris", Duration::from_secs(60));
    let server = aim::MetricsServer::bind("127.0.0.1:0", || Some("aim_up 1\n".into())).unwrap();
    let addr = server.local_addr();
    // 500 clients that send half a request and then nothing.
    let slow: Vec<_> = (0..500)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();
    let began = Instant::now();
    let mut scrape = std::net::TcpStream::connect(addr).unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    scrape.read_to_string(&mut reply).unwrap();
    let took = began.elapsed();
    assert!(reply.ends_with("aim_up 1\n"), "{reply}");
    // Before: one connection at a time, 2 s each: the scrape waited minutes.
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(slow);
    server.shutdown();
}

#[test]
fn metrics_on_a_non_loopback_address_need_an_explicit_opt_in() {
    init_logs();
    let err = aim::MetricsServer::bind("0.0.0.0:0", || None).unwrap_err();
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    let public = aim::MetricsServer::bind_public("0.0.0.0:0", || None).unwrap();
    public.shutdown();
    let (code, _, stderr) = run(&["demo", "--metrics-addr", "0.0.0.0:0"], b"hi\n");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--metrics-public"), "{stderr}");
}
