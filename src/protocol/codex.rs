//! [`CodexAppServer`]: `codex app-server`, JSON-RPC 2.0 over stdio (one JSON object a line,
//! without the `"jsonrpc"` member).

use std::time::Instant;

use serde_json::{json, Value};

use super::jsonl::{str_at, u64_at, JsonLines};
use super::{check_prompt, Answer, Between, Context, Conversation, Protocol, Step, Usage};
use crate::spec::{Stream, ToolSpec};

/// Request ids of the handshake; turns count up from 4.
const INITIALIZE: u64 = 1;
const THREAD_START: u64 = 2;
/// A fresh thread after `thread/resume` failed.
const THREAD_START_AFTER_RESUME: u64 = 3;

/// Codex's app-server protocol. At start: `initialize`, `initialized`, then `thread/start`
/// (with `approvalPolicy: never`, so a turn never waits for an approval nobody gives); the
/// instance is ready when the server answers with its thread id. Each prompt is a
/// `turn/start` request on that thread; the answer is complete at the thread's
/// `turn/completed` notification, and `text` is the turn's last agent message. `session_id` is
/// the thread id, `usage` the turn's tokens (`thread/tokenUsage/updated`). A JSON-RPC error
/// response, an `error` notification or a failed turn becomes
/// [`Error::ToolReported`](crate::Error::ToolReported) with codex's message. A restarted
/// instance starts a new thread. Requests from the server (approvals) are declined.
#[derive(Debug, Clone)]
pub struct CodexAppServer {
    max_prompt_bytes: usize,
}

impl CodexAppServer {
    /// The protocol, with `spec`'s prompt cap.
    pub fn new(spec: &ToolSpec) -> Self {
        CodexAppServer {
            max_prompt_bytes: spec.max_prompt_bytes,
        }
    }
}

impl Protocol for CodexAppServer {
    fn name(&self) -> &str {
        "codex_app_server"
    }

    fn prepare(&self, prompt: &str) -> Result<Vec<u8>, String> {
        // The request needs the thread id, known only to the process's conversation.
        check_prompt(prompt, self.max_prompt_bytes).map(|()| Vec::new())
    }

    fn conversation(&self, context: &Context) -> Box<dyn Conversation> {
        Box::new(CodexConversation {
            limit: context.max_response_bytes,
            lines: JsonLines::default(),
            thread_id: None,
            next_id: THREAD_START_AFTER_RESUME + 1,
            turn_request: None,
            turn: Turn::default(),
            resume: context.resume.clone(),
            restored: None,
        })
    }
}

/// What one turn has produced so far.
#[derive(Debug, Default)]
struct Turn {
    /// The turn's id, from the `turn/start` response (for `turn/interrupt`).
    id: Option<String>,
    /// Agent message deltas not yet handed out (for streaming).
    delta: String,
    last_message: Option<String>,
    usage: Option<Usage>,
    error: Option<String>,
}

#[derive(Debug)]
struct CodexConversation {
    limit: usize,
    lines: JsonLines,
    thread_id: Option<String>,
    next_id: u64,
    turn_request: Option<u64>,
    turn: Turn,
    /// The thread this process was started to resume.
    resume: Option<String>,
    restored: Option<Result<(), String>>,
}

fn line(value: &Value, input: &mut Vec<u8>) {
    input.extend_from_slice(value.to_string().as_bytes());
    input.push(b'\n');
}

/// The message of a JSON-RPC error object.
fn error_message(error: &Value) -> String {
    match (str_at(error, &["message"]), error.get("code")) {
        (Some(message), Some(code)) => format!("{message} (JSON-RPC error {code})"),
        (Some(message), None) => message.to_string(),
        _ => error.to_string(),
    }
}

/// Answers a request from the server: we take no part in approvals or tool calls.
fn decline(request: &Value, input: &mut Vec<u8>) {
    if let Some(id) = request.get("id") {
        line(
            &json!({"id": id, "error": {"code": -32601, "message": "not supported by aim"}}),
            input,
        );
    }
}

impl Conversation for CodexConversation {
    fn open(&mut self, _now: Instant, input: &mut Vec<u8>) -> Step {
        let version = env!("CARGO_PKG_VERSION");
        line(
            &json!({"id": INITIALIZE, "method": "initialize",
                    "params": {"clientInfo": {"name": "aim", "version": version}}}),
            input,
        );
        line(&json!({"method": "initialized"}), input);
        match &self.resume {
            Some(thread) => line(
                &json!({"id": THREAD_START, "method": "thread/resume",
                        "params": {"threadId": thread, "approvalPolicy": "never"}}),
                input,
            ),
            None => line(
                &json!({"id": THREAD_START, "method": "thread/start",
                        "params": {"approvalPolicy": "never"}}),
                input,
            ),
        }
        Step::Pending
    }

