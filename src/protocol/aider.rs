//! [`Aider`]: aider over plain pipes (`--no-pretty --no-fancy-input`).

use std::time::{Duration, Instant};

use super::{check_prompt, Answer, Between, Context, Conversation, Protocol, Step, Usage};
use crate::permissions::{ApprovalRequest, Approvals, Decision, Denial, Pending, Permissions};
use crate::spec::{Stream, ToolSpec};

/// The end of aider's yes/no questions (`Create new file? (Y)es/(N)o [Yes]: `).
const QUESTION_MARK: &str = "(Y)es/(N)o";
/// Questions about files in the working directory: within `edit` permissions.
const EDIT_QUESTIONS: &[&str] = &[
    "Create new file?",
    "Allow edits to file that has not been added to the chat?",
    "Add file to the chat?",
    "Add files to the chat?",
];

/// The tag of multi-line blocks: `{aim` ... `aim}`.
const BLOCK_TAG: &str = "aim";
/// Pauses between checks that aider is blocked reading its stdin.
const READ_CHECK_FIRST: Duration = Duration::from_millis(1);
const READ_CHECK_MAX: Duration = Duration::from_millis(50);
/// Where the launcher cannot tell whether aider reads stdin: how long the prompt must stand unchanged.
const FALLBACK_SETTLE: Duration = Duration::from_millis(500);

/// aider's chat over pipes. After every answer aider prints a blank line, one line per file in
/// the chat, and its prompt (`> `, or `ask> ` and the like in other modes), then reads stdin.
/// An answer is complete when the output ends that way **and** aider's main thread is blocked
/// reading its stdin (asked of its launcher: locally `/proc/PID/syscall`): a reply that merely contains `\n\n> ` while the
/// model is still streaming never ends early, and no quiet time is needed. (Where the check
/// is unavailable, the prompt must stand unchanged for 500 ms.)
///
/// Prompts: one line as it is; several lines, or one starting with `{` (which aider would read
/// as the start of a block), as a `{aim` ... `aim}` block; a line equal to `aim}` is rejected.
/// `text` is the model's reply (or the command's output) without the continuation prompts,
/// the leading newline, the `Tokens:` line and the prompt; `usage` and `cost_usd` come from the
/// `Tokens: N sent, M received. Cost: $x message, ...` line. A model call that failed
/// (litellm's error, no `Tokens:` line) becomes
/// [`Error::ToolReported`](crate::Error::ToolReported). Output while aider waits for a prompt
/// is unexpected: the process is recycled (see [`Between::Late`]).
///
/// Permissions: `read-only` adds `--dry-run` (edits aider did not apply become `denials`);
/// `edit` and `full` leave aider's flags alone (the built-in entry says `--yes-always`).
/// Without `--yes-always`, aider's `(Y)es/(N)o` questions are answered: questions about
/// files (create, edit, add to the chat) with yes under `edit` or `full`, the rest (running a
/// shell command, adding a URL) with yes only under `full`; anything else goes to the spec's
/// approvals, and a no becomes a denial. The `Tokens:` lines of the turn give `usage`
/// (summed); what aider prints after them (`Applied edit to F`, `Commit ...`, file names) is
/// kept out of `text`, and the files it reports editing are `files_edited`.
///
/// Restoring: with `--restore-chat-history` and a `--chat-history-file` (use `{index}` in the
/// path: one file per instance) in the spec's arguments, a restarted aider reloads the
/// conversation from that file; its answers then say `context_restored`.
#[derive(Debug, Clone)]
pub struct Aider {
    max_prompt_bytes: usize,
    permissions: Option<Permissions>,
    dry_run: bool,
    /// The chat history file (with `{index}`), when aider is told to restore from it.
    restore_from: Option<String>,
    cwd: Option<String>,
}

