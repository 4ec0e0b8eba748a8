//! The contract between an instance's I/O thread and a protocol: the [`Protocol`] and
//! [`Conversation`] traits and their vocabulary. The shipped protocols and the guide are in
//! [`crate::protocol`], which re-exports all of this.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::permissions::{Approvals, Denial, Permissions};

/// Which output stream a marker is looked for on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output (the PTY when the transport is [`Transport::Pty`](crate::Transport::Pty)).
    #[default]
    Stdout,
    /// Standard error (python over pipes prints its `>>> ` prompt there).
    Stderr,
}

/// Which shipped protocol a spec uses. JSON: `"protocol": {"kind": "aider"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ProtocolKind {
    /// The spec's `framing`, `input` and `readiness` fields decide everything ([`Framed`](crate::protocol::Framed)).
    #[default]
    Framed,
    /// aider over pipes ([`Aider`](crate::protocol::Aider)).
    Aider,
    /// `claude -p --input-format stream-json --output-format stream-json --verbose`
    /// ([`ClaudeStreamJson`](crate::protocol::ClaudeStreamJson)).
    ClaudeStreamJson,
    /// `codex app-server`, JSON-RPC over stdio ([`CodexAppServer`](crate::protocol::CodexAppServer)).
    CodexAppServer,
}

impl ProtocolKind {
    /// Whether this is a coding agent's protocol (aider, claude, codex): tools that edit
    /// files in their working directory.
    pub fn is_agent(self) -> bool {
        !matches!(self, ProtocolKind::Framed)
    }
}

/// How to talk to one kind of tool. Shared by all instances; object safe.
///
/// ```
/// use aim::protocol::{Protocol, ProtocolKind};
/// use aim::ToolSpec;
/// let spec = ToolSpec::new("cat", "cat");
/// let protocol = ProtocolKind::Framed.build(&spec);
/// assert_eq!(protocol.name(), "framed");
/// assert!(protocol.prepare("hello").is_ok());
/// assert!(protocol.prepare("").is_err());
/// ```
pub trait Protocol: Send + Sync + fmt::Debug {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Checks a prompt when it is submitted and encodes what does not depend on the process
    /// (the bytes are handed to [`Conversation::begin`]). `Err` is the reason the prompt is
    /// rejected with [`Error::InvalidPrompt`](crate::Error::InvalidPrompt).
    ///
    /// # Errors
    /// The reason, in words.
    fn prepare(&self, prompt: &str) -> Result<Vec<u8>, String>;

    /// A conversation with one new process.
    fn conversation(&self, context: &Context) -> Box<dyn Conversation>;

    /// Arguments added to every launch, after the spec's own: how the protocol maps the
    /// spec's [`Permissions`] onto the client (claude's `--permission-mode`). Defaults to
    /// none.
    fn launch_args(&self) -> Vec<String> {
        Vec::new()
    }

    /// Extra arguments for a process that is to restore the conversation identified by
    /// `token` (what [`Conversation::resume_token`] gave): claude's `--resume ID`. Defaults
    /// to none (the conversation restores itself from [`Context::resume`], or nothing is
    /// restored).
    fn resume_args(&self, _token: &str) -> Vec<String> {
        Vec::new()
    }
}

/// What a conversation knows about its process.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Context {
    /// The process id of what was launched: the tool itself when it runs locally, the
    /// `ssh` client when it runs on another host.
    pub pid: i32,
    /// "Is the tool blocked reading its stdin?", answered by whatever launched it (use this,
    /// not `/proc` of [`pid`](Context::pid): the tool may run elsewhere).
    pub stdin: crate::stdin_wait::StdinProbe,
    /// The instance index.
    pub instance: usize,
    /// The most output one answer may have.
    pub max_response_bytes: usize,
    /// The process's generation: 1 for the first, higher for a restarted instance.
    pub generation: u64,
    /// The conversation to restore (the previous process's [`Conversation::resume_token`]),
    /// for a restarted instance whose predecessor had one.
    pub resume: Option<String>,
    /// What the agent may do without asking (the spec's `permissions`).
    pub permissions: Option<Permissions>,
    /// How requests beyond the permissions are decided; a decision that arrives later wakes
    /// the I/O thread, which then calls [`Conversation::wake`].
    pub approvals: Approvals,
    /// The working directory of the process, when the spec sets one (on another host, a
    /// relative one is relative to where the remote login starts).
    pub cwd: Option<String>,
    /// The host the process runs on, as given to `ClusterBuilder::hosts` (`None`: this
    /// machine). Paths on another host are that host's, not this machine's.
    pub host: Option<String>,
}

