//! [`ToolSpec`]: how to start one interactive tool, talk to it, and stop it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::protocol_api::Stream;
use crate::protocol_api::{CustomProtocol, Protocol, ProtocolKind};

use crate::duration::{duration_ms, MAX_DURATION};
use crate::error::{Error, Result};
use crate::permissions::{Approvals, Approve, Approver, CustomApprover, Permissions};
use crate::refusal::{refused, Refusal};
use crate::statements::StatementCheck;
use crate::workspace::WorkspaceSpec;

/// Rejects durations over [`MAX_DURATION`] (and zero, when `positive`).
pub(crate) fn check_duration(field: &str, value: Duration, positive: bool) -> Result<()> {
    if positive && value.is_zero() {
        return Err(Error::config(field, "must be positive"));
    }
    if value > MAX_DURATION {
        return Err(Error::config(field, "must be at most one year"));
    }
    Ok(())
}

/// How the child's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Transport {
    /// Three pipes: stdin, stdout, stderr. The default; what headless tool modes expect.
    #[default]
    Pipes,
    /// A pseudo-terminal for stdin and stdout (stderr stays a pipe), for tools that insist on a
    /// terminal, of [`ToolSpec::pty_size`]. Echo and canonical mode are switched off, so long
    /// prompts are not cut at the terminal's 4 KiB line limit and the terminal does not read
    /// the prompt back as output. A tool that draws its own input line (readline: `node -i`)
    /// still echoes what it reads, and that echo is part of the answer.
    Pty,
}

/// The terminal size a tool sees under [`Transport::Pty`] (`stty size`, `TIOCGWINSZ`).
/// JSON: `{"rows": 24, "cols": 80}`.
///
/// ```
/// let size = aim::PtySize::default();
/// assert_eq!((size.rows, size.cols), (24, 80));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtySize {
    /// Rows (lines). Defaults to 24.
    pub rows: u16,
    /// Columns. Defaults to 80.
    pub cols: u16,
}

impl PtySize {
    /// A terminal of `rows` by `cols`.
    pub fn new(rows: u16, cols: u16) -> Self {
        PtySize { rows, cols }
    }
}

impl Default for PtySize {
    /// 24 rows by 80 columns, like pexpect and a classic terminal.
    fn default() -> Self {
        PtySize { rows: 24, cols: 80 }
    }
}

/// When an answer is complete. See `docs/tools.md` for choosing one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Framing {
    /// The answer ends when the tool prints its prompt again (`> `, `>>> `); the first marker
    /// also means the tool is ready.
    Prompt {
        /// The prompt text, matched at the very end of the output.
        marker: String,
        /// The stream the marker appears on.
        #[serde(default)]
        stream: Stream,
        /// The marker only counts once the tool has been quiet this long after printing it
        /// (for tools whose answers may themselves end in the marker). Defaults to 0.
        #[serde(default, rename = "settle_ms", with = "duration_ms")]
        settle: Duration,
        /// The marker only counts once the tool's main thread is blocked reading its stdin
        /// (asked of the launcher; locally Linux `/proc/PID/syscall`): an answer that merely contains the marker while the
        /// tool is still working never ends early, and no quiet time is needed. Checked again
        /// every few milliseconds while the tool is busy; where the check is unavailable,
        /// `settle` decides. Defaults to false.
        #[serde(default)]
        await_read: bool,
    },
    /// One line of output per prompt.
    Line,
    /// After the prompt, `command` (with `{nonce}` replaced by a fresh unique marker) is
    /// written too; the answer ends at the line that contains the nonce. A line of `command`
    /// that carries `{nonce}` and is read back by the tool (sqlite3 `.echo on`) is cut out of
    /// the answer, its streamed pieces and its stderr.
    Sentinel {
        /// The command that makes the tool print `{nonce}`, e.g. `print "{nonce}\n"` for bc.
        /// It may be several lines: sqlite3's `;-- {nonce}` then `.print {nonce}` first ends
        /// a statement left without its `;` (the comment marks its read-back as aim's).
        command: String,
    },
    /// Output is JSON, one object per line; the answer ends at the object whose `field` is the
    /// string `value` (e.g. `type` = `result`).
    JsonLines {
        /// The field to look at.
        field: String,
        /// The value that ends an answer.
        value: String,
    },
    /// The answer ends after the tool has been quiet for `quiet` (a fallback for unknown tools).
    Idle {
        /// How long the tool must be quiet.
        #[serde(rename = "quiet_ms", with = "duration_ms")]
        quiet: Duration,
    },
    /// Prompts that cannot be forged or mistaken for a stale one: `setup` (one line, with
    /// `{nonce}` replaced by a fresh secret per process) is written first and makes the tool
    /// show `{nonce}N>` before each statement it reads and `{nonce}N.` before each
    /// continuation line, N counting statements from 1 (python: an object as `ps1` in `sys`'s
    /// dictionary).
    /// The answer ends at the first main prompt numbered above the one it was written at;
    /// prompts are left out of the answer. When the tool shows a continuation prompt instead
    /// (an unfinished statement), `end_block` is written once (python: an empty line); if the
    /// tool still waits for more, it gets SIGINT and the answer is
    /// [`Error::ToolReported`](crate::Error::ToolReported) with what the tool said; the
    /// process stays, unless it still waits `stop_grace` plus 2 s after the SIGINT (it ignores
    /// SIGINT): then it is recycled, and the error says so. `init` lines are written one at a time, each once the tool prompts for
    /// it, and ended the same way; one still unfinished then fails the start with
    /// [`Error::NotReady`](crate::Error::NotReady) naming the line.
    NumberedPrompt {
        /// The line that makes the tool number its prompts; must contain `{nonce}`.
        setup: String,
        /// The stream the prompts appear on.
        #[serde(default)]
        stream: Stream,
        /// The line that ends an unfinished block, if the tool has one. Defaults to none
        /// (an unfinished statement is interrupted at once).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_block: Option<String>,
    },
}