impl Aider {
    /// The protocol, with `spec`'s prompt cap and restore settings.
    pub fn new(spec: &ToolSpec) -> Self {
        let restores = spec.args.iter().any(|a| a == "--restore-chat-history");
        let history = spec
            .args
            .iter()
            .position(|a| a == "--chat-history-file")
            .and_then(|i| spec.args.get(i + 1))
            .filter(|path| *path != "/dev/null")
            .cloned();
        Aider {
            max_prompt_bytes: spec.max_prompt_bytes,
            permissions: spec.permissions,
            dry_run: spec.args.iter().any(|a| a == "--dry-run"),
            restore_from: history.filter(|_| restores),
            cwd: spec.cwd.clone(),
        }
    }

    /// Whether a restarted process of instance `index` has a conversation to restore.
    fn restore_outcome(&self, index: usize) -> Option<Result<(), String>> {
        let template = self.restore_from.as_ref()?;
        let expand = |s: &str| s.replace("{index}", &index.to_string());
        let mut path = std::path::PathBuf::from(expand(template));
        if path.is_relative() {
            if let Some(cwd) = &self.cwd {
                path = std::path::Path::new(&expand(cwd)).join(path);
            }
        }
        Some(match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > 0 => Ok(()),
            _ => Err(format!("no chat history to restore at {}", path.display())),
        })
    }
}

impl Protocol for Aider {
    fn name(&self) -> &str {
        "aider"
    }

    fn prepare(&self, prompt: &str) -> Result<Vec<u8>, String> {
        check_prompt(prompt, self.max_prompt_bytes)?;
        let body = prompt.replace("\r\n", "\n").replace('\r', "\n");
        let mut out = Vec::with_capacity(body.len() + 16);
        if !body.contains('\n') && !body.starts_with('{') {
            out.extend_from_slice(body.as_bytes());
            out.push(b'\n');
            return Ok(out);
        }
        let close = format!("{BLOCK_TAG}}}");
        if body.lines().any(|l| l == close) {
            return Err(format!(
                "a line of the prompt is {close:?}, which ends aider's block"
            ));
        }
        out.extend_from_slice(format!("{{{BLOCK_TAG}\n{body}\n{close}\n").as_bytes());
        Ok(out)
    }

    fn launch_args(&self) -> Vec<String> {
        if self.permissions == Some(Permissions::ReadOnly) && !self.dry_run {
            vec!["--dry-run".into()]
        } else {
            Vec::new()
        }
    }

    fn conversation(&self, context: &Context) -> Box<dyn Conversation> {
        let restored = (context.generation > 1)
            .then(|| self.restore_outcome(context.instance))
            .flatten();
        Box::new(AiderConversation {
            stdin: context.stdin.clone(),
            instance: context.instance,
            permissions: context.permissions,
            approvals: context.approvals.clone(),
            asked: None,
            denials: Vec::new(),
            answered_at: 0,
            limit: context.max_response_bytes,
            out: Vec::new(),
            timer: None,
            restored,
        })
    }
}

/// Why the conversation wants to be ticked.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Check again whether aider reads stdin; then wait `next` before the one after.
    Recheck { at: Instant, next: Duration },
    /// No `/proc` check: done if the prompt still stands at `at`.
    Settle { at: Instant },
}

/// A question the approver is deciding: its request and decision.
#[derive(Debug)]
struct Asked {
    request: ApprovalRequest,
    pending: Pending,
}

#[derive(Debug)]
struct AiderConversation {
    stdin: crate::stdin_wait::StdinProbe,
    instance: usize,
    permissions: Option<Permissions>,
    approvals: Approvals,
    /// The question being decided.
    asked: Option<Asked>,
    /// Questions answered no this turn.
    denials: Vec<Denial>,
    /// Output up to here holds questions already answered.
    answered_at: usize,
    limit: usize,
    /// Stdout since the prompt was written (or since start).
    out: Vec<u8>,
    timer: Option<Timer>,
    restored: Option<Result<(), String>>,
}

impl AiderConversation {
    /// The question aider waits on, when its output ends with one not yet answered:
    /// (the question line, the line before it: a file name or a command).
    fn question(&self) -> Option<(String, String)> {
        let tail = &self.out[self.answered_at.min(self.out.len())..];
        if !tail.ends_with(b": ") {
            return None;
        }
        let text = String::from_utf8_lossy(tail);
        let mut lines = text.rsplit('\n');
        let question = lines.next()?.to_string();
        if !question.contains(QUESTION_MARK) {
            return None;
        }
        let subject = lines
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_string();
        Some((question, subject))
    }

