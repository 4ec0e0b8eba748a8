//! Every framing mode against real processes, over pipes and a PTY.

mod support;

use std::time::Duration;

use aim::{Framing, InputFormat, Readiness, Stream, ToolProcessPool, ToolSpec, Transport};
use support::*;

#[test]
fn prompt_marker_framing_with_the_demo_agent() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    for i in 0..20 {
        let r = pool.send_to(0, format!("message {i}")).unwrap();
        assert!(
            r.text.starts_with(&format!("You said: message {i}\n")),
            "{:?}",
            r.text
        );
    }
    stop_pool(&pool);
}

#[test]
fn prompt_marker_with_a_settle_period_waits_for_quiet() {
    init_logs();
    let mut spec = demo(&[]);
    spec.framing = Framing::Prompt {
        marker: "> ".into(),
        stream: Stream::Stdout,
        settle: Duration::from_millis(50),
        await_read: false,
    };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool.send_to(0, "/quote").unwrap();
    assert_eq!(r.text, "Here is a quote:\n> quoted line\nend of answer\n");
    assert!(r.service_time >= Duration::from_millis(50));
    stop_pool(&pool);
}

#[test]
fn line_framing_with_cat_and_the_demo() {
    init_logs();
    let pool = ToolProcessPool::new(cat(), 1).unwrap();
    assert_eq!(pool.send_to(0, "echo me").unwrap().text, "echo me");
    stop_pool(&pool);
    let pool = ToolProcessPool::new(demo_lines(&[]), 1).unwrap();
    assert_eq!(
        pool.send_to(0, "hi there").unwrap().text,
        "You said: hi there"
    );
    stop_pool(&pool);
}

#[test]
fn json_lines_framing_with_a_headless_agent() {
    init_logs();
    let spec = demo(&["--json"])
        .framing(Framing::JsonLines {
            field: "type".into(),
            value: "result".into(),
        })
        .input(InputFormat::JsonTemplate {
            template: r#"{"type":"user","message":{"role":"user","content":{prompt}}}"#.into(),
        })
        .readiness(Readiness::Immediate);
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    // A JSON template carries any text, newlines and quotes included.
    let r = pool.send_to(0, "say \"hi\"\nplease").unwrap();
    let lines: Vec<serde_json::Value> = r
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{:?}", r.text);
    assert_eq!(lines[0]["type"], "assistant");
    assert_eq!(lines[1]["type"], "result");
    assert!(lines[1]["result"]
        .as_str()
        .unwrap()
        .starts_with("You said: say \"hi\"\nplease"));
    stop_pool(&pool);
}

#[test]
fn idle_framing_completes_after_quiet() {
    init_logs();
    let spec = demo_lines(&[]).framing(Framing::Idle {
        quiet: Duration::from_millis(100),
    });
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool.send_to(0, "/lines 3").unwrap();
    assert_eq!(r.text, "line 0\nline 1\nline 2\n");
    assert!(r.service_time >= Duration::from_millis(100));
    stop_pool(&pool);
}

#[test]
fn pty_transport_talks_to_the_demo_agent() {
    init_logs();
    let spec = demo(&[]).transport(Transport::Pty);
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool.send_to(0, "over a terminal").unwrap();
    // Echo is off: the prompt is not read back; output post-processing is off: no \r\n.
    assert!(
        r.text.starts_with("You said: over a terminal\n"),
        "{:?}",
        r.text
    );
    assert!(!r.text.contains('\r'));
    let pid = r.pid;
    stop_pool(&pool);
    assert_gone(&[pid]);
}

#[test]
fn pty_prompts_longer_than_the_canonical_line_limit_arrive_whole() {
    init_logs();
    let spec = demo(&[]).transport(Transport::Pty);
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let long = "x".repeat(20_000);
    let r = pool.send_to(0, format!("/echo {long}")).unwrap();
    assert_eq!(r.text.trim_end(), long);
    stop_pool(&pool);
}