/// How a prompt is written to the tool's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum InputFormat {
    /// The prompt and a newline. Prompts containing a newline are rejected, since a newline
    /// would smuggle a second command into the tool.
    #[default]
    Line,
    /// Multi-line prompts are sent as `open`, the lines, `close`, each on a line of its own
    /// (aider uses `{` and `}`); single-line prompts as a plain line.
    Wrapped {
        /// The line that opens a multi-line message.
        open: String,
        /// The line that closes it.
        close: String,
    },
    /// One line made from `template`, with `{prompt}` replaced by the prompt as a JSON string
    /// (quoted and escaped), for tools that read JSON messages. Any prompt text is allowed.
    JsonTemplate {
        /// A one-line template containing `{prompt}`.
        template: String,
    },
}

/// When a freshly started instance counts as ready.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Readiness {
    /// Derived from the framing: the prompt marker for [`Framing::Prompt`], a sentinel round
    /// trip for [`Framing::Sentinel`], the prompt after the setup and every `init` line for
    /// [`Framing::NumberedPrompt`], and at once for the others.
    #[default]
    Auto,
    /// Ready as soon as the process has started.
    Immediate,
    /// Ready once `text` has appeared on `stream`. Under [`Framing::Prompt`] the tool's
    /// prompt marker must also end the output after the text (a prompt-framed tool reads
    /// only after printing its prompt), so a prompt printed after the text cannot end the
    /// first answer. Under [`Framing::NumberedPrompt`] every `init` line must also have been
    /// answered (the text may come from one of them).
    Text {
        /// The text to wait for.
        text: String,
        /// The stream it appears on.
        #[serde(default)]
        stream: Stream,
    },
}

/// Replaying a REPL's prompts into a restarted process, so its state (variables, tables)
/// survives the restart: the prompts that succeeded are kept per instance, up to these
/// limits, and written again (their output dropped) before the next prompt. A history that
/// outgrew a limit cannot be replayed faithfully: answers then say `context_lost`. Only for
/// tools whose prompts are safe to run twice (no side effects outside the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Replay {
    /// The most prompts kept. Defaults to 1000.
    pub max_prompts: usize,
    /// The most bytes of prompts kept. Defaults to 1 MiB.
    pub max_bytes: usize,
}

impl Replay {
    crate::setters::config_setters! {
        /// Sets [`Replay::max_prompts`], the most prompts kept.
        max_prompts: usize;
        /// Sets [`Replay::max_bytes`], the most bytes of prompts kept.
        max_bytes: usize;
    }
}

impl Default for Replay {
    fn default() -> Self {
        Replay {
            max_prompts: 1000,
            max_bytes: 1 << 20,
        }
    }
}

/// Which restarts the monitor performs when an instance's process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Restart whenever the process ends, even with exit code 0.
    Always,
    /// Restart unless the process exited on its own with code 0 while no prompt was in
    /// flight (an exit while answering is a failure, whatever its code). The default.
    #[default]
    OnFailure,
    /// Never restart; the instance stays down.
    Never,
}

/// Environment changes for the child: start from ours (or an empty one), remove, then set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EnvSpec {
    /// Start from an empty environment instead of ours. Defaults to false.
    pub clear: bool,
    /// Variables to remove. Defaults to none.
    pub remove: Vec<String>,
    /// Variables to set; `{index}` in values expands to the instance number. Defaults to none.
    pub set: BTreeMap<String, String>,
}