    /// After output or a timer: a question aider waits on is answered (or sent to the
    /// approver) instead of ending the turn.
    fn after(&mut self, step: Step, now: Instant, input: &mut Vec<u8>) -> Step {
        if step != Step::Done {
            return step;
        }
        let Some((question, subject)) = self.question() else {
            return step;
        };
        self.answered_at = self.out.len();
        let wording = question
            .split(QUESTION_MARK)
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let about_files = EDIT_QUESTIONS.iter().any(|q| wording.starts_with(q));
        let request = ApprovalRequest::new(self.instance, wording.clone(), subject)
            .with_reason(question.clone());
        let within = match self.permissions {
            Some(Permissions::Full) => true,
            Some(Permissions::Edit) => about_files,
            _ => false,
        };
        if within {
            self.answer(request, Decision::Allow, input);
            return Step::Pending;
        }
        let pending = self.approvals.ask(request.clone(), now);
        match pending.poll(now) {
            Some(decision) => self.answer(request, decision, input),
            None => self.asked = Some(Asked { request, pending }),
        }
        Step::Pending
    }

    /// Writes the answer to a question; a no is a denial.
    fn answer(&mut self, request: ApprovalRequest, decision: Decision, input: &mut Vec<u8>) {
        match decision {
            Decision::Allow => input.extend_from_slice(b"y\n"),
            Decision::Deny(reason) => {
                input.extend_from_slice(b"n\n");
                self.denials
                    .push(Denial::new(request.tool, request.target, reason));
            }
        }
        self.timer = None;
    }

    /// Done when the output ends with aider's prompt and aider waits for input.
    fn judge(&mut self, now: Instant, pause: Duration) -> Step {
        if prompt_tail(&self.out).is_none() && self.question().is_none() {
            self.timer = None;
            return Step::Pending;
        }
        match self.stdin.check() {
            Some(true) => {
                self.timer = None;
                Step::Done
            }
            Some(false) => {
                self.timer = Some(Timer::Recheck {
                    at: now + pause,
                    next: (pause * 2).min(READ_CHECK_MAX),
                });
                Step::Pending
            }
            None => {
                if !matches!(self.timer, Some(Timer::Settle { .. })) {
                    self.timer = Some(Timer::Settle {
                        at: now + FALLBACK_SETTLE,
                    });
                }
                Step::Pending
            }
        }
    }

    fn output(&mut self, stream: Stream, bytes: &[u8], now: Instant) -> Step {
        if stream != Stream::Stdout || bytes.is_empty() {
            return Step::Pending;
        }
        if self.out.len() + bytes.len() > self.limit {
            return Step::TooLarge;
        }
        self.out.extend_from_slice(bytes);
        // New output restarts any wait for the prompt to stand.
        self.timer = None;
        self.judge(now, READ_CHECK_FIRST)
    }
}

impl Conversation for AiderConversation {
    fn open(&mut self, _now: Instant, _input: &mut Vec<u8>) -> Step {
        Step::Pending
    }

