//! Recorded real-client transcripts (`tests/fixtures/*.jsonl`, made by
//! `tests/fixtures/record_transcripts.py` against the fake LLM backend) replayed through each
//! protocol's `Conversation`: the protocols are tested where the clients are not installed,
//! in milliseconds. Each fixture line is one phase, `start` or a `turn` with its prompt, and
//! every byte the client printed on stdout during it.

use std::time::{Duration, Instant};

use aim::protocol::{Answer, Context, Conversation, Protocol, Step};
use aim::Stream;
use aim::{Denial, ToolRegistry};

/// A pid no process has: the stdin-read check says "unknown", so aider falls back to its
/// settle time, which the replay fast-forwards.
const NO_PID: i32 = i32::MAX;

struct Phase {
    start: bool,
    prompt: String,
    stdout: String,
}

fn fixture(name: &str) -> Vec<Phase> {
    let path = format!("{}/tests/fixtures/{name}.jsonl", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Phase {
                start: v["phase"] == "start",
                prompt: v["prompt"].as_str().unwrap_or_default().to_string(),
                stdout: v["stdout"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// Feeds `stdout` line by line (the way pipes often deliver it; a question that waits for
/// its answer ends a chunk), then fast-forwards timers
/// until the conversation says done. Returns what it wrote.
fn feed(
    conversation: &mut dyn Conversation,
    starting: bool,
    stdout: &str,
    now: &mut Instant,
) -> Vec<u8> {
    let mut input = Vec::new();
    let mut step = Step::Pending;
    // A question waits at the end of a read (aider's `[Yes]: `): split after it too.
    let chunks = stdout
        .split_inclusive('\n')
        .flat_map(|line| line.split_inclusive("]: "));
    for chunk in chunks {
        assert_eq!(step, Step::Pending, "done before the end of the recording");
        step = if starting {
            conversation.starting(Stream::Stdout, chunk.as_bytes(), *now, &mut input)
        } else {
            conversation.answering(Stream::Stdout, chunk.as_bytes(), *now, &mut input)
        };
        // Timers (aider's settle time) fire between chunks too: a question waits for its answer.
        while step == Step::Pending {
            let Some(at) = conversation.deadline() else {
                break;
            };
            *now = at.max(*now) + Duration::from_millis(1);
            step = if starting {
                conversation.tick(*now)
            } else {
                conversation.wake(*now, &mut input)
            };
        }
    }
    assert_eq!(step, Step::Done, "the recording ends the phase");
    input
}

/// Replays a fixture: the answers, and what the conversation wrote during each turn.
fn replay(protocol: &dyn Protocol, phases: &[Phase]) -> Vec<(Answer, Vec<u8>)> {
    let spec_context = Context::new(NO_PID, 0, 16 << 20);
    let mut conversation = protocol.conversation(&spec_context);
    let mut now = Instant::now();
    let mut handshake = Vec::new();
    conversation.open(now, &mut handshake);
    let mut answers = Vec::new();
    for phase in phases {
        if phase.start {
            feed(conversation.as_mut(), true, &phase.stdout, &mut now);
            continue;
        }
        let prepared = protocol.prepare(&phase.prompt).unwrap();
        let mut input = Vec::new();
        conversation.begin(&phase.prompt, &prepared, now, &mut input);
        let wrote = feed(conversation.as_mut(), false, &phase.stdout, &mut now);
        let answer = conversation.finish().expect("the turn succeeded");
        answers.push((answer, wrote));
    }
    answers
}

fn protocol(tool: &str) -> std::sync::Arc<dyn Protocol> {
    ToolRegistry::builtin().get(tool).unwrap().build_protocol()
}

#[test]
fn claude_transcript_replays_to_answers_usage_and_denials() {
    let answers = replay(protocol("claude").as_ref(), &fixture("claude"));
    assert_eq!(answers.len(), 3);
    let (hello, _) = &answers[0];
    assert_eq!(hello.text, "FAKE-REPLY: hello there");
    let usage = hello.usage.expect("usage");
    assert!(
        usage.cache_read_tokens > 0 && usage.cache_write_tokens > 0,
        "{usage:?}"
    );
    assert!(hello.session_id.is_some());
    let (write, _) = &answers[1];
    assert!(
        write.text.starts_with("TOOLS-DONE: File created"),
        "{}",
        write.text
    );
    assert!(write.denials.is_empty());
    // The shell command asked for permission; `--approve none` (the default) denied it.
    let (bash, wrote) = &answers[2];
    let wrote = String::from_utf8_lossy(wrote);
    assert!(wrote.contains("\"behavior\":\"deny\""), "{wrote}");
    assert_eq!(bash.denials.len(), 1, "{:?}", bash.denials);
    assert_eq!(bash.denials[0].tool, "Bash");
    assert!(bash.denials[0].target.contains("open('x'"));
}

#[test]
fn codex_transcript_replays_to_answers_usage_deltas_and_denials() {
    let answers = replay(protocol("codex").as_ref(), &fixture("codex"));
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0].0.text, "FAKE-REPLY: hello there");
    // Usage is each turn's change in the thread's total, never the running total.
    let first = answers[0].0.usage.expect("usage");
    let second = answers[1].0.usage.expect("usage");
    assert!(
        first.input_tokens > 0 && first.cache_read_tokens > 0,
        "{first:?}"
    );
    assert!(
        second.total_input_tokens() < 4 * first.total_input_tokens(),
        "{second:?}"
    );
    assert!(
        answers[1].0.text.starts_with("TOOLS-DONE"),
        "{}",
        answers[1].0.text
    );
    let (escalate, wrote) = &answers[2];
    let wrote = String::from_utf8_lossy(wrote);
    assert!(wrote.contains("\"decision\":\"decline\""), "{wrote}");
    assert_eq!(escalate.denials.len(), 1, "{:?}", escalate.denials);
    assert_eq!(escalate.denials[0].tool, "commandExecution");
    assert!(escalate.denials[0]
        .target
        .contains("touch /tmp/aim-outside"));
}

#[test]
fn aider_transcript_replays_with_its_question_answered_no() {
    // The built-in aider says --yes-always; this recording has none, so aider asked.
    let mut spec = ToolRegistry::builtin().get("aider").unwrap();
    spec.args.retain(|a| a != "--yes-always");
    spec.permissions = None;
    let answers = replay(spec.build_protocol().as_ref(), &fixture("aider"));
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].0.text, "FAKE-REPLY: hello there");
    assert_eq!(answers[0].0.usage, Some(aim::protocol::Usage::new(44, 2)));
    let (edit, wrote) = &answers[1];
    assert_eq!(wrote, b"n\n");
    assert_eq!(
        edit.denials,
        vec![Denial::new(
            "Create new file?",
            "hello.txt",
            "denied by aim (--approve none)"
        )]
    );
    assert!(
        !edit.text.contains("Tokens:") && !edit.text.contains("Skipping"),
        "{}",
        edit.text
    );
    assert_eq!(edit.usage, Some(aim::protocol::Usage::new(46, 4)));
}
