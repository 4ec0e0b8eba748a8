//! [`ClaudeStreamJson`]: Claude Code in `-p --input-format stream-json --output-format
//! stream-json --verbose` mode.

use std::time::Instant;

use super::jsonl::{str_at, u64_at, JsonLines};
use super::{check_prompt, Answer, Between, Context, Conversation, Protocol, Step, Usage};
use crate::spec::{Stream, ToolSpec};

/// The request id of the readiness check.
const INIT_REQUEST: &str = "aim-init";

/// Claude Code's stream-json mode: one JSON user message per prompt; the answer is complete
/// at the `{"type":"result"}` event, whose `result` is the `text`; `session_id`, `usage` and
/// the turn's cost (the change in `total_cost_usd`) are surfaced. A result with `is_error`
/// becomes [`Error::ToolReported`](crate::Error::ToolReported).
///
/// Readiness: an `initialize` control request, answered by claude itself without a model
/// call, proves the process reads and answers stream-json before the instance counts as
/// ready. (A broken API key or endpoint still shows only at the first prompt: checking those
/// would cost a model call per start.)
#[derive(Debug, Clone)]
pub struct ClaudeStreamJson {
    max_prompt_bytes: usize,
}

impl ClaudeStreamJson {
    /// The protocol, with `spec`'s prompt cap.
    pub fn new(spec: &ToolSpec) -> Self {
        ClaudeStreamJson {
            max_prompt_bytes: spec.max_prompt_bytes,
        }
    }
}

impl Protocol for ClaudeStreamJson {
    fn name(&self) -> &str {
        "claude_stream_json"
    }

    fn prepare(&self, prompt: &str) -> Result<Vec<u8>, String> {
        check_prompt(prompt, self.max_prompt_bytes)?;
        let message = serde_json::json!({
            "type": "user",
            "message": {"role": "user", "content": prompt},
        });
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        Ok(line)
    }

    fn conversation(&self, context: &Context) -> Box<dyn Conversation> {
        Box::new(ClaudeConversation {
            limit: context.max_response_bytes,
            lines: JsonLines::default(),
            result: None,
            session_id: None,
            total_cost: 0.0,
            resumed: context.resume.clone(),
            restored: None,
            delta: String::new(),
        })
    }

    fn resume_args(&self, token: &str) -> Vec<String> {
        vec!["--resume".into(), token.into()]
    }
}

#[derive(Debug)]
struct ClaudeConversation {
    limit: usize,
    lines: JsonLines,
    result: Option<serde_json::Value>,
    session_id: Option<String>,
    /// `total_cost_usd` after the previous turn (claude reports the session's total).
    total_cost: f64,
    /// The session this process was started to resume (`--resume`).
    resumed: Option<String>,
    /// Known at the first answer: whether it came in the resumed session.
    restored: Option<Result<(), String>>,
    /// Text deltas (`--include-partial-messages`) not yet handed out.
    delta: String,
}

impl Conversation for ClaudeConversation {
    fn open(&mut self, _now: Instant, input: &mut Vec<u8>) -> Step {
        let init = serde_json::json!({
            "type": "control_request",
            "request_id": INIT_REQUEST,
            "request": {"subtype": "initialize"},
        });
        input.extend_from_slice(init.to_string().as_bytes());
        input.push(b'\n');
        Step::Pending
    }

    fn starting(&mut self, stream: Stream, bytes: &[u8], _: Instant, _: &mut Vec<u8>) -> Step {
        if stream != Stream::Stdout {
            return Step::Pending;
        }
        let mut step = Step::Pending;
        self.lines.push(bytes, |event| {
            if str_at(&event, &["type"]) != Some("control_response") {
                return false;
            }
            step = match str_at(&event, &["response", "subtype"]) {
                Some("success") => Step::Done,
                _ => Step::Failed(format!(
                    "claude refused the initialize request: {}",
                    str_at(&event, &["response", "error"]).unwrap_or("no reason given")
                )),
            };
            true
        });
        if step != Step::Pending {
            self.lines.clear();
        }
        step
    }

    fn begin(&mut self, _prompt: &str, prepared: &[u8], _: Instant, input: &mut Vec<u8>) {
        self.lines.clear();
        self.result = None;
        input.extend_from_slice(prepared);
    }

    fn answering(&mut self, stream: Stream, bytes: &[u8], _: Instant, _: &mut Vec<u8>) -> Step {
        if stream != Stream::Stdout {
            return Step::Pending;
        }
        if self.lines.len() + bytes.len() > self.limit {
            return Step::TooLarge;
        }
        let (session_id, result, delta) = (&mut self.session_id, &mut self.result, &mut self.delta);
        let done = self.lines.push(bytes, |event| {
            if str_at(&event, &["event", "delta", "type"]) == Some("text_delta") {
                delta.push_str(str_at(&event, &["event", "delta", "text"]).unwrap_or_default());
            }
            if let Some(id) = str_at(&event, &["session_id"]) {
                if session_id.as_deref() != Some(id) {
                    *session_id = Some(id.to_string());
                }
            }
            if str_at(&event, &["type"]) == Some("result") {
                *result = Some(event);
                return true;
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
        if let (Some(wanted), None) = (&self.resumed, &self.restored) {
            self.restored = Some(match &self.session_id {
                Some(id) if id == wanted => Ok(()),
                other => Err(format!(
                    "claude answered in session {} instead of resuming {wanted}",
                    other.as_deref().unwrap_or("(none)")
                )),
            });
        }
        let result = self.result.take().unwrap_or_default();
        let text = str_at(&result, &["result"]).unwrap_or_default().to_string();
        let total = result
            .get("total_cost_usd")
            .and_then(|c| c.as_f64())
            .unwrap_or(self.total_cost);
        let cost = (total - self.total_cost).max(0.0);
        self.total_cost = total;
        if result.get("is_error").and_then(|e| e.as_bool()) == Some(true) {
            return Err(if text.is_empty() {
                str_at(&result, &["subtype"]).unwrap_or("error").to_string()
            } else {
                text
            });
        }
        let usage = match (
            u64_at(&result, &["usage", "input_tokens"]),
            u64_at(&result, &["usage", "output_tokens"]),
        ) {
            (None, None) => None,
            (i, o) => Some(Usage::new(i.unwrap_or(0), o.unwrap_or(0))),
        };
        Ok(Answer {
            text,
            transcript: std::mem::take(&mut self.lines.transcript),
            stderr: None,
            session_id: self.session_id.clone(),
            usage,
            cost_usd: Some(cost),
        })
    }

    fn between(&mut self, stream: Stream, _bytes: &[u8], _just_finished: bool) -> Between {
        // Nothing on stdout is expected between a result and the next message.
        match stream {
            Stream::Stdout => Between::Late,
            Stream::Stderr => Between::Stray,
        }
    }

    fn resume_token(&self) -> Option<String> {
        self.session_id.clone()
    }

    fn take_delta(&mut self, _raw: &[u8]) -> Option<String> {
        (!self.delta.is_empty()).then(|| std::mem::take(&mut self.delta))
    }

    fn interrupt(&mut self, input: &mut Vec<u8>) -> super::Interrupt {
        let request = serde_json::json!({
            "type": "control_request",
            "request_id": "aim-interrupt",
            "request": {"subtype": "interrupt"},
        });
        input.extend_from_slice(request.to_string().as_bytes());
        input.push(b'\n');
        super::Interrupt::Written
    }

    fn restored(&self) -> Option<Result<(), String>> {
        self.restored.clone()
    }
}