    fn starting(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Step {
        let step = self.output(stream, bytes, now);
        // A question at startup (`Add .aider* to .gitignore?`) is answered, not readiness.
        let step = self.after(step, now, input);
        if step == Step::TooLarge {
            // Startup output is not an answer: keep only the recent part.
            let keep = self.out.len().saturating_sub(4096);
            self.out.drain(..keep);
            self.answered_at = self.answered_at.saturating_sub(keep);
            return Step::Pending;
        }
        if step == Step::Done {
            self.out.clear();
            self.answered_at = 0;
        }
        step
    }

    fn begin(&mut self, _prompt: &str, prepared: &[u8], _: Instant, input: &mut Vec<u8>) {
        self.out.clear();
        self.timer = None;
        self.answered_at = 0;
        self.denials.clear();
        self.asked = None;
        input.extend_from_slice(prepared);
    }

    fn answering(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Step {
        let step = self.output(stream, bytes, now);
        self.after(step, now, input)
    }

    fn wake(&mut self, now: Instant, input: &mut Vec<u8>) -> Step {
        if let Some(asked) = &self.asked {
            if let Some(decision) = asked.pending.poll(now) {
                let asked = self.asked.take().expect("asked");
                self.answer(asked.request, decision, input);
            }
            return Step::Pending;
        }
        let step = self.tick(now);
        self.after(step, now, input)
    }

    fn activity(&self) -> Option<String> {
        if let Some(asked) = &self.asked {
            return Some(format!(
                "asking: {} {}",
                asked.request.reason.as_deref().unwrap_or_default(),
                asked.request.target
            ));
        }
        let tail = String::from_utf8_lossy(&self.out[self.out.len().saturating_sub(200)..])
            .trim()
            .lines()
            .last()
            .map(str::to_string)?;
        Some(format!("last printed: {tail}"))
    }

    fn deadline(&self) -> Option<Instant> {
        if let Some(asked) = &self.asked {
            return asked.pending.deadline();
        }
        self.timer.map(|t| match t {
            Timer::Recheck { at, .. } | Timer::Settle { at } => at,
        })
    }

    fn tick(&mut self, now: Instant) -> Step {
        match self.timer {
            Some(Timer::Recheck { at, next }) if now >= at => self.judge(now, next),
            Some(Timer::Settle { at }) if now >= at => {
                self.timer = None;
                if prompt_tail(&self.out).is_some() || self.question().is_some() {
                    Step::Done
                } else {
                    Step::Pending
                }
            }
            _ => Step::Pending,
        }
    }

    fn finish(&mut self) -> Result<Answer, String> {
        let transcript = std::mem::take(&mut self.out);
        let decoded = decode(&transcript);
        match decoded {
            Decoded::Reply {
                text,
                usage,
                cost,
                edited,
                not_applied,
            } => Ok(Answer {
                text,
                transcript,
                usage,
                cost_usd: cost,
                files_edited: edited,
                denials: std::mem::take(&mut self.denials)
                    .into_iter()
                    .chain(not_applied.into_iter().map(|file| {
                        Denial::new("edit", file, "read-only: aider runs with --dry-run")
                    }))
                    .collect(),
                ..Answer::default()
            }),
            Decoded::ModelError(message) => Err(message),
        }
    }

    fn between(&mut self, stream: Stream, _bytes: &[u8], _just_finished: bool) -> Between {
        match stream {
            Stream::Stdout => Between::Late,
            Stream::Stderr => Between::Stray,
        }
    }

    fn restored(&self) -> Option<Result<(), String>> {
        self.restored.clone()
    }

    fn interrupt(&mut self, _input: &mut Vec<u8>) -> super::Interrupt {
        // One SIGINT stops the model call and brings the prompt back ("^C again to exit").
        super::Interrupt::Signal
    }
}

/// Where the answer's body ends, when `out` ends with aider's prompt: a blank line, one line
/// per file in the chat, and the prompt line (`[mode ]> `).
fn prompt_tail(out: &[u8]) -> Option<usize> {
    if !out.ends_with(b"> ") {
        return None;
    }
    let prompt_start = out.iter().rposition(|&b| b == b'\n')? + 1;
    let mode = &out[prompt_start..out.len() - 2];
    if !mode
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-' || b == b'_')
    {
        return None;
    }
    // Walk back over the file lines to the blank line.
    let mut line_end = prompt_start - 1; // the '\n' ending the line before the prompt
    loop {
        let line_start = out[..line_end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        if line_start == line_end {
            // An empty line: the body ends just before it.
            return Some(line_start.saturating_sub(1));
        }
        if line_start == 0 {
            return None;
        }
        line_end = line_start - 1;
    }
}

enum Decoded {
    Reply {
        text: String,
        usage: Option<Usage>,
        cost: Option<f64>,
        /// Files aider says it edited (`Applied edit to F`).
        edited: Vec<String>,
        /// Files whose edits it did not apply (`--dry-run`).
        not_applied: Vec<String>,
    },
    ModelError(String),
}

fn decode(transcript: &[u8]) -> Decoded {
    let end = prompt_tail(transcript).unwrap_or(transcript.len());
    let body = String::from_utf8_lossy(&transcript[..end]);
    let mut lines: Vec<&str> = body.split('\n').collect();
    // Continuation prompts aider printed while reading a `{aim` block, then the newline
    // aider prints before every answer.
    if let Some(first) = lines.first_mut() {
        while let Some(rest) = first.strip_prefix("> ") {
            *first = rest;
        }
        if *first == ">" {
            *first = "";
        }
    }
    if lines.first() == Some(&"") {
        lines.remove(0);
    }
    // The first `Tokens:` line ends the reply; the rest is aider's bookkeeping (further
    // `Tokens:` lines of the same turn, applied edits, commits, questions).
    let first_tokens = lines.iter().position(|l| parse_tokens_line(l).is_some());
    let mut usage: Option<Usage> = None;
    let mut cost: Option<f64> = None;
    let mut edited = Vec::new();
    let mut not_applied = Vec::new();
    if let Some(at) = first_tokens {
        for line in lines.drain(at..) {
            if let Some((u, c)) = parse_tokens_line(line) {
                let sum = usage.unwrap_or_default();
                usage = Some(
                    Usage::new(
                        sum.input_tokens + u.input_tokens,
                        sum.output_tokens + u.output_tokens,
                    )
                    .with_cache(
                        sum.cache_read_tokens + u.cache_read_tokens,
                        sum.cache_write_tokens + u.cache_write_tokens,
                    ),
                );
                if let Some(c) = c {
                    cost = Some(cost.unwrap_or(0.0) + c);
                }
            } else if let Some(file) = line.strip_prefix("Applied edit to ") {
                edited.push(file.trim().to_string());
            } else if let Some(rest) = line.strip_prefix("Did not apply edit to ") {
                let file = rest.trim_end_matches(" (--dry-run)").trim();
                not_applied.push(file.to_string());
            }
        }
    }
    // A reply without a model call (a command's output) ends with the blank line aider
    // prints before its prompt.
    let text = lines.join("\n");
    let text = if first_tokens.is_some() {
        text.trim_end_matches('\n').to_string()
    } else {
        text
    };
    if usage.is_none()
        && lines
            .iter()
            .any(|l| l.starts_with("litellm.") && l.contains("Error"))
    {
        return Decoded::ModelError(text.trim().to_string());
    }
    Decoded::Reply {
        text,
        usage,
        cost,
        edited,
        not_applied,
    }
}

/// `Tokens: 1.2k sent, 21 received. Cost: $0.0012 message, $0.0034 session.`, with
/// `N cache write, N cache hit,` between sent and received where the provider caches.
fn parse_tokens_line(line: &str) -> Option<(Usage, Option<f64>)> {
    let rest = line.strip_prefix("Tokens: ")?;
    let (counts, rest) = rest.split_once(" received.")?;
    let mut usage = Usage::default();
    let mut sent = false;
    let mut parts = counts.split(", ").peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            usage.output_tokens = count(part)?;
        } else if let Some(n) = part.strip_suffix(" sent") {
            usage.input_tokens = count(n)?;
            sent = true;
        } else if let Some(n) = part.strip_suffix(" cache write") {
            usage.cache_write_tokens = count(n)?;
        } else if let Some(n) = part.strip_suffix(" cache hit") {
            usage.cache_read_tokens = count(n)?;
        } else {
            return None;
        }
    }
    if !sent {
        return None;
    }
    let cost = rest
        .split_once("Cost: $")
        .and_then(|(_, c)| c.split_once(" message"))
        .and_then(|(c, _)| c.trim().parse::<f64>().ok());
    Some((usage, cost))
}

/// `21`, `1.2k`, `3M`, `1,234`.
fn count(text: &str) -> Option<u64> {
    let text = text.trim().replace(',', "");
    let (number, scale) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1e3),
        'M' => (&text[..text.len() - 1], 1e6),
        _ => (&text[..], 1.0),
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| (n * scale).round() as u64)
}

