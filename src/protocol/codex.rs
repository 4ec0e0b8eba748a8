//! [`CodexAppServer`]: `codex app-server`, JSON-RPC 2.0 over stdio (one JSON object a line,
//! without the `"jsonrpc"` member).

use std::time::Instant;

use serde_json::{json, Value};

use super::jsonl::{str_at, u64_at, JsonLines};
use super::{check_prompt, Answer, Between, Context, Conversation, Protocol, Step, Usage};
use crate::permissions::{
    ApprovalRequest, Approvals, Decision, Denial, PendingApprovals, Permissions,
};
use crate::spec::{Stream, ToolSpec};

/// Command actions that only read (codex's `commandActions[].type`).
const READ_ACTIONS: &[&str] = &["read", "listFiles", "search"];

/// Request ids of the handshake; turns count up from 4.
const INITIALIZE: u64 = 1;
const THREAD_START: u64 = 2;
/// A fresh thread after `thread/resume` failed.
const THREAD_START_AFTER_RESUME: u64 = 3;

/// Codex's app-server protocol. At start: `initialize`, `initialized`, then `thread/start`;
/// the instance is ready when the server answers with its thread id. Each prompt is a
/// `turn/start` request on that thread; the answer is complete at the thread's
/// `turn/completed` notification, and `text` is the turn's last agent message. `session_id` is
/// the thread id, `usage` the turn's tokens (`thread/tokenUsage/updated`). A JSON-RPC error
/// response, an `error` notification or a failed turn becomes
/// [`Error::ToolReported`](crate::Error::ToolReported) with codex's message. A restarted
/// instance starts a new thread.
///
/// Permissions map onto codex's sandbox and approval policy, sent on `thread/start`,
/// `thread/resume` and every `turn/start` (with the working directory as the writable
/// root): `read-only` is the `read-only` sandbox with approval policy `untrusted` (codex asks
/// before any command; read-only commands are allowed, others go to the spec's approvals),
/// `edit` is `workspace-write` with `on-request` (the model asks to leave the sandbox),
/// `full` is `danger-full-access` with `never`. Without permissions, or when the spec's
/// arguments set `approval_policy` / `sandbox_mode` with `-c`, codex's own configuration
/// holds. Approval requests from the server are answered by the spec's approvals; declined
/// ones become the answer's `denials`. A request for user input (`requestUserInput`, an
/// MCP elicitation) is refused and the turn interrupted: it fails with
/// [`Error::InputRequired`](crate::Error::InputRequired). `usage` is the change in the
/// thread's `tokenUsage.total` over the turn (cached input as cache reads). An `error`
/// notification that codex will retry ("Reconnecting...") is logged as a warning.
#[derive(Debug, Clone)]
pub struct CodexAppServer {
    max_prompt_bytes: usize,
    permissions: Option<Permissions>,
    own_approval: bool,
    own_sandbox: bool,
}

impl CodexAppServer {
    /// The protocol, with `spec`'s prompt cap and permissions.
    pub fn new(spec: &ToolSpec) -> Self {
        CodexAppServer {
            max_prompt_bytes: spec.max_prompt_bytes,
            permissions: spec.permissions,
            own_approval: spec.args.iter().any(|a| a.contains("approval_policy")),
            own_sandbox: spec
                .args
                .iter()
                .any(|a| a.contains("sandbox_mode") || a == "--sandbox" || a == "-s"),
        }
    }
}

/// What a conversation sends codex about permissions.
#[derive(Debug, Clone, Default)]
struct Policy {
    approval: Option<&'static str>,
    sandbox: Option<&'static str>,
    sandbox_policy: Option<Value>,
    cwd: Option<String>,
    permissions: Option<Permissions>,
}

impl Policy {
    fn thread_params(&self, mut params: Value) -> Value {
        if let Some(approval) = self.approval {
            params["approvalPolicy"] = approval.into();
        }
        if let Some(sandbox) = self.sandbox {
            params["sandbox"] = sandbox.into();
        }
        if let Some(cwd) = &self.cwd {
            params["cwd"] = cwd.as_str().into();
        }
        params
    }