/// How to start one interactive tool, talk to it and stop it.
///
/// Build one in code or load it from JSON (every field has a default except `program`;
/// durations are `*_ms` fields in JSON). `{index}` in `args`, `env.set` values and `cwd`
/// expands to the instance number, so each instance can work in its own directory.
///
/// ```
/// use aim::{Framing, ToolSpec};
/// let spec = ToolSpec::new("bc", "bc")
///     .args(["-q"])
///     .env("BC_LINE_LENGTH", "0")
///     .framing(Framing::Sentinel { command: "print \"{nonce}\\n\"".into() });
/// spec.validate()?;
/// assert_eq!(spec.program, "bc");
/// # Ok::<(), aim::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ToolSpec {
    /// The tool id (`demo`, `python`); used in logs, errors and metric labels.
    pub name: String,
    /// The program to run, looked up in `PATH` when it has no slash.
    pub program: String,
    /// Its arguments. Defaults to none.
    pub args: Vec<String>,
    /// Environment changes. Defaults to inheriting ours unchanged.
    pub env: EnvSpec,
    /// The working directory. Defaults to ours.
    pub cwd: Option<String>,
    /// Create `cwd` (and its parents) when it is missing, before each start: with `{index}`
    /// in `cwd`, every instance gets a directory of its own. Defaults to false (a missing
    /// directory is a spawn error naming it).
    pub create_cwd: bool,
    /// Pipes or a PTY. Defaults to pipes.
    pub transport: Transport,
    /// The terminal size under [`Transport::Pty`] (programs that check it refuse a 0x0
    /// terminal). Defaults to 24 rows by 80 columns.
    pub pty_size: PtySize,
    /// How prompts are encoded, answers framed and decoded (see [`crate::protocol`]).
    /// Defaults to [`ProtocolKind::Framed`]: `framing`, `input` and `readiness` decide.
    pub protocol: ProtocolKind,
    /// A protocol of your own, used instead of `protocol` (never serialised). Set it with
    /// [`ToolSpec::custom_protocol`]. Defaults to none.
    #[serde(skip)]
    pub(crate) custom_protocol: Option<CustomProtocol>,
    /// When an answer is complete, for the framed protocol. Defaults to [`Framing::Line`].
    pub framing: Framing,
    /// How prompts are written, for the framed protocol. Defaults to [`InputFormat::Line`].
    pub input: InputFormat,
    /// When a new instance is ready, for the framed protocol. Defaults to
    /// [`Readiness::Auto`].
    pub readiness: Readiness,
    /// Lines written once after start, before readiness is awaited (setup commands); under
    /// [`Framing::NumberedPrompt`] one at a time, each once the tool prompts for it; under
    /// [`Framing::Sentinel`] (with [`Readiness::Auto`]) one at a time, each followed by its
    /// sentinel, and a line the tool writes to stderr for fails the start with
    /// [`Error::NotReady`] naming it. Defaults to none.
    pub init: Vec<String>,
    /// Prompt lines refused with [`Error::InvalidPrompt`] before anything is written, for the
    /// framed protocol (the built-in `sqlite3` refuses its output redirections). Defaults to
    /// none.
    pub refuse: Vec<Refusal>,
    /// Prompts (and `init` lines) checked for a statement the tool would wait on, which fail
    /// with [`Error::InvalidPrompt`] before anything is written, for the framed protocol (the
    /// built-in `sqlite3` and `bc` check theirs). Defaults to [`StatementCheck::None`].
    pub statement_check: StatementCheck,
    /// How long an instance may take to become ready. Defaults to 30 s.
    #[serde(rename = "startup_timeout_ms", with = "duration_ms")]
    pub startup_timeout: Duration,
    /// How long one request may take, counted from its submission (waiting for an instance
    /// and queueing included). Defaults to 60 s.
    #[serde(rename = "request_timeout_ms", with = "duration_ms")]
    pub request_timeout: Duration,
    /// A line that asks the tool to exit (`exit()`, `/exit`); without one, stdin is closed.
    /// Defaults to none.
    pub quit_command: Option<String>,
    /// How long the tool gets after the quit command and after SIGTERM. Defaults to 2 s.
    #[serde(rename = "stop_grace_ms", with = "duration_ms")]
    pub stop_grace: Duration,
    /// The largest answer accepted, in bytes. Defaults to 16 MiB.
    pub max_response_bytes: usize,
    /// The largest prompt accepted, in bytes. Defaults to 64 MiB.
    pub max_prompt_bytes: usize,
    /// A memory limit per instance, in bytes of resident memory (the process and its
    /// descendants), checked at each monitor poll (`health_interval`): over it, the instance
    /// is recycled once idle; over twice it, the process is killed at once (its answer in
    /// flight fails). Both count as restart reason `memory`. Defaults to none.
    pub max_rss_bytes: Option<u64>,
    /// How many of the child's last stderr lines are kept. Defaults to 20.
    pub stderr_lines: usize,
    /// Strip ANSI escape sequences from output before framing. Defaults to false.
    pub strip_ansi: bool,
    /// When the monitor restarts a process that ended. Defaults to on failure.
    pub restart: RestartPolicy,
    /// Replay the prompts that succeeded into a restarted process (REPLs). Defaults to none.
    pub replay: Option<Replay>,
    /// What an agent may do without asking (claude, codex, aider; other tools ignore it).
    /// Defaults to none: the client's own settings (the built-in agents say `edit`).
    pub permissions: Option<Permissions>,
    /// Who answers an agent's requests beyond its permissions when no
    /// [`ToolSpec::approver`] is set. Defaults to [`Approve::None`]: denied.
    pub approve: Approve,
    /// Decides requests beyond the permissions (never serialised); set it with
    /// [`ToolSpec::approver`]. Defaults to none.
    #[serde(skip)]
    pub(crate) approver: Option<CustomApprover>,
    /// How long the approver may take before a request counts as denied. Defaults to 30 s.
    #[serde(rename = "approval_timeout_ms", with = "duration_ms")]
    pub approval_timeout: Duration,
    /// Any denial during a turn makes it fail with [`Error::Denied`] instead of answering.
    /// Defaults to false (the answer lists its `denials`).
    pub strict_denials: bool,
    /// An agent turn with no output and no protocol event for this long ends with
    /// [`TimeoutStage::Stalled`](crate::TimeoutStage::Stalled). Defaults to none (the
    /// built-in agents say 5 min).
    #[serde(rename = "stall_timeout_ms", with = "crate::duration::opt_duration_ms")]
    pub stall_timeout: Option<Duration>,
    /// A working directory of its own for each instance: a git worktree or a directory, with
    /// lifecycle hooks (see [`WorkspaceSpec`]). With one, `cwd` only says which checkout
    /// (or base directory) the workspaces come from. Defaults to none.
    pub workspace: WorkspaceSpec,
}

