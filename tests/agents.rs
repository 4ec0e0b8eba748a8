//! Real AI coding CLIs (aider, claude, codex), driven through the library and through
//! `aim run` against the fake LLM backend on loopback. Each test prints `SKIPPED: ...` and
//! passes when its client is not installed (`.ci/run` installs the pinned versions).

mod support;

use std::time::Duration;

use aim::{ClusterManager, Error, Strategy, ToolSpec};
use support::agents::{self, FakeLlm};
use support::*;

const INSTANCES: usize = 3;
const PROMPTS: usize = 12;

fn launch(spec: ToolSpec) -> ClusterManager {
    ClusterManager::builder(spec)
        .count(INSTANCES)
        .strategy(Strategy::LeastBusy)
        .request_timeout(Duration::from_secs(120))
        .submit_timeout(Duration::from_secs(120))
        .stuck_after(Duration::from_secs(30))
        .supervision(fast_supervision())
        .launch()
        .expect("the cluster starts")
}

/// 3 instances x 12 prompts through the library: every answer's text is exactly the model's
/// reply; every instance answers.
fn answers_exactly(spec: ToolSpec) -> Vec<aim::Response> {
    let cluster = launch(spec);
    let tickets: Vec<_> = (0..PROMPTS)
        .map(|i| cluster.submit(format!("prompt-{i} says hello")).unwrap())
        .collect();
    let answers: Vec<aim::Response> = tickets
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let answer = t.wait().unwrap_or_else(|e| panic!("prompt {i}: {e}"));
            assert_eq!(answer.text, format!("FAKE-REPLY: prompt-{i} says hello"));
            answer
        })
        .collect();
    let mut used: Vec<usize> = answers.iter().map(|a| a.instance).collect();
    used.sort();
    used.dedup();
    assert_eq!(used.len(), INSTANCES, "every instance answered");
    stop_cluster(&cluster);
    answers
}

/// The same through `aim run` with a tools file holding the spec.
fn aim_run_answers_exactly(
    name: &str,
    mut spec: ToolSpec,
    dir: &std::path::Path,
) -> Vec<serde_json::Value> {
    spec.name = name.to_string();
    let tools = dir.join("tools.json");
    let file = serde_json::json!({ name: spec });
    std::fs::write(&tools, file.to_string()).unwrap();
    let input: String = (0..PROMPTS).map(|i| format!("run-{i} asks\n")).collect();
    let args = ["run", name, "-n", "3", "-s", "least-busy", "--tools"];
    let args = args
        .iter()
        .map(std::ffi::OsStr::new)
        .chain([tools.as_os_str()]);
    let out = run_aim(args, input.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aim run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), PROMPTS, "{stdout}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["text"], format!("FAKE-REPLY: run-{i} asks"), "{line}");
        assert!(line["usage"]["output_tokens"].as_u64() > Some(0), "{line}");
    }
    lines
}

// ----- aider -------------------------------------------------------------------------------