    fn turn_params(&self, mut params: Value) -> Value {
        if let Some(approval) = self.approval {
            params["approvalPolicy"] = approval.into();
        }
        if let Some(policy) = &self.sandbox_policy {
            params["sandboxPolicy"] = policy.clone();
        }
        if let Some(cwd) = &self.cwd {
            params["cwd"] = cwd.as_str().into();
        }
        params
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
        // The working directory codex is told about is the process's own. On another host
        // that is the far side's: the spec's `cwd` when absolute; otherwise (relative to the
        // remote login's directory, or none) codex keeps the one it was started in, which
        // this machine cannot name.
        let cwd = match (&context.host, &context.cwd) {
            (Some(_), Some(dir)) if std::path::Path::new(dir).is_absolute() => Some(dir.clone()),
            (Some(_), _) => None,
            (None, dir) => std::env::current_dir().ok().map(|here| {
                match dir {
                    Some(dir) => here.join(dir),
                    None => here,
                }
                .display()
                .to_string()
            }),
        };
        let mut policy = Policy {
            cwd: cwd.clone(),
            permissions: self.permissions,
            ..Policy::default()
        };
        if let Some(permissions) = self.permissions {
            if !self.own_approval {
                policy.approval = Some(match permissions {
                    Permissions::ReadOnly => "untrusted",
                    Permissions::Edit => "on-request",
                    Permissions::Full => "never",
                });
            }
            if !self.own_sandbox {
                let (mode, sandbox_policy) = match permissions {
                    Permissions::ReadOnly => ("read-only", json!({"type": "readOnly"})),
                    Permissions::Edit => (
                        "workspace-write",
                        json!({"type": "workspaceWrite", "networkAccess": false,
                               "writableRoots": cwd.iter().collect::<Vec<_>>()}),
                    ),
                    Permissions::Full => {
                        ("danger-full-access", json!({"type": "dangerFullAccess"}))
                    }
                };
                policy.sandbox = Some(mode);
                policy.sandbox_policy = Some(sandbox_policy);
            }
        }
        Box::new(CodexConversation {
            instance: context.instance,
            approvals: context.approvals.clone(),
            policy,
            asked: PendingApprovals::default(),
            total: None,
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
    /// The thread's `tokenUsage.total` when the turn began (`None`: not known yet).
    total_before: Option<Tokens>,
    /// The thread's `tokenUsage.total` at the last update of this turn.
    total_now: Option<Tokens>,
    error: Option<String>,
    denials: Vec<Denial>,
    /// A request for input nobody could give.
    question: Option<String>,
    /// The turn/interrupt sent after such a request.
    interrupted: bool,
    /// What codex was last doing, in words.
    activity: Option<String>,
}

/// One of codex's `TokenUsageBreakdown`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tokens {
    input: u64,
    cached: u64,
    cache_write: u64,
    output: u64,
}

impl Tokens {
    fn of(value: &Value) -> Option<Tokens> {
        Some(Tokens {
            input: u64_at(value, &["inputTokens"])?,
            cached: u64_at(value, &["cachedInputTokens"]).unwrap_or(0),
            cache_write: u64_at(value, &["cacheWriteInputTokens"]).unwrap_or(0),
            output: u64_at(value, &["outputTokens"])?,
        })
    }

    fn minus(self, other: Tokens) -> Tokens {
        Tokens {
            input: self.input.saturating_sub(other.input),
            cached: self.cached.saturating_sub(other.cached),
            cache_write: self.cache_write.saturating_sub(other.cache_write),
            output: self.output.saturating_sub(other.output),
        }
    }

    /// As [`Usage`]: codex counts cached input inside `inputTokens`.
    fn usage(self) -> Usage {
        Usage::new(
            self.input.saturating_sub(self.cached + self.cache_write),
            self.output,
        )
        .with_cache(self.cached, self.cache_write)
    }
}

/// An approval request waiting for the approver.
#[derive(Debug)]
struct Asked {
    id: Value,
    method: String,
    tool: String,
    target: String,
}

#[derive(Debug)]
struct CodexConversation {
    instance: usize,
    approvals: Approvals,
    policy: Policy,
    /// Approval requests the approver is deciding.
    asked: PendingApprovals<Asked>,
    /// The thread's `tokenUsage.total` after the last turn.
    total: Option<Tokens>,
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
                        "params": self.policy.thread_params(json!({"threadId": thread}))}),
                input,
            ),
            None => line(
                &json!({"id": THREAD_START, "method": "thread/start",
                        "params": self.policy.thread_params(json!({}))}),
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
        let policy = &self.policy;
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
                                "params": policy.thread_params(json!({}))}),
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
        self.turn = Turn {
            total_before: self.total,
            activity: Some("waiting for the model".into()),
            ..Turn::default()
        };
        let id = self.next_id;
        self.next_id += 1;
        self.turn_request = Some(id);
        let params = self.policy.turn_params(json!({
            "threadId": self.thread_id.as_deref().unwrap_or_default(),
            "input": [{"type": "text", "text": prompt}],
        }));
        line(
            &json!({"id": id, "method": "turn/start", "params": params}),
            input,
        );
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
        let (turn, request, thread) = (&mut self.turn, self.turn_request, &self.thread_id);
        let done = self.lines.push(bytes, |message| {
            let method = str_at(&message, &["method"]);
            let id = message.get("id").and_then(Value::as_u64);
            if method.is_some() && message.get("id").is_some() {
                requests.push(message);
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
                "thread/tokenUsage/updated" => {
                    let usage = &params["tokenUsage"];
                    if let Some(total) = Tokens::of(&usage["total"]) {
                        if turn.total_before.is_none() {
                            // The first update this process saw: the total before this model
                            // call is the total minus the call.
                            let last = Tokens::of(&usage["last"]).unwrap_or_default();
                            turn.total_before = Some(total.minus(last));
                        }
                        turn.total_now = Some(total);
                    }
                }
                "item/started" | "item/completed" => {
                    let item = &params["item"];
                    let kind = str_at(item, &["type"]).unwrap_or("item");
                    let what = str_at(item, &["command"]).unwrap_or_default();
                    let verb = if method == Some("item/started") {
                        "running"
                    } else {
                        "finished"
                    };
                    turn.activity = Some(format!("{verb} {kind} {what}").trim_end().to_string());
                    if method == Some("item/completed") && kind == "agentMessage" {
                        let text = str_at(item, &["text"]).unwrap_or_default();
                        turn.last_message = Some(text.to_string());
                    }
                }
                "error" if params["willRetry"].as_bool() == Some(true) => {
                    let text = str_at(&params, &["error", "message"]).unwrap_or("error");
                    log::warn!("codex retries its model call: {text}");
                    turn.activity = Some(format!("retrying the model call: {text}"));
                }
                "error" => {
                    let text = str_at(&params, &["error", "message"]).unwrap_or("error");
                    turn.error = Some(text.to_string());
                }
                "turn/completed" => {
                    if turn.question.is_some() {
                        // We interrupted it: the question is the outcome.
                        return true;
                    }
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
        for request in requests {
            self.server_request(request, now, input);
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
        self.turn.activity.clone()
    }

    fn finish(&mut self) -> Result<Answer, String> {
        self.turn_request = None;
        let turn = std::mem::take(&mut self.turn);
        if turn.total_now.is_some() {
            self.total = turn.total_now;
        }
        let usage = match (turn.total_now, turn.total_before) {
            (Some(now), Some(before)) => Some(now.minus(before).usage()),
            (Some(now), None) => Some(now.usage()),
            _ => None,
        };
        if turn.question.is_none() {
            if let Some(error) = turn.error {
                return Err(error);
            }
        }
        Ok(Answer {
            text: turn.last_message.unwrap_or_default(),
            transcript: std::mem::take(&mut self.lines.transcript),
            stderr: None,
            session_id: self.thread_id.clone(),
            usage,
            cost_usd: None,
            denials: turn.denials,
            files_edited: Vec::new(),
            input_required: turn.question,
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

impl CodexConversation {
    /// A request from the server during a turn: approvals go to the spec's approvals; a
    /// request for user input is refused and the turn interrupted; anything else is declined.
    fn server_request(&mut self, request: Value, now: Instant, input: &mut Vec<u8>) {
        let method = str_at(&request, &["method"])
            .unwrap_or_default()
            .to_string();
        let params = request.get("params").cloned().unwrap_or_default();
        let id = request.get("id").cloned().unwrap_or_default();
        let (tool, target) = match method.as_str() {
            "item/commandExecution/requestApproval" | "execCommandApproval" => {
                let command = match &params["command"] {
                    Value::String(c) => c.clone(),
                    Value::Array(parts) => parts
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => String::new(),
                };
                ("commandExecution", command)
            }
            "item/fileChange/requestApproval" | "applyPatchApproval" => (
                "fileChange",
                str_at(&params, &["grantRoot"])
                    .unwrap_or_default()
                    .to_string(),
            ),
            "item/permissions/requestApproval" => ("permissions", params.to_string()),
            "item/tool/requestUserInput" | "mcpServer/elicitation/request" => {
                let question = params["questions"]
                    .as_array()
                    .map(|qs| {
                        qs.iter()
                            .filter_map(|q| str_at(q, &["question"]))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .filter(|q| !q.is_empty())
                    .or_else(|| str_at(&params, &["message"]).map(str::to_string))
                    .unwrap_or_else(|| params.to_string());
                decline(&request, input);
                self.turn.question = Some(question);
                self.turn.activity = Some(format!("asking for input ({method})"));
                if !self.turn.interrupted {
                    self.turn.interrupted = true;
                    let _ = self.interrupt(input);
                }
                return;
            }
            _ => {
                decline(&request, input);
                return;
            }
        };
        self.turn.activity = Some(format!("asking to run {tool} {target}"));
        let read_only = params["commandActions"].as_array().is_some_and(|actions| {
            !actions.is_empty()
                && actions
                    .iter()
                    .all(|a| READ_ACTIONS.contains(&str_at(a, &["type"]).unwrap_or_default()))
        });
        let asked = Asked {
            id,
            method,
            tool: tool.to_string(),
            target: target.clone(),
        };
        if read_only || self.policy.permissions == Some(Permissions::Full) {
            self.respond(&asked, Decision::Allow, input);
            return;
        }
        let mut ask = ApprovalRequest::new(self.instance, tool, target);
        if let Some(reason) = str_at(&params, &["reason"]) {
            ask = ask.with_reason(reason);
        }
        let pending = self.approvals.ask(ask, now);
        if let Some((asked, decision)) = self.asked.ask(asked, pending, now) {
            self.respond(&asked, decision, input);
        }
    }

    /// Answers an approval request, in the shape its method wants.
    fn respond(&mut self, asked: &Asked, decision: Decision, input: &mut Vec<u8>) {
        let legacy = matches!(
            asked.method.as_str(),
            "execCommandApproval" | "applyPatchApproval"
        );
        let result = match (&decision, legacy) {
            (Decision::Allow, false) => json!({"decision": "accept"}),
            (Decision::Deny(_), false) => json!({"decision": "decline"}),
            (Decision::Allow, true) => json!({"decision": "approved"}),
            (Decision::Deny(_), true) => json!({"decision": "denied"}),
        };
        if asked.method == "item/permissions/requestApproval" {
            // No shape to grant with: refused as unsupported, which codex treats as a denial.
            line(
                &json!({"id": asked.id, "error": {"code": -32601, "message": "not granted by aim"}}),
                input,
            );
        } else {
            line(&json!({"id": asked.id, "result": result}), input);
        }
        match decision {
            Decision::Deny(reason) => {
                self.turn.denials.push(Denial::new(
                    asked.tool.clone(),
                    asked.target.clone(),
                    reason,
                ));
            }
            Decision::Allow if asked.method == "item/permissions/requestApproval" => {
                self.turn.denials.push(Denial::new(
                    asked.tool.clone(),
                    asked.target.clone(),
                    "aim cannot grant extra permissions",
                ));
            }
            Decision::Allow => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(protocol: &CodexAppServer) -> (Box<dyn Conversation>, Instant) {
        let now = Instant::now();
        let mut conversation = protocol.conversation(&Context::new(i32::MAX, 0, 1 << 20));
        let mut input = Vec::new();
        conversation.open(now, &mut input);
        let started = b"{\"id\":2,\"result\":{\"thread\":{\"id\":\"T\"}}}\n";
        assert_eq!(
            conversation.starting(Stream::Stdout, started, now, &mut input),
            Step::Done
        );
        (conversation, now)
    }

    /// A usage update: the thread's totals, and the last call's (with no cached input).
    fn usage_line(total_in: u64, cached: u64, out: u64, last_in: u64, last_out: u64) -> String {
        format!(
            "{}\n",
            json!({"method": "thread/tokenUsage/updated", "params": {"threadId": "T",
                "tokenUsage": {
                    "total": {"inputTokens": total_in, "cachedInputTokens": cached,
                              "outputTokens": out, "reasoningOutputTokens": 0, "totalTokens": 0},
                    "last": {"inputTokens": last_in, "cachedInputTokens": 0,
                             "outputTokens": last_out, "reasoningOutputTokens": 0, "totalTokens": 0}}}})
        )
    }

    const COMPLETED: &[u8] =
        b"{\"method\":\"turn/completed\",\"params\":{\"threadId\":\"T\",\"turn\":{\"status\":\"completed\"}}}\n";

    #[test]
    fn usage_is_the_change_in_the_thread_total_over_the_turn() {
        let spec = ToolSpec::new("codex", "codex");
        let protocol = CodexAppServer::new(&spec);
        let (mut c, now) = ready(&protocol);
        let mut input = Vec::new();
        c.begin("one", b"", now, &mut input);
        // Two model calls: totals 100 then 250 (of which 120 cached), 30 out.
        for line in [
            usage_line(100, 0, 10, 100, 10),
            usage_line(250, 120, 30, 150, 20),
        ] {
            c.answering(Stream::Stdout, line.as_bytes(), now, &mut input);
        }
        assert_eq!(
            c.answering(Stream::Stdout, COMPLETED, now, &mut input),
            Step::Done
        );
        assert_eq!(
            c.finish().unwrap().usage,
            Some(Usage::new(130, 30).with_cache(120, 0))
        );
        c.begin("two", b"", now, &mut input);
        let line = usage_line(400, 200, 35, 150, 5);
        c.answering(Stream::Stdout, line.as_bytes(), now, &mut input);
        c.answering(Stream::Stdout, COMPLETED, now, &mut input);
        assert_eq!(
            c.finish().unwrap().usage,
            Some(Usage::new(70, 5).with_cache(80, 0))
        );
    }

    #[test]
    fn a_request_for_user_input_is_refused_and_the_turn_interrupted() {
        let spec = ToolSpec::new("codex", "codex");
        let protocol = CodexAppServer::new(&spec);
        let (mut c, now) = ready(&protocol);
        let mut input = Vec::new();
        c.begin("plan it", b"", now, &mut input);
        let started = b"{\"id\":4,\"result\":{\"turn\":{\"id\":\"U\"}}}\n";
        c.answering(Stream::Stdout, started, now, &mut input);
        input.clear();
        let ask = json!({"id": 7, "method": "item/tool/requestUserInput", "params": {
            "threadId": "T", "turnId": "U", "itemId": "i", "isBlocking": true,
            "questions": [{"id": "q", "header": "Q", "question": "Which database?"}]}});
        c.answering(
            Stream::Stdout,
            format!("{ask}\n").as_bytes(),
            now,
            &mut input,
        );
        let wrote = String::from_utf8(input.clone()).unwrap();
        assert!(
            wrote.contains("\"id\":7") && wrote.contains("\"error\""),
            "{wrote}"
        );
        assert!(wrote.contains("turn/interrupt"), "{wrote}");
        let interrupted =
            b"{\"method\":\"turn/completed\",\"params\":{\"threadId\":\"T\",\"turn\":{\"status\":\"interrupted\"}}}\n";
        assert_eq!(
            c.answering(Stream::Stdout, interrupted, now, &mut input),
            Step::Done
        );
        let answer = c.finish().unwrap();
        assert_eq!(answer.input_required.as_deref(), Some("Which database?"));
    }

    /// What a conversation opened with `context` sends first.
    fn opening(spec: &ToolSpec, context: &Context) -> String {
        let mut c = CodexAppServer::new(spec).conversation(context);
        let mut input = Vec::new();
        c.open(Instant::now(), &mut input);
        String::from_utf8(input).unwrap()
    }

    #[test]
    fn the_working_directory_named_to_codex_is_the_one_it_runs_in() {
        let spec = ToolSpec::new("codex", "codex").permissions(Permissions::Edit);
        let here = std::env::current_dir().unwrap().display().to_string();
        let mut local = Context::new(i32::MAX, 0, 1 << 20);
        local.cwd = Some("work".into());
        let text = opening(&spec, &local);
        let mine = format!("{here}/work");
        assert!(text.contains(&format!("\"cwd\":{}", json!(mine))), "{text}");
        // On another host: this machine's directory means nothing there.
        let mut remote = local.clone();
        remote.host = Some("build1".into());
        let text = opening(&spec, &remote);
        assert!(!text.contains("\"cwd\""), "{text}");
        assert!(!text.contains(&here), "{text}");
        remote.cwd = Some("/srv/agents/0".into());
        let text = opening(&spec, &remote);
        assert!(text.contains("\"cwd\":\"/srv/agents/0\""), "{text}");
    }

    #[test]
    fn permissions_map_onto_sandbox_and_approval_policy_unless_the_args_choose() {
        let spec = ToolSpec::new("codex", "codex").permissions(Permissions::ReadOnly);
        let protocol = CodexAppServer::new(&spec);
        let mut c = protocol.conversation(&Context::new(i32::MAX, 0, 1 << 20));
        let mut input = Vec::new();
        c.open(Instant::now(), &mut input);
        let text = String::from_utf8(input).unwrap();
        assert!(text.contains("\"approvalPolicy\":\"untrusted\""), "{text}");
        assert!(text.contains("\"sandbox\":\"read-only\""), "{text}");
        let mine = spec.args(["-c", "approval_policy=\"on-request\""]);
        let protocol = CodexAppServer::new(&mine);
        let mut c = protocol.conversation(&Context::new(i32::MAX, 0, 1 << 20));
        let mut input = Vec::new();
        c.open(Instant::now(), &mut input);
        let text = String::from_utf8(input).unwrap();
        assert!(!text.contains("approvalPolicy"), "{text}");
        assert!(text.contains("\"sandbox\":\"read-only\""), "{text}");
    }
}
