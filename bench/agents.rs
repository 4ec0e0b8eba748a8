//! Real AI clients (aider, claude, codex) against the fake LLM backend, aim vs a plain driver
//! of the same client, in the same run: startup (spawn to ready), latency per answer (median
//! and p99 over sequential prompts on one instance), and RSS per instance; then the same for
//! tool-using turns (each prompt makes the model write a file through the client's own tool:
//! claude's `Write`, codex's `exec_command`, an aider edit block), with aim's default `edit`
//! permissions and the plain driver given the same client flags.
//!
//! The plain driver writes a prompt to the client's stdin and reads its stdout until the
//! protocol's end of answer (aider: `Tokens: ... received.`, later a line `> `;
//! claude: the `result` event; codex: `turn/completed`), all on one thread with blocking
//! reads: the least a program that knows the protocol can do.
//!
//! Clients come from `$REALCLIENTS` (see `../shared/realclients/install.sh`); a missing one
//! is reported and skipped. `cargo bench --bench agents`; `cargo test --benches` runs a tiny
//! iteration.

#[path = "../tests/support/agents.rs"]
#[allow(dead_code)]
mod agents;
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agents::FakeLlm;
use aim::ClusterManager;
use common::*;

/// How the plain driver talks to one client.
struct Plain {
    /// Lines to write at start (a handshake), and the text whose arrival means ready.
    greeting: Vec<String>,
    ready: fn(&str) -> bool,
    /// The bytes for prompt `i`.
    prompt: fn(usize, &str) -> String,
    /// Whether the output since the prompt holds a complete answer.
    done: fn(&str) -> bool,
}

fn aider_plain() -> Plain {
    Plain {
        greeting: vec![],
        ready: |out| out.ends_with("\n> "),
        prompt: |_, p| format!("{p}\n"),
        // After an edit, the files in the chat are listed before the prompt.
        done: |out| out.contains(" received.") && out.ends_with("\n> "),
    }
}

fn claude_plain() -> Plain {
    Plain {
        greeting: vec![
            r#"{"type":"control_request","request_id":"i","request":{"subtype":"initialize"}}"#
                .into(),
        ],
        ready: |out| out.contains("\"control_response\""),
        prompt: |_, p| {
            format!(
                "{}\n",
                serde_json::json!({"type":"user","message":{"role":"user","content":p}})
            )
        },
        done: |out| out.contains("{\"type\":\"result\""),
    }
}

fn codex_plain() -> Plain {
    Plain {
        greeting: vec![
            r#"{"id":1,"method":"initialize","params":{"clientInfo":{"name":"plain","version":"0"}}}"#.into(),
            r#"{"method":"initialized"}"#.into(),
            r#"{"id":2,"method":"thread/start","params":{"approvalPolicy":"on-request","sandbox":"workspace-write","cwd":"CWD"}}"#.into(),
        ],
        ready: |out| out.contains("\"id\":2,\"result\""),
        // The thread id is spliced in by `drive_plain`.
        prompt: |i, p| {
            format!(
                "{}\n",
                serde_json::json!({"id": 10 + i, "method": "turn/start", "params": {
                    "threadId": "THREAD", "input": [{"type": "text", "text": p}]}})
            )
        },
        done: |out| out.contains("\"method\":\"turn/completed\""),
    }
}

/// Prompt `i` of a run: `side` says whose (files written must not collide).
type PromptText = fn(&str, usize) -> String;

fn chat_prompt(side: &str, i: usize) -> String {
    format!("{side} {i}")
}

fn tool_prompt(side: &str, i: usize) -> String {
    format!("write it [[write:{side}-{i}.txt|written by {side} {i}]]")
}

/// Startup and per-answer latencies of a plain driver of `spec`'s command (with the flags the
/// protocol would add, so both sides run the client the same way).
/// How long a plain driver may run one client before it is killed (the bench then fails).
const PLAIN_DRIVER_LIMIT: Duration = Duration::from_secs(300);