impl Context {
    /// A context for the first process of an instance, a local process `pid` (its
    /// [`stdin`](Context::stdin) probe reads `/proc/PID/syscall`).
    pub fn new(pid: i32, instance: usize, max_response_bytes: usize) -> Self {
        Context {
            pid,
            stdin: crate::stdin_wait::StdinProbe::local(pid),
            instance,
            max_response_bytes,
            generation: 1,
            resume: None,
            permissions: None,
            approvals: Approvals::default(),
            cwd: None,
            host: None,
        }
    }
}

/// Where a conversation is, after output or a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Not done yet.
    Pending,
    /// Startup: the tool is ready. A turn: the answer is complete; call
    /// [`Conversation::finish`].
    Done,
    /// More output than the response cap allows.
    TooLarge,
    /// The tool cannot go on (a failed handshake, output that breaks the protocol); the
    /// process is recycled.
    Failed(String),
    /// A turn: send the tool SIGINT now (never two within 2 s) and keep waiting for the end
    /// of the answer (a REPL abandons an unfinished statement and prompts again). While
    /// starting, the same as [`Step::Pending`].
    Interrupt,
}

/// How a protocol stops the answer in progress when its prompt is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interrupt {
    /// Send SIGINT to the process (never two within 2 s: aider exits on a second one);
    /// the tool ends the turn and prompts again.
    Signal,
    /// The conversation wrote an interrupt message (claude's `interrupt` control request,
    /// codex's `turn/interrupt`); the tool ends the turn.
    Written,
    /// The tool has no way to stop a turn: recycle the process.
    Recycle,
}

/// What output between turns is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Between {
    /// Part of the turn that just ended (read right after it was complete); kept in it.
    Absorbed,
    /// Harmless output outside any answer: counted and logged, then dropped.
    Stray,
    /// Output the protocol did not expect outside an answer: the last answer may have been
    /// cut short. Counted, logged as a warning, and the process is recycled so the next
    /// answer cannot contain it.
    Late,
}

/// One process's side of the protocol. Every method is called on the instance's I/O
/// thread; none may block.
pub trait Conversation: Send + fmt::Debug {
    /// The process has started: append any handshake to `input`.
    fn open(&mut self, now: Instant, input: &mut Vec<u8>) -> Step;

    /// Output while starting; [`Step::Done`] when the tool is ready.
    fn starting(&mut self, stream: Stream, bytes: &[u8], now: Instant, input: &mut Vec<u8>)
        -> Step;

    /// Starts a turn: append what to write for `prompt` (`prepared` is what
    /// [`Protocol::prepare`] made of it) to `input`.
    fn begin(&mut self, prompt: &str, prepared: &[u8], now: Instant, input: &mut Vec<u8>);

