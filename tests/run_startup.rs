//! `aim run` while its instances start: signals are honoured, answers flow as soon as
//! `--min-ready` instances are up (whichever they are), and `--queue-timeout` counts.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

/// A tools file in the temp dir, removed on drop.
struct ToolsFile(std::path::PathBuf);

impl ToolsFile {
    fn new(name: &str, json: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("aim-startup-{name}-{}.json", std::process::id()));
        std::fs::write(&path, json).unwrap();
        ToolsFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ToolsFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// A tool that never becomes ready: `sleep 1000` waiting for a `> ` prompt, 30 s to start.
fn never_ready() -> ToolsFile {
    ToolsFile::new(
        "never",
        r#"{"never": {"program": "sleep", "args": ["1000"],
            "framing": {"kind": "prompt", "marker": "> "}, "startup_timeout_ms": 30000}}"#,
    )
}

fn signal_during_startup(signal: Signal, code: i32) {
    init_logs();
    let _w = watchdog("signal during start-up", Duration::from_secs(120));
    let tools = never_ready();
    let mut child = spawn_aim(["run", "never", "-n", "2", "--tools", tools.path()]);
    let _stdin = child.stdin.take().unwrap();
    wait_until(Duration::from_secs(20), "the tools to start", || {
        descendants(child.id()).len() >= 2
    });
    let tree = descendants(child.id());
    let sent = Instant::now();
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "{signal} ignored during start-up (30 s startup timeout)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(&signal.to_string()), "{stderr}");
    wait_until(Duration::from_secs(10), "no tool left", || {
        tree.iter().all(|&pid| is_gone(pid))
    });
}

#[test]
fn sigterm_during_startup_ends_the_run_at_once() {
    signal_during_startup(Signal::SIGTERM, 143);
}

#[test]
fn sigint_during_startup_ends_the_run_at_once() {
    signal_during_startup(Signal::SIGINT, 130);
}

/// Instance 0 takes `delay_s` to start; the others start at once.
fn slow_first(delay_s: u32) -> ToolsFile {
    let json = serde_json::json!({"slowfirst": {
        "program": "sh",
        "args": ["-c", format!("if [ {{index}} = 0 ]; then sleep {delay_s}; fi; exec \"$0\""),
                 demo_bin()],
        "framing": {"kind": "prompt", "marker": "> "},
        "startup_timeout_ms": 60000,
    }});
    ToolsFile::new("slowfirst", &json.to_string())
}

#[test]
fn min_ready_one_answers_without_waiting_for_a_slow_instance_zero() {
    init_logs();
    let _w = watchdog("min-ready", Duration::from_secs(120));
    let tools = slow_first(30);
    let mut child = spawn_aim([
        "run",
        "slowfirst",
        "-n",
        "3",
        "--min-ready",
        "1",
        "--tools",
        tools.path(),
    ]);
    let (answer, line, waited) = first_answer_to_hello(&mut child);
    assert!(answer["text"].is_string(), "{line}");
    assert_ne!(answer["instance"], 0, "{line}");
    // Instance 0 takes 30 s; the others are ready in well under 15 s even on a loaded box.
    assert!(
        waited < Duration::from_secs(15),
        "first answer after {waited:?}"
    );
    terminate(child);
}

#[test]
fn queue_timeout_applies_while_instances_start() {
    init_logs();
    let _w = watchdog("queue timeout at start-up", Duration::from_secs(120));
    let tools = ToolsFile::new(
        "slowall",
        &serde_json::json!({"slowall": {
            "program": "sh",
            "args": ["-c", "sleep 30; exec \"$0\"", demo_bin()],
            "framing": {"kind": "prompt", "marker": "> "},
            "startup_timeout_ms": 60000,
        }})
        .to_string(),
    );
    let mut child = spawn_aim([
        "run",
        "slowall",
        "-n",
        "1",
        "--queue-timeout",
        "1s",
        "--tools",
        tools.path(),
    ]);
    let (answer, line, waited) = first_answer_to_hello(&mut child);
    assert_eq!(answer["id"], 0, "{line}");
    assert_eq!(answer["kind"], "timeout", "{line}");
    assert!(
        waited < Duration::from_secs(20),
        "answered after {waited:?}"
    );
    terminate(child);
}

/// Writes `hello` to `aim run`'s stdin and reads the first answer line: the line parsed, as
/// written, and how long it took.
fn first_answer_to_hello(child: &mut Child) -> (serde_json::Value, String, Duration) {
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let waited = started.elapsed();
    // Stdin stays open: `aim run` must not see its end before the test is done.
    child.stdin = Some(stdin);
    (serde_json::from_str(&line).unwrap(), line, waited)
}

/// Ends `aim run` with SIGTERM and checks it exits with a code.
fn terminate(mut child: Child) {
    drop(child.stdin.take());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).ok();
    let status = child.wait().unwrap();
    assert!(status.code().is_some());
}