#[test]
fn readiness_text_waits_for_the_banner() {
    init_logs();
    let spec = demo_lines(&[])
        .readiness(Readiness::Text {
            text: "never printed".into(),
            stream: Stream::Stdout,
        })
        .startup_timeout(Duration::from_millis(300));
    let err = ToolProcessPool::new(spec, 1).unwrap_err();
    assert!(matches!(err, aim::Error::NotReady { .. }), "{err}");
}

#[test]
fn ansi_escapes_are_stripped_when_asked() {
    init_logs();
    // printf-style colour codes from a shell loop that answers each line.
    let mut spec = ToolSpec::new("colour", "sh")
        .args([
            "-c",
            r#"while read -r line; do printf '\033[1;32m%s\033[0m\n' "$line"; done"#,
        ])
        .framing(Framing::Line);
    spec.strip_ansi = true;
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool.send_to(0, "green").unwrap();
    assert_eq!(r.text, "green");
    stop_pool(&pool);
}

/// The terminals a process has open (`/dev/pts/N` and `/dev/ptmx`).
fn terminals_of(pid: i32) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .filter(|t| t.starts_with("/dev/pts/") || t == "/dev/ptmx")
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.dedup();
    found
}

#[test]
fn pty_instances_started_together_never_inherit_each_others_terminals() {
    init_logs();
    let spec = demo(&[]).transport(Transport::Pty);
    let pool = ToolProcessPool::new(spec, 6).unwrap();
    let mut seen = std::collections::HashSet::new();
    for status in pool.status() {
        let terminals = terminals_of(status.pid);
        assert_eq!(terminals.len(), 1, "pid {}: {terminals:?}", status.pid);
        assert!(terminals[0].starts_with("/dev/pts/"), "{terminals:?}");
        assert!(
            seen.insert(terminals[0].clone()),
            "shared terminal {terminals:?}"
        );
    }
    stop_pool(&pool);
}

fn demo_awaiting_read(await_read: bool) -> aim::ToolSpec {
    let mut spec = demo(&[]);
    spec.framing = Framing::Prompt {
        marker: "> ".into(),
        stream: Stream::Stdout,
        settle: Duration::ZERO,
        await_read,
    };
    spec
}

#[test]
fn await_read_keeps_an_answer_whole_when_the_tool_pauses_after_printing_its_prompt() {
    init_logs();
    let pool = ToolProcessPool::new(demo_awaiting_read(true), 1).unwrap();
    for _ in 0..3 {
        let answer = pool.send_to(0, "/stall 300").unwrap();
        assert_eq!(answer.text, "before the stall\n> after the stall\n");
        assert!(pool
            .send_to(0, "next")
            .unwrap()
            .text
            .starts_with("You said: next"));
    }
    assert_eq!(pool.metrics().instances[0].stray_output_bytes, 0);
    stop_pool(&pool);
}

#[test]
fn without_await_read_the_rest_of_a_cut_answer_is_dropped_never_given_to_the_next() {
    init_logs();
    let pool = ToolProcessPool::new(demo_awaiting_read(false), 1).unwrap();
    // The marker ends the answer early...
    let cut = pool.send_to(0, "/stall 300").unwrap();
    assert_eq!(cut.text, "before the stall\n");
    // ...and what follows arrives between answers: counted and dropped.
    wait_until(Duration::from_secs(5), "the rest to arrive", || {
        pool.metrics().instances[0].stray_output_bytes > 0
    });
    let next = pool.send_to(0, "next").unwrap();
    assert!(next.text.starts_with("You said: next"), "{:?}", next.text);
    assert!(!next.text.contains("after the stall"));
    stop_pool(&pool);
}

#[test]
fn a_streamed_answer_arrives_in_pieces_before_the_final_response() {
    init_logs();
    let cluster = aim::ClusterManager::builder(demo_awaiting_read(true))
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let ticket = cluster
        .submit(aim::Request::new("/stall 300").stream(true))
        .unwrap();
    let mut chunks = Vec::new();
    for chunk in ticket.chunks() {
        // The first piece is here while the answer is still pausing.
        if chunks.is_empty() {
            assert!(
                ticket.try_wait().is_none(),
                "the answer is not complete yet"
            );
        }
        chunks.push(chunk);
    }
    assert!(chunks.len() >= 2, "{chunks:?}");
    let answer = ticket.wait().unwrap();
    assert_eq!(answer.text, "before the stall\n> after the stall\n");
    assert_eq!(chunks.concat(), answer.text);
    // Not streamed: no chunks, same answer.
    let plain = cluster.submit("/stall 10").unwrap();
    assert_eq!(plain.chunks().count(), 0);
    assert!(plain.wait().is_ok());
    stop_cluster(&cluster);
}