impl Default for ToolSpec {
    fn default() -> Self {
        ToolSpec {
            name: String::new(),
            program: String::new(),
            args: Vec::new(),
            env: EnvSpec::default(),
            cwd: None,
            create_cwd: false,
            transport: Transport::Pipes,
            pty_size: PtySize::default(),
            protocol: ProtocolKind::Framed,
            custom_protocol: None,
            framing: Framing::Line,
            input: InputFormat::Line,
            readiness: Readiness::Auto,
            init: Vec::new(),
            refuse: Vec::new(),
            statement_check: StatementCheck::None,
            startup_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            quit_command: None,
            stop_grace: Duration::from_secs(2),
            max_response_bytes: 16 << 20,
            max_prompt_bytes: 64 << 20,
            max_rss_bytes: None,
            stderr_lines: 20,
            strip_ansi: false,
            restart: RestartPolicy::OnFailure,
            replay: None,
            permissions: None,
            approve: Approve::None,
            approver: None,
            approval_timeout: Duration::from_secs(30),
            strict_denials: false,
            stall_timeout: None,
            workspace: WorkspaceSpec::default(),
        }
    }
}

impl ToolSpec {
    /// A spec for `program` named `name`, every other field at its default.
    pub fn new(name: impl Into<String>, program: impl Into<String>) -> Self {
        ToolSpec {
            name: name.into(),
            program: program.into(),
            ..ToolSpec::default()
        }
    }

    /// Uses a shipped protocol. Defaults to [`ProtocolKind::Framed`].
    pub fn protocol(mut self, kind: ProtocolKind) -> Self {
        self.protocol = kind;
        self
    }

    /// Uses a protocol of your own (it wins over [`ToolSpec::protocol`]). Defaults to none.
    ///
    /// ```
    /// use aim::protocol::{Framed, Protocol};
    /// use aim::ToolSpec;
    /// use std::sync::Arc;
    /// let spec = ToolSpec::new("cat", "cat");
    /// let mine: Arc<dyn Protocol> = Arc::new(Framed::new(&spec));
    /// let spec = spec.custom_protocol(Arc::clone(&mine));
    /// assert!(Arc::ptr_eq(&spec.build_protocol(), &mine));
    /// ```
    pub fn custom_protocol(mut self, protocol: Arc<dyn Protocol>) -> Self {
        self.custom_protocol = Some(CustomProtocol(protocol));
        self
    }

