//! What a shell user of `aim run` expects: cancel one prompt and go on, one session for a
//! text-mode run, a one-line complaint for a bad option, and the metrics address on stderr.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn a_cancel_line_cancels_one_prompt_and_the_run_goes_on() {
    init_logs();
    let _w = watchdog("cancel line", Duration::from_secs(60));
    let mut child = spawn_aim(["run", "demo", "-n", "2", "--input", "jsonl", "--unordered"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    stdin
        .write_all(b"{\"prompt\": \"/sleep 30000\"}\n{\"prompt\": \"quick\"}\n")
        .unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(json(&line)["id"], 1, "{line}");
    // Line 3 (id 2) cancels id 0; the run goes on with line 4.
    stdin
        .write_all(b"{\"cancel\": 0}\n{\"prompt\": \"after\"}\n")
        .unwrap();
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let lines: Vec<serde_json::Value> = rest.lines().map(json).collect();
    let cancelled = lines
        .iter()
        .find(|l| l["id"] == 0)
        .expect("a line for id 0");
    assert_eq!(cancelled["kind"], "cancelled", "{lines:?}");
    let after = lines
        .iter()
        .find(|l| l["id"] == 3)
        .expect("a line for id 3");
    assert!(
        after["text"].as_str().unwrap().contains("after"),
        "{lines:?}"
    );
    // The control line itself has no output line.
    assert!(lines.iter().all(|l| l["id"] != 2), "{lines:?}");
    assert_eq!(
        status.code(),
        Some(1),
        "a cancelled prompt was not answered"
    );
}

#[test]
fn session_keeps_a_text_mode_run_on_one_instance() {
    init_logs();
    if !have("python3") {
        return;
    }
    let out = run_aim(
        ["run", "python", "-n", "3", "--session", "calc"],
        b"x = 41\ny = 1\nprint(x + y)\nprint(x * 2)\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(json)
        .collect();
    assert_eq!(lines[2]["text"], "42\n", "{lines:?}");
    assert_eq!(lines[3]["text"], "82\n", "{lines:?}");
    let instances: Vec<&serde_json::Value> = lines.iter().map(|l| &l["instance"]).collect();
    assert!(instances.iter().all(|i| *i == instances[0]), "{lines:?}");
    // An explicit non-sticky strategy cannot keep a session: refused up front.
    let out = run_aim(
        ["run", "demo", "--session", "k", "-s", "round-robin"],
        b"hi\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sticky"));
}

#[test]
fn help_run_warns_about_stateful_repls_under_round_robin() {
    let out = run_aim(["help", "run"], b"");
    let help = String::from_utf8_lossy(&out.stdout);
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("--session"))
        .unwrap_or_else(|| panic!("no --session: {help}"));
    assert!(line.contains("one instance"), "{line}");
    assert!(
        help.contains("Stateful REPLs") && help.contains("under round-robin"),
        "{help}"
    );
}

#[test]
fn soak_help_says_why_its_default_strategy_differs_from_run() {
    let out = run_aim(["help", "soak"], b"");
    let help = String::from_utf8_lossy(&out.stdout);
    let line = help
        .lines()
        .find(|l| l.trim_start().starts_with("-s, --strategy"))
        .unwrap_or_else(|| panic!("no --strategy: {help}"));
    assert!(line.contains("least-busy (default"), "{line}");
    assert!(help.contains("unlike `aim run`"), "{help}");
}

#[test]
fn an_unknown_option_is_one_line() {
    for args in [
        &["run", "--bogus"][..],
        &["soak", "--bogus"],
        &["tools", "--bogus"],
        &["run", "--timeout"],
        &["frobnicate"],
    ] {
        let out = run_aim(args, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(said.len(), 1, "{args:?}: {stderr}");
        assert!(said[0].contains("aim help"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn the_metrics_address_is_printed_at_start_whatever_the_log_level() {
    init_logs();
    let _w = watchdog("metrics address", Duration::from_secs(60));
    let mut child = Command::new(env!("CARGO_BIN_EXE_aim"))
        .args(["run", "demo", "--metrics-addr", "0"])
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address: {line:?}"))
        .to_string();
    // A real HTTP client fetches it while the run waits for input.
    let fetched = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())",
            &url,
        ])
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{fetched:?}");
    assert!(String::from_utf8_lossy(&fetched.stdout).contains("aim_instance_up"));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    drop(child.stdin.take());
    child.wait().unwrap();
}