#[test]
fn readiness_text_waits_for_its_text_and_then_answers() {
    init_logs();
    let spec = demo(&["--banner", "warming up\nREADY-NOW\n", "--startup-ms", "200"]).readiness(
        Readiness::Text {
            text: "READY-NOW".into(),
            stream: Stream::Stdout,
        },
    );
    let began = std::time::Instant::now();
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    // Not ready before the tool printed its text (after its 200 ms startup).
    assert!(began.elapsed() >= Duration::from_millis(200));
    let hello = pool.send_to(0, "hello").unwrap();
    assert!(hello.text.starts_with("You said: hello"), "{hello:?}");
    stop_pool(&pool);
}

#[test]
fn init_lines_run_before_the_first_prompt() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let mut spec = aim::ToolRegistry::builtin().get("python").unwrap();
    spec.init = vec!["import math".into(), "y = 5".into()];
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(pool.send_to(0, "print(y * 2)").unwrap().text, "10\n");
    assert_eq!(
        pool.send_to(0, "print(math.floor(2.5))").unwrap().text,
        "2\n"
    );
    stop_pool(&pool);
}

#[test]
fn readiness_text_with_prompt_framing_waits_for_the_prompt_that_follows_it() {
    init_logs();
    // The tool says it is ready, and only later prints the prompt it reads after: the first
    // answer must be framed by the prompt after the answer, not by that late startup prompt.
    let script = "printf 'warming up\\nREADY-NOW\\n'; sleep 0.3; printf '> '; \
                  while read l; do printf 'You said: %s\\n> ' \"$l\"; done";
    let spec = aim::ToolSpec::new("late-prompt", "sh")
        .args(["-c", script])
        .framing(Framing::Prompt {
            marker: "> ".into(),
            stream: Stream::Stdout,
            settle: Duration::ZERO,
            await_read: false,
        })
        .readiness(Readiness::Text {
            text: "READY-NOW".into(),
            stream: Stream::Stdout,
        });
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(pool.send_to(0, "one").unwrap().text, "You said: one\n");
    assert_eq!(pool.send_to(0, "two").unwrap().text, "You said: two\n");
    stop_pool(&pool);
}

#[test]
fn pty_tools_see_a_24_by_80_terminal_unless_told_otherwise() {
    init_logs();
    let spec = ToolSpec::new("stty", "sh")
        .args(["-c", "while read -r line; do stty size; done"])
        .transport(Transport::Pty)
        .framing(Framing::Line);
    let pool = ToolProcessPool::new(spec.clone(), 1).unwrap();
    assert_eq!(pool.send_to(0, "size?").unwrap().text, "24 80");
    stop_pool(&pool);
    let pool = ToolProcessPool::new(spec.pty_size(aim::PtySize::new(50, 132)), 1).unwrap();
    assert_eq!(pool.send_to(0, "size?").unwrap().text, "50 132");
    stop_pool(&pool);
}

#[test]
fn readline_tools_on_a_pty_echo_what_they_read_as_documented() {
    init_logs();
    if !have("node") {
        eprintln!("SKIPPED: node not installed");
        return;
    }
    // node -i draws its own input line: the echo is part of the answer (docs/tools.md).
    let spec = ToolSpec::new("node", "node")
        .args(["-i"])
        .env("NODE_NO_READLINE", "0")
        .env("TERM", "dumb")
        .transport(Transport::Pty)
        .framing(Framing::Prompt {
            marker: "> ".into(),
            stream: Stream::Stdout,
            settle: Duration::from_millis(200),
            await_read: false,
        });
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool.send_to(0, "6*7").unwrap();
    assert_eq!(r.text, "6*7\r\n42\n", "{:?}", r.text);
    stop_pool(&pool);
}
