//! [`ClaudeStreamJson`]: Claude Code in `-p --input-format stream-json --output-format
//! stream-json --verbose` mode.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::{json, Value};

use super::jsonl::{str_at, u64_at, JsonLines};
use super::{check_prompt, Answer, Between, Context, Conversation, Protocol, Step, Usage};
use crate::permissions::{
    ApprovalRequest, Approvals, Decision, Denial, PendingApprovals, Permissions,
};
use crate::spec::{Stream, ToolSpec};

/// Tools that only read: allowed under every permission setting when claude asks.
const READ_TOOLS: &[&str] = &[
    "Read",
    "Glob",
    "Grep",
    "LS",
    "NotebookRead",
    "TodoWrite",
    "TaskList",
    "TaskGet",
];
/// Tools that ask the user a question: nobody can answer one.
const QUESTION_TOOLS: &[&str] = &["AskUserQuestion"];

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
///
/// Permissions (the spec's `permissions`, unless its arguments already name a
/// `--permission-mode`): `read-only` runs claude in `--permission-mode default`, `edit` in
/// `acceptEdits`, both with `--permission-prompt-tool stdio` so that every tool use claude
/// would ask a user about arrives as a `can_use_tool` control request, answered by the spec's
/// approvals (read-only tools are allowed; `AskUserQuestion` is refused and the turn ends
/// with [`Error::InputRequired`](crate::Error::InputRequired)); `full` is
/// `bypassPermissions` (which claude refuses to run as root: a launch error). The result's
/// `permission_denials` become the answer's `denials`. `usage` sums the turn's model calls,
/// cache reads and writes included.
#[derive(Debug, Clone)]
pub struct ClaudeStreamJson {
    max_prompt_bytes: usize,
    permissions: Option<Permissions>,
    /// The spec's arguments choose the permission mode themselves.
    own_mode: bool,
}