#[test]
fn aider_answers_three_instances_by_twelve_prompts_exactly() {
    init_logs();
    let Some(program) = agents::client("aider") else {
        return;
    };
    let dir = agents::scratch("aider-library");
    let llm = FakeLlm::start(&dir);
    let answers = answers_exactly(agents::aider(&program, &llm, &dir));
    // The Tokens line is decoded, not left in the text.
    assert!(answers
        .iter()
        .all(|a| a.usage.is_some_and(|u| u.output_tokens > 0)));
    assert!(answers.iter().all(|a| !a.text.contains("Tokens:")));
    // --no-git and /dev/null histories: nothing written into the working directories.
    let left: Vec<_> = std::fs::read_dir(dir.join("work-0"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "aider left files behind: {left:?}");
}

#[test]
fn aider_answers_through_aim_run() {
    init_logs();
    let Some(program) = agents::client("aider") else {
        return;
    };
    let dir = agents::scratch("aider-run");
    let llm = FakeLlm::start(&dir);
    aim_run_answers_exactly("aider-fake", agents::aider(&program, &llm, &dir), &dir);
}

#[test]
fn aider_answers_never_cross_when_the_model_stalls_after_a_quote_marker() {
    init_logs();
    let Some(program) = agents::client("aider") else {
        return;
    };
    let dir = agents::scratch("aider-stall");
    let llm = FakeLlm::start(&dir);
    let spec = agents::aider(&program, &llm, &dir);
    let cluster = ClusterManager::builder(spec)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    for round in 0..3 {
        // The stream pauses 1 s right after a chunk ending in "\n> " (a markdown quote).
        let stalled = cluster
            .send(format!(
                "/ask [[chunks:abcde{round}\\n> |quoted X\\nend X]] [[delay:1000]]"
            ))
            .unwrap();
        assert_eq!(stalled.text, format!("abcde{round}\n> quoted X\nend X"));
        let next = cluster.send(format!("/ask second {round}")).unwrap();
        assert_eq!(next.text, format!("FAKE-REPLY: second {round}"));
    }
    let metrics = cluster.metrics();
    assert_eq!(metrics.instances[0].stray_output_bytes, 0);
    assert_eq!(metrics.cluster.restarts, 0);
    stop_cluster(&cluster);
}

#[test]
fn aider_takes_a_prompt_that_would_open_a_block_as_a_message() {
    init_logs();
    let Some(program) = agents::client("aider") else {
        return;
    };
    let dir = agents::scratch("aider-brace");
    let llm = FakeLlm::start(&dir);
    let cluster = ClusterManager::builder(agents::aider(&program, &llm, &dir))
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    assert_eq!(cluster.send("{python").unwrap().text, "FAKE-REPLY: {python");
    assert_eq!(cluster.send("two\nlines").unwrap().text, "FAKE-REPLY: two");
    // The instance is still in plain message mode.
    assert_eq!(cluster.send("after").unwrap().text, "FAKE-REPLY: after");
    let err = cluster.send("x\naim}\ny").unwrap_err();
    assert!(matches!(err, Error::InvalidPrompt { .. }), "{err}");
    stop_cluster(&cluster);
}

#[test]
fn aider_reports_a_failed_model_call_as_a_tool_error() {
    init_logs();
    let Some(program) = agents::client("aider") else {
        return;
    };
    let dir = agents::scratch("aider-error");
    let llm = FakeLlm::start(&dir);
    let cluster = ClusterManager::builder(agents::aider(&program, &llm, &dir))
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let err = cluster.send("/ask [[error:quota gone]]").unwrap_err();
    match &err {
        Error::ToolReported { message, .. } => assert!(message.contains("quota gone"), "{err}"),
        other => panic!("expected ToolReported, got {other:?}"),
    }
    assert_eq!(err.prompt(), Some("/ask [[error:quota gone]]"));
    assert_eq!(cluster.send("/ask fine").unwrap().text, "FAKE-REPLY: fine");
    stop_cluster(&cluster);
}

// ----- claude ------------------------------------------------------------------------------

#[test]
fn claude_answers_three_instances_by_twelve_prompts_exactly() {
    init_logs();
    let Some(program) = agents::client("claude") else {
        return;
    };
    let dir = agents::scratch("claude-library");
    let llm = FakeLlm::start(&dir);
    let answers = answers_exactly(agents::claude(&program, &llm, &dir));
    for answer in &answers {
        assert!(answer.session_id.as_deref().is_some_and(|s| !s.is_empty()));
        assert!(answer.usage.is_some_and(|u| u.output_tokens > 0));
        assert!(answer.cost_usd.is_some());
        // The raw event stream is kept for debugging.
        assert!(String::from_utf8_lossy(&answer.bytes).contains("\"type\":\"result\""));
    }
}

#[test]
fn claude_answers_through_aim_run() {
    init_logs();
    let Some(program) = agents::client("claude") else {
        return;
    };
    let dir = agents::scratch("claude-run");
    let llm = FakeLlm::start(&dir);
    let lines = aim_run_answers_exactly("claude-fake", agents::claude(&program, &llm, &dir), &dir);
    assert!(lines
        .iter()
        .all(|l| l["session_id"].is_string() && l["cost_usd"].is_number()));
}

#[test]
fn claude_is_error_results_are_tool_errors_and_the_instance_goes_on() {
    init_logs();
    let Some(program) = agents::client("claude") else {
        return;
    };
    let dir = agents::scratch("claude-error");
    let llm = FakeLlm::start(&dir);
    let cluster = ClusterManager::builder(agents::claude(&program, &llm, &dir))
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let first = cluster.send("hello one").unwrap();
    let err = cluster.send("[[error:bad thing]]").unwrap_err();
    match &err {
        Error::ToolReported { message, .. } => assert!(message.contains("bad thing"), "{err}"),
        other => panic!("expected ToolReported, got {other:?}"),
    }
    assert!(!err.is_retryable());
    let again = cluster.send("hello two").unwrap();
    assert_eq!(again.text, "FAKE-REPLY: hello two");
    // Same process, same claude session.
    assert_eq!(again.pid, first.pid);
    assert_eq!(again.session_id, first.session_id);
    stop_cluster(&cluster);
}

// ----- codex -------------------------------------------------------------------------------

#[test]
fn codex_answers_three_instances_by_twelve_prompts_exactly() {
    init_logs();
    let Some(program) = agents::client("codex") else {
        return;
    };
    let dir = agents::scratch("codex-library");
    let llm = FakeLlm::start(&dir);
    let answers = answers_exactly(agents::codex(&program, &llm, &dir));
    for answer in &answers {
        assert!(answer.session_id.as_deref().is_some_and(|s| !s.is_empty()));
        assert!(answer.usage.is_some_and(|u| u.output_tokens > 0));
    }
    // One thread per instance: answers from one process share its thread id.
    for a in &answers {
        for b in &answers {
            if a.pid == b.pid {
                assert_eq!(a.session_id, b.session_id);
            } else {
                assert_ne!(a.session_id, b.session_id);
            }
        }
    }
}

#[test]
fn codex_answers_through_aim_run() {
    init_logs();
    let Some(program) = agents::client("codex") else {
        return;
    };
    let dir = agents::scratch("codex-run");
    let llm = FakeLlm::start(&dir);
    let lines = aim_run_answers_exactly("codex-fake", agents::codex(&program, &llm, &dir), &dir);
    assert!(lines.iter().all(|l| l["session_id"].is_string()));
}

#[test]
fn codex_errors_are_tool_errors_never_timeouts() {
    init_logs();
    let Some(program) = agents::client("codex") else {
        return;
    };
    let dir = agents::scratch("codex-error");
    let llm = FakeLlm::start(&dir);
    let cluster = ClusterManager::builder(agents::codex(&program, &llm, &dir))
        .request_timeout(Duration::from_secs(60))
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let err = cluster.send("[[error:nope]]").unwrap_err();
    match &err {
        Error::ToolReported { message, .. } => assert!(message.contains("nope"), "{err}"),
        other => panic!("expected ToolReported, got {other:?}"),
    }
    assert_eq!(
        cluster.send("still here").unwrap().text,
        "FAKE-REPLY: still here"
    );
    stop_cluster(&cluster);
}

// ----- sessions across restarts ------------------------------------------------------------

/// The user texts of each conversation the backend received.
fn user_texts(llm: &FakeLlm) -> Vec<Vec<String>> {
    llm.conversations()
        .iter()
        .map(|c| {
            c["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["role"] == "user")
                .map(|m| m["text"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect()
}

/// Two sessions on two instances; both processes are killed between rounds. Every answer
/// after a restart says the conversation was restored, the two conversations never meet in
/// any request the model received, and each restored conversation still holds its first
/// message.
/// `persisted(answer)` says whether the tool has saved the answered turn where its
/// replacement will look (killing it before that loses the turn, as it would in production).
fn sessions_survive_restarts_and_never_mix(
    spec: ToolSpec,
    llm: &FakeLlm,
    persisted: impl Fn(&aim::Response) -> bool,
) {
    let _w = watchdog("sessions across restarts", Duration::from_secs(300));
    let cluster = ClusterManager::builder(spec)
        .count(2)
        .strategy(Strategy::Sticky)
        .request_timeout(Duration::from_secs(120))
        .submit_timeout(Duration::from_secs(120))
        .stuck_after(Duration::from_secs(60))
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let alice = cluster.session("alice");
    let bob = cluster.session("bob");
    let rounds = 3;
    for round in 0..rounds {
        let a = alice.submit(format!("alice-{round} speaks")).unwrap();
        let b = bob.submit(format!("bob-{round} speaks")).unwrap();
        let (a, b) = (a.wait().unwrap(), b.wait().unwrap());
        assert_eq!(a.text, format!("FAKE-REPLY: alice-{round} speaks"));
        assert_eq!(b.text, format!("FAKE-REPLY: bob-{round} speaks"));
        assert_ne!(a.instance, b.instance);
        if round > 0 {
            for answer in [&a, &b] {
                assert!(
                    answer.context_restored && !answer.context_lost,
                    "round {round}: {answer:?}"
                );
            }
        }
        if round + 1 < rounds {
            wait_until(
                Duration::from_secs(20),
                "the turns saved by the tool",
                || persisted(&a) && persisted(&b),
            );
            for status in cluster.status() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(status.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            wait_until(Duration::from_secs(10), "both instances down", || {
                cluster
                    .status()
                    .iter()
                    .all(|s| s.state != aim::InstanceState::Ready)
            });
        }
    }
    for texts in user_texts(llm) {
        let has = |who: &str| texts.iter().any(|t| t.contains(who));
        assert!(
            !(has("alice-") && has("bob-")),
            "mixed conversation: {texts:?}"
        );
    }
    let last = |who: &str| {
        user_texts(llm)
            .into_iter()
            .rfind(|texts| {
                texts
                    .iter()
                    .any(|t| t.contains(&format!("{who}-{}", rounds - 1)))
            })
            .unwrap_or_default()
    };
    for who in ["alice", "bob"] {
        let texts = last(who);
        assert!(
            texts.iter().any(|t| t.contains(&format!("{who}-0"))),
            "{who}'s last request lost the start of the conversation: {texts:?}"
        );
    }
    stop_cluster(&cluster);
}

#[test]
fn claude_sessions_survive_restarts_and_never_mix() {
    init_logs();
    let Some(program) = agents::client("claude") else {
        return;
    };
    let dir = agents::scratch("claude-sessions");
    let llm = FakeLlm::start(&dir);
    // claude writes a session's transcript to $HOME/.claude/projects/*/ID.jsonl after
    // answering; --resume reads it from there.
    let home = dir.join("claude-home/.claude/projects");
    let persisted = |answer: &aim::Response| {
        let Some(id) = &answer.session_id else {
            return false;
        };
        std::fs::read_dir(&home)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|project| {
                std::fs::read_to_string(project.path().join(format!("{id}.jsonl"))).ok()
            })
            .any(|transcript| transcript.contains(&answer.text))
    };
    sessions_survive_restarts_and_never_mix(agents::claude(&program, &llm, &dir), &llm, persisted);
}

#[test]
fn codex_sessions_survive_restarts_and_never_mix() {
    init_logs();
    let Some(program) = agents::client("codex") else {
        return;
    };
    let dir = agents::scratch("codex-sessions");
    let llm = FakeLlm::start(&dir);
    sessions_survive_restarts_and_never_mix(agents::codex(&program, &llm, &dir), &llm, |_| true);
}

#[test]
fn aider_sessions_survive_restarts_and_never_mix() {
    init_logs();
    let Some(program) = agents::client("aider") else {
        return;
    };
    let dir = agents::scratch("aider-sessions");
    let llm = FakeLlm::start(&dir);
    let spec = agents::aider_restoring(&program, &llm, &dir);
    // aider appends each turn to its chat history file before prompting again.
    sessions_survive_restarts_and_never_mix(spec, &llm, |_| true);
}

// ----- cancel ------------------------------------------------------------------------------

/// How many requests the backend got whose last message asks for the slow reply.
fn slow_requests_received(llm: &FakeLlm) -> usize {
    llm.conversations()
        .iter()
        .filter(|c| {
            c["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["text"].as_str())
                .is_some_and(|t| t.contains("[[delay:3000]]"))
        })
        .count()
}

/// Cancels a slowly streamed answer twice in a row; the instance keeps its process and
/// answers the next prompt exactly.
fn cancel_keeps_the_instance(spec: ToolSpec, llm: &FakeLlm, slow: &str) {
    let _w = watchdog("agent cancel", Duration::from_secs(120));
    let cluster = ClusterManager::builder(spec)
        .request_timeout(Duration::from_secs(60))
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let first = cluster.send("warm up").unwrap();
    for round in 0..2 {
        let ticket = cluster.submit(slow).unwrap();
        // Cancel inside the model call: once the backend has this round's request.
        wait_until(
            Duration::from_secs(30),
            "the slow request at the backend",
            || slow_requests_received(llm) > round,
        );
        ticket.cancel();
        let result = ticket.wait();
        assert!(
            matches!(result, Err(Error::Cancelled { .. })),
            "round {round}: {result:?}"
        );
    }
    let next = cluster.send("after cancel").unwrap();
    assert_eq!(next.text, "FAKE-REPLY: after cancel");
    assert_eq!(next.pid, first.pid, "the process survived the cancels");
    stop_cluster(&cluster);
}

#[test]
fn aider_cancel_stops_the_answer_and_aider_survives_two_in_a_row() {
    init_logs();
    let Some(program) = agents::client("aider") else {
        return;
    };
    let dir = agents::scratch("aider-cancel");
    let llm = FakeLlm::start(&dir);
    cancel_keeps_the_instance(
        agents::aider(&program, &llm, &dir),
        &llm,
        "/ask [[chunks:one|two|three|four]] [[delay:3000]]",
    );
}

#[test]
fn claude_cancel_interrupts_the_turn() {
    init_logs();
    let Some(program) = agents::client("claude") else {
        return;
    };
    let dir = agents::scratch("claude-cancel");
    let llm = FakeLlm::start(&dir);
    cancel_keeps_the_instance(
        agents::claude(&program, &llm, &dir),
        &llm,
        "[[chunks:one|two|three|four]] [[delay:3000]]",
    );
}

#[test]
fn codex_cancel_interrupts_the_turn() {
    init_logs();
    let Some(program) = agents::client("codex") else {
        return;
    };
    let dir = agents::scratch("codex-cancel");
    let llm = FakeLlm::start(&dir);
    cancel_keeps_the_instance(
        agents::codex(&program, &llm, &dir),
        &llm,
        "[[chunks:one|two|three|four]] [[delay:3000]]",
    );
}

// ----- streaming ---------------------------------------------------------------------------

fn streams_text_deltas(spec: ToolSpec) {
    let cluster = ClusterManager::builder(spec)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let ticket = cluster
        .submit(aim::Request::new("[[chunks:one |two |three]] [[delay:300]]").stream(true))
        .unwrap();
    let chunks: Vec<String> = ticket.chunks().collect();
    let answer = ticket.wait().unwrap();
    assert_eq!(answer.text, "one two three");
    assert!(chunks.len() >= 2, "{chunks:?}");
    assert_eq!(chunks.concat(), answer.text);
    stop_cluster(&cluster);
}

#[test]
fn claude_streams_text_deltas() {
    init_logs();
    let Some(program) = agents::client("claude") else {
        return;
    };
    let dir = agents::scratch("claude-stream");
    let llm = FakeLlm::start(&dir);
    streams_text_deltas(agents::claude(&program, &llm, &dir));
}

#[test]
fn codex_streams_text_deltas() {
    init_logs();
    let Some(program) = agents::client("codex") else {
        return;
    };
    let dir = agents::scratch("codex-stream");
    let llm = FakeLlm::start(&dir);
    streams_text_deltas(agents::codex(&program, &llm, &dir));
}