fn drive_plain(
    spec: &aim::ToolSpec,
    plain: &Plain,
    prompts: usize,
    text: PromptText,
) -> (Duration, Vec<Duration>) {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .args(spec.build_protocol().launch_args())
        .envs(&spec.env.set)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir.replace("{index}", "0"));
    }
    let began = Instant::now();
    let mut child = cmd.spawn().expect("spawn the client");
    // A plain driver has no deadline of its own: should the client never finish an answer,
    // kill it, so the read below sees end of output and the bench fails instead of hanging.
    let (finished, watch) = crossbeam_channel::bounded::<()>(0);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    std::thread::spawn(move || {
        if watch.recv_timeout(PLAIN_DRIVER_LIMIT)
            == Err(crossbeam_channel::RecvTimeoutError::Timeout)
        {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let cwd = std::fs::canonicalize(spec.cwd.as_deref().unwrap_or("."))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for line in &plain.greeting {
        writeln!(stdin, "{}", line.replace("CWD", &cwd)).unwrap();
    }
    let mut out = String::new();
    let mut buf = [0u8; 65536];
    let mut read_until = |out: &mut String, what: &dyn Fn(&str) -> bool| loop {
        if what(out) {
            return;
        }
        let n = stdout.read(&mut buf).expect("read");
        assert!(n > 0, "the client closed its output: {out}");
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    };
    read_until(&mut out, &plain.ready);
    let startup = began.elapsed();
    let thread = out
        .split("\"thread\":{\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
        .to_string();
    let mut latencies = Vec::with_capacity(prompts);
    for i in 0..prompts {
        out.clear();
        let message = (plain.prompt)(i, &text("plain", i)).replace("THREAD", &thread);
        let t = Instant::now();
        stdin.write_all(message.as_bytes()).unwrap();
        read_until(&mut out, &plain.done);
        latencies.push(t.elapsed());
    }
    drop(stdin);
    drop(finished);
    let _ = child.kill();
    let _ = child.wait();
    (startup, latencies)
}

/// Startup, per-answer latencies and RSS of one aim instance of `spec`.
fn drive_aim(
    spec: aim::ToolSpec,
    prompts: usize,
    text: PromptText,
) -> (Duration, Vec<Duration>, Option<u64>) {
    let began = Instant::now();
    let cluster = ClusterManager::builder(spec).launch().expect("launch");
    let startup = began.elapsed();
    let mut latencies = Vec::with_capacity(prompts);
    for i in 0..prompts {
        let t = Instant::now();
        let answer = cluster.send(text("aim", i)).expect("answer");
        latencies.push(t.elapsed());
        if answer.text.starts_with("FAKE-REPLY") {
            assert_eq!(answer.text, format!("FAKE-REPLY: aim {i}"));
        }
        assert!(answer.denials.is_empty(), "{:?}", answer.denials);
    }
    let rss = cluster.metrics().instances[0].rss_bytes;
    cluster.shutdown();
    (startup, latencies, rss)
}

/// The aider entry as it was before the aider protocol: the `> ` marker plus 500 ms of quiet.
fn aider_settle_framing(spec: &aim::ToolSpec) -> aim::ToolSpec {
    let mut before = spec.clone().protocol(aim::protocol::ProtocolKind::Framed);
    before.framing = aim::Framing::Prompt {
        marker: "> ".into(),
        stream: aim::Stream::Stdout,
        settle: Duration::from_millis(500),
        await_read: false,
    };
    before.input = aim::InputFormat::Wrapped {
        open: "{".into(),
        close: "}".into(),
    };
    before
}

/// Median latency of `spec` through aim with the framed protocol (no exact-text check: the
/// framed answer keeps aider's bookkeeping lines).
fn framed_median(spec: aim::ToolSpec, prompts: usize) -> Duration {
    let cluster = ClusterManager::builder(spec).launch().expect("launch");
    let mut latencies: Vec<Duration> = (0..prompts)
        .map(|i| {
            let t = Instant::now();
            cluster.send(format!("before {i}")).expect("answer");
            t.elapsed()
        })
        .collect();
    cluster.shutdown();
    summarize(&mut latencies).median
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let prompts = iterations(30, 2);
    let runs = iterations(3, 1);
    let mut rows = Vec::new();
    for name in ["aider", "claude", "codex"] {
        let Some(program) = agents::client(name) else {
            continue;
        };
        let dir = agents::scratch(&format!("bench-{name}"));
        let llm = FakeLlm::start(&dir);
        let mut spec = match name {
            "aider" => agents::aider(&program, &llm, &dir),
            "claude" => agents::claude(&program, &llm, &dir),
            _ => agents::codex(&program, &llm, &dir),
        };
        if name == "claude" {
            // Its tool turns write files: into the scratch directory.
            spec.cwd = Some(dir.display().to_string());
        }
        let plain = match name {
            "aider" => aider_plain(),
            "claude" => claude_plain(),
            _ => codex_plain(),
        };
        // Warm up caches (imports, the first model call) once for each side.
        drive_plain(&spec, &plain, 1, chat_prompt);
        let (mut plain_start, mut aim_start, mut plain_lat, mut aim_lat, mut rss) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), None);
        let (mut plain_tool, mut aim_tool) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            // Alternate, so drift on this noisy machine hits both sides alike.
            let (s, l) = drive_plain(&spec, &plain, prompts, chat_prompt);
            plain_start.push(s);
            plain_lat.extend(l);
            let (s, l, r) = drive_aim(spec.clone(), prompts, chat_prompt);
            aim_start.push(s);
            aim_lat.extend(l);
            rss = rss.or(r);
            let (_, l) = drive_plain(&spec, &plain, prompts, tool_prompt);
            plain_tool.extend(l);
            let (_, l, _) = drive_aim(spec.clone(), prompts, tool_prompt);
            aim_tool.extend(l);
        }
        let (pt, at) = (summarize(&mut plain_tool), summarize(&mut aim_tool));
        println!(
            "{name:7} tool turns (write a file): latency median plain {:7.2} ms  aim {:7.2} ms  (added {:+.2} ms) p99 plain {:7.2} aim {:7.2}",
            ms(pt.median),
            ms(at.median),
            ms(at.median) - ms(pt.median),
            ms(pt.p99),
            ms(at.p99)
        );
        let (ps, as_) = (summarize(&mut plain_start), summarize(&mut aim_start));
        let (pl, al) = (summarize(&mut plain_lat), summarize(&mut aim_lat));
        let added = ms(al.median) - ms(pl.median);
        let before = (name == "aider").then(|| framed_median(aider_settle_framing(&spec), prompts));
        if let Some(before) = before {
            println!(
                "{name:7} before (marker + 500 ms settle): latency median {:.2} ms",
                ms(before)
            );
        }
        println!(
            "{name:7} startup plain {:8.1} ms  aim {:8.1} ms | latency median plain {:7.2} ms  aim {:7.2} ms  (added {added:+.2} ms) p99 plain {:7.2} aim {:7.2} | RSS {:.0} MiB",
            ms(ps.median),
            ms(as_.median),
            ms(pl.median),
            ms(al.median),
            ms(pl.p99),
            ms(al.p99),
            rss.unwrap_or(0) as f64 / (1 << 20) as f64
        );
        rows.push(serde_json::json!({
            "client": name,
            "startup_ms": {"plain": ms(ps.median), "aim": ms(as_.median)},
            "latency_median_ms": {"plain": ms(pl.median), "aim": ms(al.median)},
            "latency_p99_ms": {"plain": ms(pl.p99), "aim": ms(al.p99)},
            "added_latency_ms": added,
            "before_settle_framing_median_ms": before.map(ms),
            "rss_bytes": rss,
            "tool_turn_latency_median_ms": {"plain": ms(pt.median), "aim": ms(at.median)},
            "tool_turn_latency_p99_ms": {"plain": ms(pt.p99), "aim": ms(at.p99)},
            "prompts": pl.n,
        }));
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "{}",
        serde_json::json!({"bench": "agents", "clients": rows})
    );
}