    /// Output during a turn; [`Step::Done`] when the answer is complete. May append replies
    /// (to a tool's own requests) to `input`.
    fn answering(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Step;

    /// When [`Conversation::tick`] should next be called, if ever.
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// A timer fired (or input was fully written): check again.
    fn tick(&mut self, _now: Instant) -> Step {
        Step::Pending
    }

    /// A timer fired or the I/O thread was woken (an approver decided) during a turn: like
    /// [`Conversation::tick`], and may append what to write (the decision) to `input`.
    /// Defaults to [`Conversation::tick`].
    fn wake(&mut self, now: Instant, _input: &mut Vec<u8>) -> Step {
        self.tick(now)
    }

    /// What the tool was last doing or asking during the turn, in words, for timeout errors
    /// and logs. Defaults to none.
    fn activity(&self) -> Option<String> {
        None
    }

    /// Ends the turn after [`Step::Done`]: the decoded answer, or the error the tool itself
    /// reported (it becomes [`Error::ToolReported`](crate::Error::ToolReported)).
    ///
    /// # Errors
    /// The tool's own error message.
    fn finish(&mut self) -> Result<Answer, String>;

    /// Output read outside a turn: `just_finished` when it was already waiting in the pipe
    /// as the last turn completed.
    fn between(&mut self, _stream: Stream, _bytes: &[u8], _just_finished: bool) -> Between {
        Between::Stray
    }

    /// Stops the answer in progress, the tool's way (see [`Interrupt`]): a message may be
    /// appended to `input`. The turn then still ends as usual (its answer is discarded), or
    /// the process is recycled if it does not within the stop grace. Defaults to
    /// [`Interrupt::Recycle`].
    fn interrupt(&mut self, _input: &mut Vec<u8>) -> Interrupt {
        Interrupt::Recycle
    }

    /// The answer's text that arrived with the last output, for streaming: `raw` is that
    /// output when it came on stdout (empty otherwise). Defaults to `raw` as text; protocols
    /// that decode text deltas (claude, codex) return those instead.
    fn take_delta(&mut self, raw: &[u8]) -> Option<String> {
        (!raw.is_empty()).then(|| String::from_utf8_lossy(raw).into_owned())
    }

    /// The answer so far, for the error of a turn that ends early (the process died while
    /// answering). Defaults to none.
    fn partial(&self) -> Option<String> {
        None
    }

    /// Whether answers, or their ends, are read from `stream`: a tool that closes such a
    /// stream can no longer answer, so its process gets half a second to exit and is then
    /// stopped and restarted (an answer in flight fails with
    /// [`Error::InstanceDied`](crate::Error::InstanceDied)). A stream this says `false` for
    /// may close without harm. Stdout always counts. Defaults to stdout only.
    fn reads(&self, stream: Stream) -> bool {
        stream == Stream::Stdout
    }

    /// What a replacement process needs to restore this conversation (claude's session id,
    /// codex's thread id), once known. Defaults to none.
    fn resume_token(&self) -> Option<String> {
        None
    }

    /// Whether this process restored the conversation it was asked to: `None` while unknown
    /// or when there was nothing to restore. Defaults to none.
    ///
    /// # Errors
    /// Why restoring failed.
    fn restored(&self) -> Option<Result<(), String>> {
        None
    }
}

/// A decoded answer.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Answer {
    /// What the model or REPL answered, without echoes, markers or bookkeeping lines.
    pub text: String,
    /// The raw stdout of the turn (for debugging).
    pub transcript: Vec<u8>,
    /// What the tool wrote to stderr during the turn, as the protocol decodes it (the framed
    /// protocol leaves out a prompt shown there); `None` when the protocol does not read
    /// stderr: everything written to it during the turn is used.
    pub stderr: Option<Vec<u8>>,
    /// The tool's session or thread id, where it reports one.
    pub session_id: Option<String>,
    /// Tokens, where the tool reports them.
    pub usage: Option<Usage>,
    /// Cost of the turn in US dollars, where the tool reports it.
    pub cost_usd: Option<f64>,
    /// Tool uses refused during the turn.
    pub denials: Vec<Denial>,
    /// Files the tool reports it changed during the turn (aider's `Applied edit to F`).
    pub files_edited: Vec<String>,
    /// The tool waited for input nobody could give (the question): the turn ends with
    /// [`Error::InputRequired`](crate::Error::InputRequired) instead of this answer.
    pub input_required: Option<String>,
}

impl Answer {
    /// An answer whose text is `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Answer {
            text: text.into(),
            ..Answer::default()
        }
    }
}

/// Tokens used by one turn (all its model calls), as the tool reports them. Input tokens
/// come in three kinds, priced differently: fresh input, input read from the provider's
/// prompt cache, and input written to it; their sum is everything sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Usage {
    /// Tokens sent to the model, not counting cache reads and writes.
    pub input_tokens: u64,
    /// Tokens received from the model.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache (claude's `cache_read_input_tokens`, codex's
    /// `cachedInputTokens`).
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache (claude's `cache_creation_input_tokens`).
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Usage of `input_tokens` in and `output_tokens` out, without cache tokens.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    /// The same usage with `read` tokens read from and `write` tokens written to the cache.
    pub fn with_cache(mut self, read: u64, write: u64) -> Self {
        self.cache_read_tokens = read;
        self.cache_write_tokens = write;
        self
    }

    /// Everything sent: fresh input plus cache reads and writes.
    pub fn total_input_tokens(&self) -> u64 {
        self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
    }
}

/// Checks what every protocol rejects: empty prompts, NUL bytes, prompts over the cap.
pub(crate) fn check_prompt(prompt: &str, max_bytes: usize) -> Result<(), String> {
    if prompt.trim().is_empty() {
        return Err("the prompt is empty".into());
    }
    if prompt.len() > max_bytes {
        return Err(format!(
            "the prompt is {} bytes, over the limit of {max_bytes}",
            prompt.len()
        ));
    }
    if prompt.contains('\0') {
        return Err("the prompt contains a NUL byte".into());
    }
    Ok(())
}

/// A user protocol in a [`ToolSpec`]: compared by identity, never serialised.
#[derive(Clone)]
pub(crate) struct CustomProtocol(pub Arc<dyn Protocol>);

impl fmt::Debug for CustomProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for CustomProtocol {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CustomProtocol {}