    /// The custom protocol, if one was set.
    pub(crate) fn custom(&self) -> Option<&Arc<dyn Protocol>> {
        self.custom_protocol.as_ref().map(|c| &c.0)
    }

    /// Replays the prompts that succeeded into a restarted process. Defaults to none.
    ///
    /// ```
    /// use aim::{Replay, ToolSpec};
    /// let spec = ToolSpec::new("python", "python3").replay(Replay::default());
    /// assert_eq!(spec.replay.unwrap().max_prompts, 1000);
    /// ```
    pub fn replay(mut self, replay: Replay) -> Self {
        self.replay = Some(replay);
        self
    }

    /// Gives each instance a workspace of its own. Defaults to none
    /// ([`crate::WorkspaceKind::None`]).
    pub fn workspace(mut self, workspace: WorkspaceSpec) -> Self {
        self.workspace = workspace;
        self
    }

    /// Whether to create a missing `cwd` before each start. Defaults to false.
    pub fn create_cwd(mut self, create: bool) -> Self {
        self.create_cwd = create;
        self
    }

    /// Replaces the arguments (`{index}` expands). Defaults to none.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Sets one environment variable for the child (`{index}` expands in the value).
    /// Defaults to setting none: the child inherits our environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.set.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory (`{index}` expands). Defaults to ours.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets the transport. Defaults to [`Transport::Pipes`].
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Sets the terminal size under [`Transport::Pty`]. Defaults to 24 rows by 80 columns.
    pub fn pty_size(mut self, size: PtySize) -> Self {
        self.pty_size = size;
        self
    }

    /// Sets the framing (framed protocol). Defaults to [`Framing::Line`].
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Sets the input format (framed protocol). Defaults to [`InputFormat::Line`].
    pub fn input(mut self, input: InputFormat) -> Self {
        self.input = input;
        self
    }

    /// Sets the readiness rule (framed protocol). Defaults to [`Readiness::Auto`].
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Sets how long an instance may take to become ready. Defaults to 30 s.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Sets how long one request may take, counted from its submission. Defaults to 60 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the line that asks the tool to exit. Defaults to none (stdin is closed).
    pub fn quit_command(mut self, line: impl Into<String>) -> Self {
        self.quit_command = Some(line.into());
        self
    }

    /// Sets how long the tool gets after the quit command and after SIGTERM. Defaults to
    /// 2 s.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Sets the largest accepted answer, in bytes. Defaults to 16 MiB.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Sets the largest accepted prompt. Defaults to 64 MiB.
    pub fn max_prompt_bytes(mut self, bytes: usize) -> Self {
        self.max_prompt_bytes = bytes;
        self
    }

    /// Sets the memory limit per instance, in bytes of resident memory (see
    /// [`ToolSpec::max_rss_bytes`](ToolSpec#structfield.max_rss_bytes)). Defaults to none.
    pub fn max_rss_bytes(mut self, bytes: u64) -> Self {
        self.max_rss_bytes = Some(bytes);
        self
    }

    /// Sets how many of the child's last stderr lines are kept. Defaults to 20.
    pub fn stderr_lines(mut self, lines: usize) -> Self {
        self.stderr_lines = lines;
        self
    }

    /// Whether to strip ANSI escape sequences from output before framing. Defaults to
    /// false.
    pub fn strip_ansi(mut self, strip: bool) -> Self {
        self.strip_ansi = strip;
        self
    }

    /// Replaces the lines written once after start, before readiness is awaited. Defaults to
    /// none.
    ///
    /// ```
    /// let spec = aim::ToolSpec::new("py", "python3").init(["import math"]);
    /// assert_eq!(spec.init, ["import math"]);
    /// ```
    pub fn init<I, S>(mut self, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.init = lines.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a [`Refusal`]: prompts with a line starting with one of `words` fail with
    /// [`Error::InvalidPrompt`] giving `reason`, before anything is written (framed protocol).
    /// Defaults to refusing nothing.
    ///
    /// ```
    /// let spec = aim::ToolSpec::new("db", "sqlite3").refuse([".once"], "it redirects output");
    /// let err = spec.render_prompt(".once out.txt".into()).unwrap_err();
    /// assert!(err.to_string().contains("`.once` is refused: it redirects output"));
    /// ```
    pub fn refuse<I, S>(mut self, words: I, reason: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.refuse.push(Refusal::new(words, reason));
        self
    }

    /// Checks prompts and `init` lines for statements `check`'s tool would wait on (see
    /// [`StatementCheck`]). Defaults to [`StatementCheck::None`].
    ///
    /// ```
    /// let spec = aim::ToolSpec::new("db", "sqlite3").statement_check(aim::StatementCheck::Sqlite3);
    /// let err = spec.render_prompt("SELECT 'abc".into()).unwrap_err();
    /// assert!(err.to_string().contains("unfinished statement"));
    /// ```
    pub fn statement_check(mut self, check: StatementCheck) -> Self {
        self.statement_check = check;
        self
    }

    /// Removes `key` from the child's environment. Defaults to removing nothing.
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env.remove.push(key.into());
        self
    }