    fn starting(&mut self, stream: Stream, bytes: &[u8], _: Instant, input: &mut Vec<u8>) -> Step {
        if stream != Stream::Stdout {
            return Step::Pending;
        }
        let mut step = Step::Pending;
        let (thread_id, resume, restored) = (&mut self.thread_id, &self.resume, &mut self.restored);
        self.lines.push(bytes, |message| {
            let id = message.get("id").and_then(Value::as_u64);
            if message.get("method").is_some() {
                decline(&message, input);
                return false;
            }
            if let Some(error) = message.get("error") {
                if id == Some(THREAD_START) && resume.is_some() {
                    // The thread cannot be resumed: start a fresh one, and say so.
                    *restored = Some(Err(format!(
                        "codex could not resume thread {}: {}",
                        resume.as_deref().unwrap_or_default(),
                        error_message(error)
                    )));
                    line(
                        &json!({"id": THREAD_START_AFTER_RESUME, "method": "thread/start",
                                "params": {"approvalPolicy": "never"}}),
                        input,
                    );
                    return false;
                }
                step = Step::Failed(format!("codex handshake: {}", error_message(error)));
                return true;
            }
            if id == Some(THREAD_START) || id == Some(THREAD_START_AFTER_RESUME) {
                if id == Some(THREAD_START) && resume.is_some() {
                    *restored = Some(Ok(()));
                }
                match str_at(&message, &["result", "thread", "id"]) {
                    Some(thread) => {
                        *thread_id = Some(thread.to_string());
                        step = Step::Done;
                    }
                    None => step = Step::Failed("thread/start returned no thread id".into()),
                }
                return true;
            }
            false
        });
        if step != Step::Pending {
            self.lines.clear();
        }
        step
    }

    fn begin(&mut self, prompt: &str, _prepared: &[u8], _: Instant, input: &mut Vec<u8>) {
        self.lines.clear();
        self.turn = Turn::default();
        let id = self.next_id;
        self.next_id += 1;
        self.turn_request = Some(id);
        line(
            &json!({"id": id, "method": "turn/start", "params": {
                "threadId": self.thread_id.as_deref().unwrap_or_default(),
                "input": [{"type": "text", "text": prompt}],
            }}),
            input,
        );
    }

    fn answering(&mut self, stream: Stream, bytes: &[u8], _: Instant, input: &mut Vec<u8>) -> Step {
        if stream != Stream::Stdout {
            return Step::Pending;
        }
        if self.lines.len() + bytes.len() > self.limit {
            return Step::TooLarge;
        }
        let (turn, request, thread) = (&mut self.turn, self.turn_request, &self.thread_id);
        let done = self.lines.push(bytes, |message| {
            let method = str_at(&message, &["method"]);
            let id = message.get("id").and_then(Value::as_u64);
            if method.is_some() && message.get("id").is_some() {
                decline(&message, input);
                return false;
            }
            if method.is_none() {
                // A response: only the one to our turn/start matters.
                if id == request {
                    if let Some(error) = message.get("error") {
                        turn.error = Some(error_message(error));
                        return true;
                    }
                    if let Some(turn_id) = str_at(&message, &["result", "turn", "id"]) {
                        turn.id = Some(turn_id.to_string());
                    }
                }
                return false;
            }
            let params = message.get("params").cloned().unwrap_or_default();
            if let (Some(ours), Some(theirs)) = (thread, str_at(&params, &["threadId"])) {
                if ours != theirs {
                    return false;
                }
            }
            match method.unwrap_or_default() {
                "item/agentMessage/delta" => {
                    turn.delta
                        .push_str(str_at(&params, &["delta"]).unwrap_or_default());
                }
                "item/completed" if str_at(&params, &["item", "type"]) == Some("agentMessage") => {
                    let text = str_at(&params, &["item", "text"]).unwrap_or_default();
                    turn.last_message = Some(text.to_string());
                }
                "thread/tokenUsage/updated" => {
                    let last = &params["tokenUsage"]["last"];
                    if let (Some(i), Some(o)) = (
                        u64_at(last, &["inputTokens"]),
                        u64_at(last, &["outputTokens"]),
                    ) {
                        turn.usage = Some(Usage::new(i, o));
                    }
                }
                "error" => {
                    let text = str_at(&params, &["error", "message"]).unwrap_or("error");
                    turn.error = Some(text.to_string());
                }
                "turn/completed" => {
                    if str_at(&params, &["turn", "status"]) == Some("failed") {
                        if let Some(text) = str_at(&params, &["turn", "error", "message"]) {
                            turn.error = Some(text.to_string());
                        }
                        turn.error.get_or_insert_with(|| "the turn failed".into());
                    }
                    return true;
                }
                _ => {}
            }
            false
        });
        if done {
            Step::Done
        } else {
            Step::Pending
        }
    }

    fn finish(&mut self) -> Result<Answer, String> {
        self.turn_request = None;
        let turn = std::mem::take(&mut self.turn);
        if let Some(error) = turn.error {
            return Err(error);
        }
        Ok(Answer {
            text: turn.last_message.unwrap_or_default(),
            transcript: std::mem::take(&mut self.lines.transcript),
            stderr: None,
            session_id: self.thread_id.clone(),
            usage: turn.usage,
            cost_usd: None,
        })
    }

    fn between(&mut self, _stream: Stream, _bytes: &[u8], _just_finished: bool) -> Between {
        // Notifications arrive between turns too (status changes, rate limits): harmless.
        Between::Stray
    }

    fn resume_token(&self) -> Option<String> {
        self.thread_id.clone()
    }

    fn take_delta(&mut self, _raw: &[u8]) -> Option<String> {
        (!self.turn.delta.is_empty()).then(|| std::mem::take(&mut self.turn.delta))
    }

    fn interrupt(&mut self, input: &mut Vec<u8>) -> super::Interrupt {
        let (Some(thread), Some(turn)) = (&self.thread_id, &self.turn.id) else {
            return super::Interrupt::Recycle;
        };
        let id = self.next_id;
        self.next_id += 1;
        line(
            &json!({"id": id, "method": "turn/interrupt",
                    "params": {"threadId": thread, "turnId": turn}}),
            input,
        );
        super::Interrupt::Written
    }

    fn restored(&self) -> Option<Result<(), String>> {
        self.restored.clone()
    }
}