impl ClaudeStreamJson {
    /// The protocol, with `spec`'s prompt cap and permissions.
    pub fn new(spec: &ToolSpec) -> Self {
        ClaudeStreamJson {
            max_prompt_bytes: spec.max_prompt_bytes,
            permissions: spec.permissions,
            own_mode: spec.args.iter().any(|a| {
                a.starts_with("--permission-mode")
                    || a.starts_with("--permission-prompt-tool")
                    || a == "--dangerously-skip-permissions"
            }),
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

    fn launch_args(&self) -> Vec<String> {
        let Some(permissions) = self.permissions.filter(|_| !self.own_mode) else {
            return Vec::new();
        };
        let mode = match permissions {
            Permissions::ReadOnly => "default",
            Permissions::Edit => "acceptEdits",
            Permissions::Full => "bypassPermissions",
        };
        let mut args = vec!["--permission-mode".to_string(), mode.to_string()];
        if permissions != Permissions::Full {
            args.extend(["--permission-prompt-tool".to_string(), "stdio".to_string()]);
        }
        args
    }

    fn conversation(&self, context: &Context) -> Box<dyn Conversation> {
        Box::new(ClaudeConversation {
            instance: context.instance,
            approvals: context.approvals.clone(),
            permissions: context.permissions,
            asked: PendingApprovals::default(),
            reasons: Vec::new(),
            seen_denials: HashSet::new(),
            question: None,
            activity: None,
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

/// A `can_use_tool` request waiting for the approver.
#[derive(Debug)]
struct Asked {
    request_id: String,
    tool_use_id: Option<String>,
    input: Value,
}

#[derive(Debug)]
struct ClaudeConversation {
    instance: usize,
    approvals: Approvals,
    permissions: Option<Permissions>,
    /// Requests the approver is deciding.
    asked: PendingApprovals<Asked>,
    /// Why tool uses were denied by us: (tool_use_id, reason).
    reasons: Vec<(String, String)>,
    /// Denials already reported (claude may repeat a session's denials).
    seen_denials: HashSet<String>,
    /// A question nobody could answer, this turn.
    question: Option<String>,
    /// What the tool was last doing, in words.
    activity: Option<String>,
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
        self.question = None;
        self.activity = Some("waiting for the model".into());
        input.extend_from_slice(prepared);
    }

    fn answering(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Step {
        if stream != Stream::Stdout {
            return Step::Pending;
        }
        if self.lines.len() + bytes.len() > self.limit {
            return Step::TooLarge;
        }
        let mut requests = Vec::new();
        let mut activity = None;
        let (session_id, result, delta) = (&mut self.session_id, &mut self.result, &mut self.delta);
        let done = self.lines.push(bytes, |event| {
            match str_at(&event, &["type"]) {
                Some("control_request") => {
                    requests.push(event);
                    return false;
                }
                Some("assistant") => {
                    if let Some(uses) = event["message"]["content"].as_array() {
                        for tool in uses.iter().filter(|c| c["type"] == "tool_use") {
                            activity = Some(format!(
                                "using {} on {}",
                                str_at(tool, &["name"]).unwrap_or("a tool"),
                                target_of(&tool["input"])
                            ));
                        }
                    }
                }
                Some("system") if str_at(&event, &["subtype"]) == Some("api_retry") => {
                    log::warn!("claude retries its model call: {event}");
                    activity = Some(format!("retrying the model call ({event})"));
                }
                _ => {}
            }
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
        if activity.is_some() {
            self.activity = activity;
        }
        for request in requests {
            self.control_request(request, now, input);
        }
        if done {
            Step::Done
        } else {
            Step::Pending
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.asked.deadline()
    }

    fn wake(&mut self, now: Instant, input: &mut Vec<u8>) -> Step {
        for (asked, decision) in self.asked.decided(now) {
            self.respond(&asked, decision, input);
        }
        Step::Pending
    }

    fn activity(&self) -> Option<String> {
        self.activity.clone()
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
            (i, o) => Some(Usage::new(i.unwrap_or(0), o.unwrap_or(0)).with_cache(
                u64_at(&result, &["usage", "cache_read_input_tokens"]).unwrap_or(0),
                u64_at(&result, &["usage", "cache_creation_input_tokens"]).unwrap_or(0),
            )),
        };
        let denials = self.denials(&result);
        Ok(Answer {
            text,
            transcript: std::mem::take(&mut self.lines.transcript),
            stderr: None,
            session_id: self.session_id.clone(),
            usage,
            cost_usd: Some(cost),
            denials,
            files_edited: Vec::new(),
            input_required: self.question.take(),
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

impl ClaudeConversation {
    /// A control request from claude: `can_use_tool` goes to the approvals; anything else is
    /// refused.
    fn control_request(&mut self, event: Value, now: Instant, input: &mut Vec<u8>) {
        let request_id = str_at(&event, &["request_id"])
            .unwrap_or_default()
            .to_string();
        let request = &event["request"];
        if str_at(request, &["subtype"]) != Some("can_use_tool") {
            line(
                &json!({"type": "control_response", "response": {"subtype": "error",
                        "request_id": request_id, "error": "not supported by aim"}}),
                input,
            );
            return;
        }
        let tool = str_at(request, &["tool_name"])
            .unwrap_or("tool")
            .to_string();
        let tool_input = request.get("input").cloned().unwrap_or_default();
        let target = target_of(&tool_input);
        let tool_use_id = str_at(request, &["tool_use_id"]).map(str::to_string);
        self.activity = Some(format!("asking to use {tool} on {target}"));
        let asked = Asked {
            request_id,
            tool_use_id,
            input: tool_input,
        };
        if QUESTION_TOOLS.contains(&tool.as_str()) {
            self.question = Some(question_text(&asked.input));
            let decision = Decision::Deny("nobody can answer questions in this session".into());
            self.respond(&asked, decision, input);
            return;
        }
        if READ_TOOLS.contains(&tool.as_str()) || self.permissions == Some(Permissions::Full) {
            self.respond(&asked, Decision::Allow, input);
            return;
        }
        let mut ask = ApprovalRequest::new(self.instance, tool, target);
        if let Some(reason) =
            str_at(request, &["decision_reason"]).or_else(|| str_at(request, &["description"]))
        {
            ask = ask.with_reason(reason);
        }
        let pending = self.approvals.ask(ask, now);
        if let Some((asked, decision)) = self.asked.ask(asked, pending, now) {
            self.respond(&asked, decision, input);
        }
    }

    /// Answers a `can_use_tool` request.
    fn respond(&mut self, asked: &Asked, decision: Decision, input: &mut Vec<u8>) {
        let response = match &decision {
            Decision::Allow => json!({"behavior": "allow", "updatedInput": asked.input}),
            Decision::Deny(reason) => {
                if let Some(id) = &asked.tool_use_id {
                    self.reasons.push((id.clone(), reason.clone()));
                }
                json!({"behavior": "deny", "message": reason})
            }
        };
        line(
            &json!({"type": "control_response", "response": {"subtype": "success",
                    "request_id": asked.request_id, "response": response}}),
            input,
        );
        self.activity = Some(format!("answered a permission request: {decision:?}"));
    }

    /// The result's `permission_denials` not reported before.
    fn denials(&mut self, result: &Value) -> Vec<Denial> {
        let Some(list) = result.get("permission_denials").and_then(Value::as_array) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for denial in list {
            let id = str_at(denial, &["tool_use_id"])
                .unwrap_or_default()
                .to_string();
            if !id.is_empty() && !self.seen_denials.insert(id.clone()) {
                continue;
            }
            let reason = self
                .reasons
                .iter()
                .find(|(use_id, _)| *use_id == id)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| "not allowed by claude's permission mode".into());
            out.push(Denial::new(
                str_at(denial, &["tool_name"]).unwrap_or("tool"),
                target_of(&denial["tool_input"]),
                reason,
            ));
        }
        self.reasons.clear();
        out
    }
}

fn line(value: &Value, input: &mut Vec<u8>) {
    input.extend_from_slice(value.to_string().as_bytes());
    input.push(b'\n');
}

/// What a tool use acts on: its path, command, pattern or URL.
fn target_of(input: &Value) -> String {
    [
        "file_path",
        "command",
        "path",
        "notebook_path",
        "url",
        "pattern",
    ]
    .iter()
    .find_map(|k| str_at(input, &[k]))
    .unwrap_or_default()
    .to_string()
}

/// The text of an `AskUserQuestion` tool use.
fn question_text(input: &Value) -> String {
    input["questions"]
        .as_array()
        .map(|qs| {
            qs.iter()
                .filter_map(|q| str_at(q, &["question"]))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|q| !q.is_empty())
        .unwrap_or_else(|| input.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_become_claude_flags_unless_the_args_choose() {
        let args = |spec: ToolSpec| ClaudeStreamJson::new(&spec).launch_args().join(" ");
        let spec = ToolSpec::new("claude", "claude");
        assert_eq!(args(spec.clone()), "");
        assert_eq!(
            args(spec.clone().permissions(Permissions::Edit)),
            "--permission-mode acceptEdits --permission-prompt-tool stdio"
        );
        assert_eq!(
            args(spec.clone().permissions(Permissions::ReadOnly)),
            "--permission-mode default --permission-prompt-tool stdio"
        );
        assert_eq!(
            args(spec.clone().permissions(Permissions::Full)),
            "--permission-mode bypassPermissions"
        );
        let own = spec
            .args(["--permission-mode", "plan"])
            .permissions(Permissions::Edit);
        assert_eq!(args(own), "");
    }

    #[test]
    fn a_question_for_the_user_is_refused_and_ends_as_input_required() {
        let spec = ToolSpec::new("claude", "claude").permissions(Permissions::Edit);
        let protocol = ClaudeStreamJson::new(&spec);
        let mut context = Context::new(i32::MAX, 0, 1 << 20);
        context.permissions = spec.permissions;
        let mut c = protocol.conversation(&context);
        let now = Instant::now();
        let mut input = Vec::new();
        c.begin("ask me", b"", now, &mut input);
        let ask = json!({"type": "control_request", "request_id": "r1", "request": {
            "subtype": "can_use_tool", "tool_name": "AskUserQuestion", "tool_use_id": "tu1",
            "input": {"questions": [{"question": "Which color?"}]}}});
        c.answering(
            Stream::Stdout,
            format!("{ask}\n").as_bytes(),
            now,
            &mut input,
        );
        let wrote = String::from_utf8(input.clone()).unwrap();
        assert!(
            wrote.contains("\"behavior\":\"deny\"") && wrote.contains("r1"),
            "{wrote}"
        );
        let result = json!({"type": "result", "subtype": "success", "is_error": false,
            "result": "ok", "total_cost_usd": 0.5,
            "usage": {"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 7,
                      "cache_creation_input_tokens": 5},
            "permission_denials": [{"tool_name": "AskUserQuestion", "tool_use_id": "tu1",
                                    "tool_input": {}}]});
        assert_eq!(
            c.answering(
                Stream::Stdout,
                format!("{result}\n").as_bytes(),
                now,
                &mut input
            ),
            Step::Done
        );
        let answer = c.finish().unwrap();
        assert_eq!(answer.input_required.as_deref(), Some("Which color?"));
        assert_eq!(answer.usage, Some(Usage::new(3, 2).with_cache(7, 5)));
        assert_eq!(
            answer.denials[0].reason,
            "nobody can answer questions in this session"
        );
    }
}