/// aider's arguments for a git worktree of its own: `--no-git` (which the built-in passes so
/// aider never runs `git init` or writes `.gitignore` in a shared directory) is dropped, so
/// aider commits its edits on the worktree's branch, and `--no-gitignore` added, so it does
/// not add `.aider*` to the worktree's `.gitignore`.
pub(crate) fn args_for_git_worktree(args: &mut Vec<String>) {
    if args.iter().any(|a| a == "--no-git") {
        args.retain(|a| a != "--no-git");
        if !args
            .iter()
            .any(|a| a == "--no-gitignore" || a == "--gitignore")
        {
            args.push("--no-gitignore".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_a_git_worktree_aider_commits_without_touching_gitignore() {
        let mut args: Vec<String> = ["--no-git", "--yes-always"].map(String::from).into();
        args_for_git_worktree(&mut args);
        assert_eq!(args, ["--yes-always", "--no-gitignore"]);
        let mut mine: Vec<String> = ["--gitignore"].map(String::from).into();
        args_for_git_worktree(&mut mine);
        assert_eq!(
            mine,
            ["--gitignore"],
            "a spec that already uses git is left alone"
        );
    }

    fn text(transcript: &str) -> String {
        match decode(transcript.as_bytes()) {
            Decoded::Reply { text, .. } => text,
            Decoded::ModelError(e) => panic!("model error {e}"),
        }
    }

    #[test]
    fn the_prompt_ends_an_answer_only_after_a_blank_line() {
        assert!(prompt_tail(b"\nhello\nTokens: 8 sent, 2 received.\n\n> ").is_some());
        assert!(
            prompt_tail(b"\nAdded a.txt to the chat\n\na.txt\nb.txt (read only)\n> ").is_some()
        );
        assert!(prompt_tail(b"\nanswer\n\nask> ").is_some());
        // A quote mid-stream without a blank line before it is no prompt...
        assert!(prompt_tail(b"abcde\n> ").is_none());
        // ...but one after the answer's leading newline looks exactly like one: only the
        // stdin-read check tells them apart (see `judge`).
        assert!(prompt_tail(b"\nabcde\n> ").is_some());
        assert!(prompt_tail(b"> > > ").is_none());
        assert!(prompt_tail(b"\nsome text: > ").is_none());
    }

    #[test]
    fn decodes_replies_without_echoes_prompt_or_tokens_line() {
        assert_eq!(
            text("\nFAKE-REPLY: hi\nTokens: 83 sent, 8 received.\n\n> "),
            "FAKE-REPLY: hi"
        );
        assert_eq!(
            text("> > > \nline one\n> quoted\nline three\nTokens: 1.2k sent, 9 received.\n\n> "),
            "line one\n> quoted\nline three"
        );
        assert_eq!(
            text("\nAdded notes.txt to the chat\n\nnotes.txt\n> "),
            "Added notes.txt to the chat"
        );
        let Decoded::Reply { usage, cost, .. } = decode(
            b"\nok\nTokens: 1.2k sent, 21 received. Cost: $0.0012 message, $0.0034 session.\n\n> ",
        ) else {
            panic!()
        };
        assert_eq!(usage, Some(Usage::new(1200, 21)));
        assert_eq!(cost, Some(0.0012));
    }

    #[test]
    fn a_failed_model_call_is_an_error() {
        let out = "\nlitellm.BadRequestError: OpenAIException - nope\n\n> ";
        assert!(matches!(decode(out.as_bytes()), Decoded::ModelError(m) if m.contains("nope")));
    }

    #[test]
    fn prompts_that_would_switch_input_mode_go_in_a_block() {
        let aider = Aider::new(&ToolSpec::new("aider", "aider"));
        assert_eq!(aider.prepare("hello").unwrap(), b"hello\n");
        assert_eq!(aider.prepare("{python").unwrap(), b"{aim\n{python\naim}\n");
        assert_eq!(aider.prepare("a\r\nb").unwrap(), b"{aim\na\nb\naim}\n");
        assert!(aider.prepare("x\naim}\ny").is_err());
        assert!(aider.prepare("").is_err());
    }
}
