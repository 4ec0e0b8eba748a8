//! [`Response`]: a complete answer, as the caller gets it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A complete answer from one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Response {
    /// The answer proper, as the protocol decodes it: what the model or REPL answered,
    /// without echoes, prompt markers or bookkeeping lines (invalid UTF-8 replaced by U+FFFD).
    /// For the framed protocol, the output minus its markers.
    pub text: String,
    /// The raw transcript of the turn's stdout, exactly as the tool wrote it (for debugging;
    /// the framed protocol leaves out its markers).
    pub bytes: Vec<u8>,
    /// What the tool wrote to stderr while answering (minus a prompt marker shown there).
    pub stderr: String,
    /// The tool's session or thread id, where the protocol reports one (claude's
    /// `session_id`, codex's thread id).
    pub session_id: Option<String>,
    /// Tokens used by the turn, where the tool reports them.
    pub usage: Option<crate::protocol::Usage>,
    /// The turn's cost in US dollars, where the tool reports it.
    pub cost_usd: Option<f64>,
    /// Tool uses refused during the turn (claude's `permission_denials`, declined codex
    /// approvals, aider questions answered no, edits aider did not apply in `--dry-run`).
    /// Empty when nothing was refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<crate::permissions::Denial>,
    /// Files the tool reports it changed during the turn (aider's `Applied edit to F`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_edited: Vec<String>,
    /// The instance that answered.
    pub instance: usize,
    /// The generation (restart count) of the process that answered.
    pub generation: u64,
    /// The pid of the process that answered (on another host: of the local `ssh` client).
    pub pid: i32,
    /// The host the answering instance runs on (`None`: this machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Time from submission to the complete answer.
    #[serde(with = "crate::duration::duration_ms", rename = "elapsed_ms")]
    pub elapsed: Duration,
    /// Time from the prompt being written to the complete answer.
    #[serde(with = "crate::duration::duration_ms", rename = "service_ms")]
    pub service_time: Duration,
    /// True when this prompt's session had been answered by another process before (its
    /// instance died or was recycled) and the conversation could not be restored: the tool
    /// has lost the conversation's context. [`Response::context_note`] says why.
    pub context_lost: bool,
    /// True when this prompt's session was answered by a restarted process that restored the
    /// conversation (claude `--resume`, codex `thread/resume`, aider's chat history, or a
    /// replay of a REPL's prompts).
    pub context_restored: bool,
    /// True when, since this session's last answer, another session's conversation moved into
    /// the same process (shared sessions only): the tool's context now holds both.
    pub context_mixed: bool,
    /// Why the context was lost, restored or mixed, in words.
    pub context_note: Option<String>,
    /// The workspace the answering process runs in, when the tool has one.
    pub workspace: Option<std::path::PathBuf>,
    /// The files the turn created, modified or deleted in its workspace (committed or not),
    /// sorted by path; from git, so only for `git_worktree` workspaces (empty otherwise).
    pub changed_files: Vec<crate::workspace::ChangedFile>,
    /// The instance's moved-in count when the prompt was placed (for `context_mixed`).
    #[serde(skip)]
    pub(crate) mixing: u64,
    /// Whether this process restored its predecessor's conversation.
    #[serde(skip)]
    pub(crate) restore: crate::state::Restore,
}