    /// Starts the child from an empty environment (then `env` adds to it). Defaults to
    /// inheriting ours.
    pub fn env_clear(mut self) -> Self {
        self.env.clear = true;
        self
    }

    /// Sets when the monitor restarts a process that ended. Defaults to
    /// [`RestartPolicy::OnFailure`].
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// Sets what an agent may do without asking. Defaults to none (the client's settings).
    pub fn permissions(mut self, permissions: Permissions) -> Self {
        self.permissions = Some(permissions);
        self
    }

    /// Sets who answers requests beyond the permissions. Defaults to [`Approve::None`].
    pub fn approve(mut self, approve: Approve) -> Self {
        self.approve = approve;
        self
    }

    /// Lets `approver` decide requests beyond the permissions (it wins over
    /// [`ToolSpec::approve`]); it runs on a thread of its own, and a decision later than
    /// [`ToolSpec::approval_timeout`] counts as a denial. Defaults to none.
    ///
    /// ```
    /// use aim::{ApprovalRequest, ApproverFn, Decision, ToolSpec};
    /// use std::sync::Arc;
    /// let spec = ToolSpec::new("claude", "claude").approver(Arc::new(ApproverFn(
    ///     |r: &ApprovalRequest| if r.tool == "Bash" { Decision::Deny("no shell".into()) } else { Decision::Allow },
    /// )));
    /// assert!(spec.validate().is_ok());
    /// ```
    pub fn approver(mut self, approver: Arc<dyn Approver>) -> Self {
        self.approver = Some(CustomApprover(approver));
        self
    }

    /// Sets how long the approver may take. Defaults to 30 s.
    pub fn approval_timeout(mut self, timeout: Duration) -> Self {
        self.approval_timeout = timeout;
        self
    }

    /// Makes any denial a [`Error::Denied`]. Defaults to false.
    pub fn strict_denials(mut self, strict: bool) -> Self {
        self.strict_denials = strict;
        self
    }

