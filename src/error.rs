//! The crate's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::state::{ExitInfo, InstanceOutlook};

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `aim`.
///
/// Variants say when they occur and carry the context an operator needs: the tool, the
/// instance, how the child ended, its last stderr lines, how long we waited. When a call fails
/// while holding the caller's prompt, the prompt is handed back ([`Error::prompt`],
/// [`Error::into_prompt`]) so nothing the caller wrote is lost.
///
/// ```
/// fn assert_good_error<E: std::error::Error + Send + Sync + 'static>() {}
/// assert_good_error::<aim::Error>();
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A tool id was looked up that the registry does not know.
    UnknownTool {
        /// The id asked for.
        id: String,
        /// Every id the registry knows, sorted.
        known: Vec<String>,
    },
    /// A configuration value is invalid; returned by `build()`/`launch()`/`validate()`.
    InvalidConfig {
        /// The field, as it is spelled in JSON (`framing.marker`, `count`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tools file could not be read or contains invalid JSON or an invalid spec.
    ToolsFile {
        /// The file.
        path: PathBuf,
        /// The tool whose entry is invalid, when known.
        tool: Option<String>,
        /// The invalid field, when known (`framing`, `startup_timeout_ms`).
        field: Option<String>,
        /// Where in the file, when known: line and column, from 1.
        location: Option<(usize, usize)>,
        /// What is wrong.
        reason: String,
    },
    /// The built-in demo agent's executable could not be found.
    DemoAgentNotFound {
        /// Where we looked.
        searched: Vec<PathBuf>,
    },
    /// The tool's program could not be started (missing binary, not executable, bad cwd).
    Spawn {
        /// The tool id.
        tool: String,
        /// The instance index.
        instance: usize,
        /// The program we tried to run.
        program: String,
        /// The cause in words: the program is not found, not executable, or the working
        /// directory is missing, not a directory or may not be entered.
        reason: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// An instance did not become ready: it exited during startup or its startup timeout passed.
    NotReady {
        /// The tool id.
        tool: String,
        /// The instance index.
        instance: usize,
        /// How long we waited.
        waited: Duration,
        /// How the child ended, if it did.
        exit: Option<ExitInfo>,
        /// The child's last stderr lines.
        stderr: Vec<String>,
    },
    /// The prompt cannot be sent as it is (empty, too large, contains a newline or NUL, or a
    /// line [`ToolSpec::refuse`](crate::ToolSpec::refuse) refuses, or a statement the tool
    /// would wait on by [`ToolSpec::statement_check`](crate::ToolSpec::statement_check)).
    /// Nothing was written: the process and its state are as they were.
    InvalidPrompt {
        /// Why it was rejected.
        reason: String,
        /// The prompt, handed back.
        prompt: String,
    },
    /// The request's deadline passed; [`TimeoutStage`] says where it was waiting.
    ///
    /// When the tool was already answering, the instance is recycled: its output can no longer
    /// be trusted to line up with the next prompt. Only a prompt that never reached the tool
    /// is retryable. (A caller that merely stops waiting, with [`crate::Ticket::wait_timeout`],
    /// gets `None`, not this error.)
    Timeout {
        /// The instance the request was on, if it reached one.
        instance: Option<usize>,
        /// How long the request waited in all, from its submission (time spent waiting for
        /// an instance and queued included).
        waited: Duration,
        /// The configured limit that passed, when known: the answer timeout (counted from
        /// when the prompt was written to the tool), the stall timeout, or the request
        /// timeout (counted from submission).
        limit: Option<Duration>,
        /// Where it was when its deadline passed.
        stage: TimeoutStage,
        /// What the tool was last doing or asking, in words, when its protocol knows (an
        /// agent's last tool use, question or retry).
        activity: Option<String>,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// The instance answering the request exited, or closed its output (stdout, or a stream
    /// the protocol reads answers from: [`Conversation::reads`](crate::protocol::Conversation::reads)),
    /// before the answer ended.
    InstanceDied {
        /// The instance index.
        instance: usize,
        /// The generation of the child that died.
        generation: u64,
        /// The child's process id.
        pid: i32,
        /// How the child ended (`None` if it closed its output but has not exited yet).
        exit: Option<ExitInfo>,
        /// What the child wrote to stderr while answering this prompt, as lines (at most the
        /// spec's `stderr_lines` last ones; lines quoting aim's end-of-answer nonce left out).
        /// Display shows the last three.
        stderr: Vec<String>,
        /// What the tool had answered before it died (its stdout, as the protocol decodes
        /// it), if anything.
        partial: Option<String>,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// The answer grew past the tool's `max_response_bytes`; the instance is recycled. Not
    /// retryable: the same prompt would get the same answer.
    ResponseTooLarge {
        /// The instance index.
        instance: usize,
        /// The cap in bytes.
        limit: usize,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// The tool answered, and its answer says it failed: a JSON-RPC error, a result marked
    /// `is_error`, a model call that failed. The instance stays in service: the protocol is
    /// still in step; except when the protocol finds the tool cannot go on
    /// ([`Step::Failed`](crate::protocol::Step::Failed): a REPL still waiting on an unfinished
    /// statement after its interrupt), where the message says the process was recycled. Not
    /// retryable as such (the same prompt may fail the same way).
    ToolReported {
        /// The instance that answered.
        instance: usize,
        /// The tool's own message.
        message: String,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// The agent waited for input nobody could give during the turn (a question the approval
    /// policy cannot answer, codex's `requestUserInput`, an elicitation): the turn was ended
    /// within a second and the instance stays in service.
    InputRequired {
        /// The instance that asked.
        instance: usize,
        /// The question, in the tool's words.
        question: String,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// The turn ended, but the spec is strict about denials
    /// ([`ToolSpec::strict_denials`](crate::ToolSpec::strict_denials)) and tool uses were
    /// refused during it. The instance stays in service.
    Denied {
        /// The instance that answered.
        instance: usize,
        /// What was refused.
        denials: Vec<crate::permissions::Denial>,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// The caller cancelled the request ([`crate::Ticket::cancel`], [`crate::Session::cancel`])
    /// before it was answered. A prompt the tool was answering was interrupted the tool's way
    /// (SIGINT, an interrupt message) or its process recycled.
    Cancelled {
        /// Whether the instance's process ended to stop the answer, losing its state (a
        /// REPL's variables, an in-memory database): the tool exits on SIGINT (the built-in
        /// `sqlite3` and `bc`), or did not end its turn within its stop grace. The instance
        /// restarts as usual. False for a prompt still waiting, or an answer the tool stopped
        /// itself (python, the agents).
        recycled: bool,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// Every queue is full (from `try_submit`, or from `submit` when the backlog is full).
    Busy {
        /// The prompt, handed back.
        prompt: String,
    },
    /// No instance could take the prompt before its deadline: all are stopped, failed,
    /// restarting or with an open circuit, and none can be back in time (the prompt fails at
    /// once), or none came back while it waited.
    NoHealthyInstance {
        /// How long the request waited.
        waited: Duration,
        /// Each instance's state and when it may take prompts again.
        instances: Vec<InstanceOutlook>,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// A request was addressed to an instance that cannot take it now.
    InstanceUnavailable {
        /// The instance index.
        instance: usize,
        /// Its state, as a word (`failed`, `circuit open`, `stopped`).
        state: String,
        /// The prompt, handed back.
        prompt: Option<String>,
    },
    /// An instance index is out of range.
    NoSuchInstance {
        /// The index asked for.
        index: usize,
        /// How many instances there are.
        count: usize,
    },
    /// The pool or cluster is shutting down or has shut down.
    Shutdown {
        /// The prompt, handed back, when the request had not been answered.
        prompt: Option<String>,
    },
    /// An I/O error outside a child's pipes (creating a pipe or PTY, binding a listener).
    Io {
        /// What we were doing.
        context: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// A workspace could not be created, reused or prepared: git failed, the path would leave
    /// the root or is taken, or an `after_create` or `before_run` hook failed or ran past its
    /// timeout. The instance's start fails (and is retried by the monitor like any failed
    /// start).
    Workspace {
        /// The tool id, as a file name.
        tool: String,
        /// The workspace key (the instance index for per-instance workspaces).
        key: String,
        /// The workspace's directory.
        path: PathBuf,
        /// What went wrong, in words (git's or the hook's last stderr line included).
        reason: String,
    },
}

impl Error {
    /// True for every kind of timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True when the same request may succeed if sent again (possibly to another instance):
    /// timeouts before the prompt reached the tool, dead instances, busy queues, no healthy
    /// instance, an unavailable instance. A timeout while the tool was answering is not: the
    /// tool may have acted on the prompt, and a resend would run it twice.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { stage, .. } => {
                !matches!(stage, TimeoutStage::Answering | TimeoutStage::Stalled)
            }
            Error::InstanceDied { .. }
            | Error::Busy { .. }
            | Error::NoHealthyInstance { .. }
            | Error::InstanceUnavailable { .. } => true,
            _ => false,
        }
    }

    /// The caller's prompt, when this error hands it back.
    pub fn prompt(&self) -> Option<&str> {
        match self {
            Error::InvalidPrompt { prompt, .. } | Error::Busy { prompt } => Some(prompt),
            Error::Timeout { prompt, .. }
            | Error::InstanceDied { prompt, .. }
            | Error::NoHealthyInstance { prompt, .. }
            | Error::InstanceUnavailable { prompt, .. }
            | Error::ResponseTooLarge { prompt, .. }
            | Error::ToolReported { prompt, .. }
            | Error::InputRequired { prompt, .. }
            | Error::Denied { prompt, .. }
            | Error::Cancelled { prompt, .. }
            | Error::Shutdown { prompt } => prompt.as_deref(),
            _ => None,
        }
    }

    /// What the tool had answered before it died ([`Error::InstanceDied`]), if anything.
    ///
    /// ```
    /// let err = aim::Error::Shutdown { prompt: None };
    /// assert_eq!(err.partial_answer(), None);
    /// ```
    pub fn partial_answer(&self) -> Option<&str> {
        match self {
            Error::InstanceDied { partial, .. } => partial.as_deref(),
            _ => None,
        }
    }

    /// The tool's stderr lines the error carries: for [`Error::InstanceDied`], what it wrote
    /// while answering this prompt; for [`Error::NotReady`], its last lines. Empty for other
    /// errors.
    ///
    /// ```
    /// let err = aim::Error::Shutdown { prompt: None };
    /// assert!(err.stderr_lines().is_empty());
    /// ```
    pub fn stderr_lines(&self) -> &[String] {
        match self {
            Error::InstanceDied { stderr, .. } | Error::NotReady { stderr, .. } => stderr,
            _ => &[],
        }
    }

    /// Takes the caller's prompt back out of the error.
    pub fn into_prompt(self) -> Option<String> {
        match self {
            Error::InvalidPrompt { prompt, .. } | Error::Busy { prompt } => Some(prompt),
            Error::Timeout { prompt, .. }
            | Error::InstanceDied { prompt, .. }
            | Error::NoHealthyInstance { prompt, .. }
            | Error::InstanceUnavailable { prompt, .. }
            | Error::ResponseTooLarge { prompt, .. }
            | Error::ToolReported { prompt, .. }
            | Error::InputRequired { prompt, .. }
            | Error::Denied { prompt, .. }
            | Error::Cancelled { prompt, .. }
            | Error::Shutdown { prompt } => prompt,
            _ => None,
        }
    }

    /// What kind of error this is, to match on without naming every field;
    /// [`ErrorKind::as_str`] is its stable name (JSON output, metrics labels).
    ///
    /// ```
    /// use aim::{Error, ErrorKind};
    /// let err = Error::Shutdown { prompt: None };
    /// assert_eq!(err.kind(), ErrorKind::Shutdown);
    /// assert_eq!(err.kind().as_str(), "shutdown");
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownTool { .. } => ErrorKind::UnknownTool,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::ToolsFile { .. } => ErrorKind::ToolsFile,
            Error::DemoAgentNotFound { .. } => ErrorKind::DemoAgentNotFound,
            Error::Spawn { .. } => ErrorKind::Spawn,
            Error::NotReady { .. } => ErrorKind::NotReady,
            Error::InvalidPrompt { .. } => ErrorKind::InvalidPrompt,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::InstanceDied { .. } => ErrorKind::Died,
            Error::ResponseTooLarge { .. } => ErrorKind::TooLarge,
            Error::ToolReported { .. } => ErrorKind::ToolError,
            Error::InputRequired { .. } => ErrorKind::InputRequired,
            Error::Denied { .. } => ErrorKind::Denied,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::NoHealthyInstance { .. } => ErrorKind::NoHealthyInstance,
            Error::InstanceUnavailable { .. } => ErrorKind::Unavailable,
            Error::NoSuchInstance { .. } => ErrorKind::NoSuchInstance,
            Error::Shutdown { .. } => ErrorKind::Shutdown,
            Error::Io { .. } => ErrorKind::Io,
            Error::Workspace { .. } => ErrorKind::Workspace,
        }
    }

    /// Puts a prompt back into an error that can carry one and does not yet.
    pub(crate) fn with_prompt(mut self, text: String) -> Self {
        match &mut self {
            Error::Timeout { prompt, .. }
            | Error::InstanceDied { prompt, .. }
            | Error::NoHealthyInstance { prompt, .. }
            | Error::InstanceUnavailable { prompt, .. }
            | Error::ResponseTooLarge { prompt, .. }
            | Error::ToolReported { prompt, .. }
            | Error::InputRequired { prompt, .. }
            | Error::Denied { prompt, .. }
            | Error::Cancelled { prompt, .. }
            | Error::Shutdown { prompt }
                if prompt.is_none() =>
            {
                *prompt = Some(text);
            }
            _ => {}
        }
        self
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Where a request was when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TimeoutStage {
    /// Waiting in the cluster's backlog for an eligible instance; never reached a tool.
    Backlog,
    /// Queued on an instance behind other prompts; never written to the tool.
    Queued,
    /// Written to the tool, which had not finished answering.
    Answering,
    /// Written to the tool, which then went quiet (no output, no protocol event) for longer
    /// than its stall timeout.
    Stalled,
}

impl TimeoutStage {
    /// The stage as a lowercase word.
    pub fn as_str(&self) -> &'static str {
        match self {
            TimeoutStage::Backlog => "backlog",
            TimeoutStage::Queued => "queued",
            TimeoutStage::Answering => "answering",
            TimeoutStage::Stalled => "stalled",
        }
    }
}

/// A measured duration as people read it: whole milliseconds under a second, else seconds
/// to the millisecond (`6.720s`).
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < Duration::from_secs(1) {
            write!(f, "{}ms", self.0.as_millis())
        } else {
            write!(f, "{:.3}s", self.0.as_secs_f64())
        }
    }
}

/// Stderr lines shown in an error's Display: the last few, where the reason usually is
/// (sqlite3's message comes before the two lines pointing into the statement).
const SHOWN_STDERR_LINES: usize = 3;

fn stderr_suffix(f: &mut fmt::Formatter<'_>, stderr: &[String]) -> fmt::Result {
    let shown = &stderr[stderr.len().saturating_sub(SHOWN_STDERR_LINES)..];
    for (i, line) in shown.iter().enumerate() {
        f.write_str(if i == 0 { " (last stderr: " } else { " / " })?;
        write!(f, "{line:?}")?;
    }
    if shown.is_empty() {
        Ok(())
    } else {
        f.write_str(")")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownTool { id, known } => {
                write!(f, "unknown tool {id:?}; known tools: {}", known.join(", "))
            }
            Error::InvalidConfig { field, reason } => {
                write!(f, "invalid configuration: {field}: {reason}")
            }
            Error::ToolsFile {
                path,
                tool,
                field,
                location,
                reason,
            } => {
                write!(f, "invalid tools file {}", path.display())?;
                if let Some((line, column)) = location {
                    write!(f, ":{line}:{column}")?;
                }
                if let Some(tool) = tool {
                    write!(f, ", tool {tool:?}")?;
                }
                if let Some(field) = field {
                    write!(f, ", field {field}")?;
                }
                write!(f, ": {reason}")
            }
            Error::DemoAgentNotFound { searched } => {
                write!(
                    f,
                    "demo agent not found (looked for aim-demo in {}); build it with \
                     `cargo build --bin aim-demo`, set AIM_DEMO_BIN, or call \
                     aim::demo::serve_if_requested() at the start of main",
                    searched
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Error::Spawn {
                tool,
                instance,
                program,
                reason,
                ..
            } => write!(
                f,
                "cannot start tool {tool:?} instance {instance} ({program:?}): {reason}"
            ),
            Error::NotReady {
                tool,
                instance,
                waited,
                exit,
                stderr,
            } => {
                match exit {
                    Some(exit) => write!(
                        f,
                        "tool {tool:?} instance {instance} exited during startup ({exit})"
                    )?,
                    None => write!(
                        f,
                        "tool {tool:?} instance {instance} not ready after {waited:?}"
                    )?,
                }
                stderr_suffix(f, stderr)
            }
            Error::InvalidPrompt { reason, .. } => write!(f, "invalid prompt: {reason}"),
            Error::Timeout {
                instance,
                waited,
                limit,
                stage,
                activity,
                ..
            } => {
                let waited = Millis(*waited);
                match (stage, instance, limit) {
                (TimeoutStage::Answering, Some(i), Some(limit)) => write!(
                    f,
                    "instance {i} did not finish answering within its timeout of {limit:?} ({waited} since it was submitted); it is being recycled"
                ),
                (TimeoutStage::Answering, Some(i), None) => write!(
                    f,
                    "instance {i} did not finish answering within {waited} of its submission; it is being recycled"
                ),
                (TimeoutStage::Stalled, Some(i), Some(limit)) => write!(
                    f,
                    "instance {i} went quiet while answering (stall timeout of {limit:?}, after {waited} in all); it is being recycled"
                ),
                (TimeoutStage::Stalled, Some(i), None) => write!(
                    f,
                    "instance {i} went quiet while answering (stall timeout, after {waited} in all); it is being recycled"
                ),
                (TimeoutStage::Queued, Some(i), _) => {
                    write!(f, "request timed out after {waited} queued on instance {i}")
                }
                _ => write!(f, "request timed out after {waited} waiting for an instance"),
                }?;
                match activity {
                    Some(activity) => write!(f, " (last: {activity})"),
                    None => Ok(()),
                }
            }
            Error::InstanceDied {
                instance,
                pid,
                exit,
                stderr,
                partial,
                ..
            } => {
                match exit {
                    Some(exit) => {
                        write!(f, "instance {instance} (pid {pid}) died while answering: {exit}")?
                    }
                    None => write!(
                        f,
                        "instance {instance} (pid {pid}) closed its output while answering"
                    )?,
                }
                if let Some(partial) = partial {
                    write!(f, " after {} bytes of its answer", partial.len())?;
                }
                stderr_suffix(f, stderr)
            }
            Error::ResponseTooLarge {
                instance, limit, ..
            } => write!(
                f,
                "answer from instance {instance} exceeded {limit} bytes; the instance is being recycled"
            ),
            Error::ToolReported {
                instance, message, ..
            } => write!(f, "instance {instance}: the tool reported an error: {message}"),
            Error::InputRequired {
                instance, question, ..
            } => write!(f, "instance {instance}: the tool asked for input nobody can give: {question}"),
            Error::Denied {
                instance, denials, ..
            } => {
                write!(f, "instance {instance}: tool uses were denied")?;
                for (i, denial) in denials.iter().enumerate() {
                    f.write_str(if i == 0 { ": " } else { "; " })?;
                    write!(f, "{denial}")?;
                }
                Ok(())
            }
            Error::Cancelled { recycled: false, .. } => write!(f, "cancelled"),
            Error::Cancelled { recycled: true, .. } => write!(
                f,
                "cancelled; the process was recycled to stop the answer, losing its state (the instance restarts)"
            ),
            Error::Busy { .. } => write!(f, "every queue is full"),
            Error::NoHealthyInstance {
                waited, instances, ..
            } => {
                write!(f, "no healthy instance within {waited:?}")?;
                for (i, outlook) in instances.iter().enumerate() {
                    f.write_str(if i == 0 { ": " } else { "; " })?;
                    write!(f, "{outlook}")?;
                }
                Ok(())
            }
            Error::InstanceUnavailable {
                instance, state, ..
            } => write!(f, "instance {instance} cannot take requests: {state}"),
            Error::NoSuchInstance { index, count } => {
                write!(f, "no instance {index} (the pool has {count})")
            }
            Error::Shutdown { .. } => write!(f, "shut down"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Workspace {
                tool,
                key,
                path,
                reason,
            } => write!(f, "workspace {} of {tool}[{key}]: {reason}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The kind of an [`Error`], one per variant, from [`Error::kind`]: match on it; its
/// [`as_str`](ErrorKind::as_str) name is stable (JSON output, metrics labels) and it
/// serialises as that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::UnknownTool`]: `unknown_tool`.
    UnknownTool,
    /// [`Error::InvalidConfig`]: `invalid_config`.
    InvalidConfig,
    /// [`Error::ToolsFile`]: `tools_file`.
    ToolsFile,
    /// [`Error::DemoAgentNotFound`]: `demo_agent_not_found`.
    DemoAgentNotFound,
    /// [`Error::Spawn`]: `spawn`.
    Spawn,
    /// [`Error::NotReady`]: `not_ready`.
    NotReady,
    /// [`Error::InvalidPrompt`]: `invalid_prompt`.
    InvalidPrompt,
    /// [`Error::Timeout`]: `timeout`.
    Timeout,
    /// [`Error::InstanceDied`]: `died`.
    Died,
    /// [`Error::ResponseTooLarge`]: `too_large`.
    TooLarge,
    /// [`Error::ToolReported`]: `tool_error`.
    ToolError,
    /// [`Error::InputRequired`]: `input_required`.
    InputRequired,
    /// [`Error::Denied`]: `denied`.
    Denied,
    /// [`Error::Cancelled`]: `cancelled`.
    Cancelled,
    /// [`Error::Busy`]: `busy`.
    Busy,
    /// [`Error::NoHealthyInstance`]: `no_healthy_instance`.
    NoHealthyInstance,
    /// [`Error::InstanceUnavailable`]: `unavailable`.
    Unavailable,
    /// [`Error::NoSuchInstance`]: `no_such_instance`.
    NoSuchInstance,
    /// [`Error::Shutdown`]: `shutdown`.
    Shutdown,
    /// [`Error::Io`]: `io`.
    Io,
    /// [`Error::Workspace`]: `workspace`.
    Workspace,
}

impl ErrorKind {
    /// The kind's stable lowercase name (`timeout`, `died`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownTool => "unknown_tool",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::ToolsFile => "tools_file",
            ErrorKind::DemoAgentNotFound => "demo_agent_not_found",
            ErrorKind::Spawn => "spawn",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::InvalidPrompt => "invalid_prompt",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Died => "died",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::ToolError => "tool_error",
            ErrorKind::InputRequired => "input_required",
            ErrorKind::Denied => "denied",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Busy => "busy",
            ErrorKind::NoHealthyInstance => "no_healthy_instance",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NoSuchInstance => "no_such_instance",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Io => "io",
            ErrorKind::Workspace => "workspace",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Compares with the kind's name, so `err.kind() == "timeout"` reads as before.
impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_hand_prompts_back() {
        let err = Error::Busy {
            prompt: "hello".into(),
        };
        assert!(err.is_retryable());
        assert_eq!(err.prompt(), Some("hello"));
        assert_eq!(err.into_prompt().as_deref(), Some("hello"));

        let err = Error::Shutdown { prompt: None }.with_prompt("p".into());
        assert_eq!(err.prompt(), Some("p"));
    }

    #[test]
    fn display_is_short_lowercase_without_period() {
        let err = Error::UnknownTool {
            id: "nope".into(),
            known: vec!["bc".into(), "demo".into()],
        };
        let text = err.to_string();
        assert_eq!(text, "unknown tool \"nope\"; known tools: bc, demo");
        assert!(!text.ends_with('.'));
    }
}