    /// Sets the stall timeout for agent turns. Defaults to none.
    pub fn stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = Some(timeout);
        self
    }

    /// How the spec's requests beyond its permissions are decided.
    pub fn approvals(&self) -> Approvals {
        Approvals::new(
            self.approve,
            self.approver.as_ref().map(|a| Arc::clone(&a.0)),
            self.approval_timeout,
        )
    }

    /// Checks every field, returning [`Error::InvalidConfig`] naming the first bad one.
    ///
    /// # Errors
    /// An empty program, an empty marker, a sentinel command without `{nonce}`, a JSON template
    /// without `{prompt}`, a zero timeout or cap, a multi-line template or init line.
    pub fn validate(&self) -> Result<()> {
        if self.program.trim().is_empty() {
            return Err(Error::config("program", "must not be empty"));
        }
        match &self.framing {
            Framing::Prompt { marker, .. } if marker.is_empty() => {
                return Err(Error::config("framing.marker", "must not be empty"))
            }
            Framing::Sentinel { command } if !command.contains("{nonce}") => {
                return Err(Error::config("framing.command", "must contain {nonce}"))
            }
            Framing::NumberedPrompt { setup, .. } if !setup.contains("{nonce}") => {
                return Err(Error::config("framing.setup", "must contain {nonce}"))
            }
            Framing::NumberedPrompt {
                setup, end_block, ..
            } if setup.contains('\n') || end_block.as_ref().is_some_and(|l| l.contains('\n')) => {
                return Err(Error::config(
                    "framing.setup",
                    "setup and end_block must be one line each",
                ))
            }
            Framing::JsonLines { field, .. } if field.is_empty() => {
                return Err(Error::config("framing.field", "must not be empty"))
            }
            Framing::Idle { quiet } if quiet.is_zero() => {
                return Err(Error::config("framing.quiet_ms", "must be positive"))
            }
            _ => {}
        }
        match &self.input {
            InputFormat::JsonTemplate { template } if !template.contains("{prompt}") => {
                return Err(Error::config("input.template", "must contain {prompt}"))
            }
            InputFormat::JsonTemplate { template } if template.contains('\n') => {
                return Err(Error::config("input.template", "must be one line"))
            }
            InputFormat::Wrapped { open, close }
                if open.is_empty()
                    || close.is_empty()
                    || open.contains('\n')
                    || close.contains('\n') =>
            {
                return Err(Error::config(
                    "input.open",
                    "open and close must be non-empty single lines",
                ))
            }
            _ => {}
        }
        if let Readiness::Text { text, .. } = &self.readiness {
            if text.is_empty() {
                return Err(Error::config("readiness.text", "must not be empty"));
            }
        }
        if self.pty_size.rows == 0 || self.pty_size.cols == 0 {
            return Err(Error::config("pty_size", "rows and cols must be positive"));
        }
        if self.init.iter().any(|l| l.contains('\n')) {
            return Err(Error::config("init", "each entry must be one line"));
        }
        for (i, line) in self.init.iter().enumerate() {
            if let Some(reason) = self.statement_check.unfinished(line) {
                return Err(Error::config(
                    "init",
                    format!("line {} `{line}`: {reason}", i + 1),
                ));
            }
        }
        check_duration("startup_timeout_ms", self.startup_timeout, true)?;
        check_duration("request_timeout_ms", self.request_timeout, true)?;
        check_duration("stop_grace_ms", self.stop_grace, false)?;
        check_duration("approval_timeout_ms", self.approval_timeout, true)?;
        if let Some(stall) = self.stall_timeout {
            check_duration("stall_timeout_ms", stall, true)?;
        }
        if let Framing::Prompt { settle, .. } = &self.framing {
            check_duration("framing.settle_ms", *settle, false)?;
        }
        if let Framing::Idle { quiet } = &self.framing {
            check_duration("framing.quiet_ms", *quiet, true)?;
        }
        if self.max_response_bytes == 0 {
            return Err(Error::config("max_response_bytes", "must be positive"));
        }
        if self.max_prompt_bytes == 0 {
            return Err(Error::config("max_prompt_bytes", "must be positive"));
        }
        self.workspace.validate()?;
        if self.max_rss_bytes == Some(0) {
            return Err(Error::config("max_rss_bytes", "must be positive"));
        }
        Ok(())
    }

    /// The readiness rule with [`Readiness::Auto`] resolved against the framing.
    pub fn effective_readiness(&self) -> Readiness {
        match (&self.readiness, &self.framing) {
            (Readiness::Auto, Framing::Prompt { marker, stream, .. }) => Readiness::Text {
                text: marker.clone(),
                stream: *stream,
            },
            (Readiness::Auto, Framing::Sentinel { .. } | Framing::NumberedPrompt { .. }) => {
                Readiness::Auto
            }
            (Readiness::Auto, _) => Readiness::Immediate,
            (other, _) => other.clone(),
        }
    }

    /// Whether prompts may contain newlines with this input format.
    pub fn accepts_multiline(&self) -> bool {
        !matches!(self.input, InputFormat::Line)
    }

    /// The spec for instance `index`: `{index}` expanded in args, env values and cwd.
    pub fn for_instance(&self, index: usize) -> ToolSpec {
        let expand = |s: &String| s.replace("{index}", &index.to_string());
        let mut spec = self.clone();
        spec.args = self.args.iter().map(expand).collect();
        spec.env.set = self
            .env
            .set
            .iter()
            .map(|(k, v)| (k.clone(), expand(v)))
            .collect();
        spec.cwd = self.cwd.as_ref().map(expand);
        spec
    }

    /// Checks a prompt against this spec and renders the bytes written to stdin.
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`] (with the prompt handed back) for an empty prompt, one over
    /// `max_prompt_bytes`, one with a NUL byte, one with a line [`ToolSpec::refuse`] refuses,
    /// or one with a line break when the input format has no multi-line convention.
    pub fn render_prompt(&self, prompt: String) -> Result<Vec<u8>> {
        self.render(&prompt)
            .map_err(|reason| Error::InvalidPrompt { reason, prompt })
    }

    /// Checks and renders a borrowed prompt; the error is the reason it was rejected.
    pub(crate) fn render(&self, prompt: &str) -> std::result::Result<Vec<u8>, String> {
        if prompt.trim().is_empty() {
            return Err("the prompt is empty".into());
        }
        if prompt.len() > self.max_prompt_bytes {
            return Err(format!(
                "the prompt is {} bytes, over the limit of {}",
                prompt.len(),
                self.max_prompt_bytes
            ));
        }
        if prompt.contains('\0') {
            return Err("the prompt contains a NUL byte".into());
        }
        if let Some(reason) = refused(&self.refuse, prompt) {
            return Err(reason);
        }
        if let Some(reason) = self.statement_check.unfinished(prompt) {
            return Err(reason);
        }
        let multiline = prompt.contains(['\n', '\r']);
        let mut out = Vec::with_capacity(prompt.len() + 64);
        let mut line = |text: &str| {
            out.extend_from_slice(text.as_bytes());
            out.push(b'\n');
        };
        match &self.input {
            InputFormat::Line if multiline => {
                return Err(
                    "the prompt contains a line break and the tool's input format has \
                            no multi-line convention"
                        .into(),
                )
            }
            InputFormat::Wrapped { open, close } if multiline => {
                let body = prompt.replace("\r\n", "\n").replace('\r', "\n");
                if body.lines().any(|l| l == close) {
                    return Err("a line of the prompt equals the closing line".into());
                }
                line(open);
                line(&body);
                line(close);
            }
            InputFormat::Line | InputFormat::Wrapped { .. } => line(prompt),
            InputFormat::JsonTemplate { template } => {
                let quoted = serde_json::Value::from(prompt).to_string();
                line(&template.replace("{prompt}", &quoted));
            }
        }
        Ok(out)
    }

    /// The working directory as a path, if set.
    pub(crate) fn cwd_path(&self) -> Option<PathBuf> {
        self.cwd.as_ref().map(PathBuf::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_expands_in_args_env_and_cwd() {
        let spec = ToolSpec::new("t", "prog")
            .args(["--dir", "work-{index}"])
            .env("SLOT", "{index}")
            .cwd("/tmp/w{index}");
        let one = spec.for_instance(3);
        assert_eq!(one.args, ["--dir", "work-3"]);
        assert_eq!(one.env.set["SLOT"], "3");
        assert_eq!(one.cwd.as_deref(), Some("/tmp/w3"));
    }

    #[test]
    fn line_input_rejects_newlines_and_empty_prompts() {
        let spec = ToolSpec::new("t", "prog");
        assert_eq!(spec.render_prompt("hi".into()).unwrap(), b"hi\n");
        for bad in ["", "   ", "a\nb", "a\rb", "a\0b"] {
            let err = spec.render_prompt(bad.into()).unwrap_err();
            assert!(matches!(err, Error::InvalidPrompt { .. }), "{bad:?}");
            assert_eq!(err.prompt(), Some(bad));
        }
    }

    #[test]
    fn wrapped_input_wraps_only_multiline_prompts() {
        let spec = ToolSpec::new("t", "p").input(InputFormat::Wrapped {
            open: "{".into(),
            close: "}".into(),
        });
        assert_eq!(spec.render_prompt("one".into()).unwrap(), b"one\n");
        assert_eq!(spec.render_prompt("a\nb".into()).unwrap(), b"{\na\nb\n}\n");
        assert!(spec.render_prompt("a\n}".into()).is_err());
    }

    #[test]
    fn json_template_escapes_the_prompt() {
        let spec = ToolSpec::new("t", "p").input(InputFormat::JsonTemplate {
            template: r#"{"content":{prompt}}"#.into(),
        });
        let out = spec.render_prompt("say \"hi\"\nnow".into()).unwrap();
        assert_eq!(out, b"{\"content\":\"say \\\"hi\\\"\\nnow\"}\n");
    }

    #[test]
    fn prompts_over_the_cap_are_rejected() {
        let mut spec = ToolSpec::new("t", "p");
        spec.max_prompt_bytes = 4;
        assert!(spec.render_prompt("12345".into()).is_err());
    }

    #[test]
    fn validate_names_the_field() {
        let spec = ToolSpec::new("t", "p").framing(Framing::Sentinel {
            command: "print".into(),
        });
        match spec.validate().unwrap_err() {
            Error::InvalidConfig { field, .. } => assert_eq!(field, "framing.command"),
            other => panic!("{other}"),
        }
        assert!(ToolSpec::new("t", "").validate().is_err());
    }

    #[test]
    fn json_round_trip_uses_ms_fields() {
        let json = r#"{"name":"x","program":"cat","framing":{"kind":"idle","quiet_ms":250},
                       "request_timeout_ms":1500}"#;
        let spec: ToolSpec = serde_json::from_str(json).unwrap();
        assert_eq!(
            spec.framing,
            Framing::Idle {
                quiet: Duration::from_millis(250)
            }
        );
        assert_eq!(spec.request_timeout, Duration::from_millis(1500));
        let back: ToolSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert!(serde_json::from_str::<ToolSpec>(r#"{"program":"x","bogus":1}"#).is_err());
    }
}
