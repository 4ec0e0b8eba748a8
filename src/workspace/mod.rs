//! Workspaces: one isolated working directory per instance (or per session), so agents that
//! edit files never share a checkout.
//!
//! A [`WorkspaceSpec`] in a tool's spec says what kind (`git_worktree`, `dir`, `none`), whose
//! (per instance by default, or per session), where (the root), the lifecycle hooks and what
//! happens at shutdown. The pool asks its workspaces for a directory before each process
//! start and gives it to the launcher as the working directory; the I/O thread asks what a
//! turn changed there. Git is driven through its command line (`git worktree add`, `git
//! status`), like `ssh`.
//!
//! ```
//! use aim::{ToolSpec, WorkspaceKind, WorkspaceSpec};
//! let spec = ToolSpec::new("claude", "claude")
//!     .workspace(WorkspaceSpec::new(WorkspaceKind::GitWorktree).root("/srv/agents/wt"));
//! assert_eq!(spec.workspace.kind, WorkspaceKind::GitWorktree);
//! # Ok::<(), aim::Error>(())
//! ```

mod changes;
mod command;
mod git;
mod key;
mod manager;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::duration_ms;
use crate::error::{Error, Result};

pub(crate) use changes::Snapshot;
pub(crate) use key::sanitize_key;
pub(crate) use manager::{Workspace, Workspaces};

/// What kind of workspace each instance (or session) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceKind {
    /// No workspace: every process starts in the spec's `cwd` (or ours). The default.
    #[default]
    None,
    /// A directory of its own under the root, created empty.
    Dir,
    /// A `git worktree add` of [`WorkspaceSpec::base`] on a branch of its own,
    /// `aim/<tool>-<key>`, in `<root>/<tool>-<key>`. The checkout is the git repository that
    /// holds the spec's `cwd` (or our working directory).
    GitWorktree,
}

/// Whose workspace a process runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceKey {
    /// Instance `i` always works in workspace `i`, kept across restarts, so a restored
    /// conversation finds its files. The default.
    #[default]
    Instance,
    /// Each session gets a workspace of its own (`<tool>-s-<session key>`) on its first
    /// prompt and keeps it for its whole life, across instances and launches: before a
    /// session's prompt is written, an instance whose process runs in another workspace is
    /// restarted in the session's (its conversation is not carried over). Prompts without a
    /// session use the instance's workspace. Meant for
    /// [`SessionMode::Exclusive`](crate::SessionMode::Exclusive), where one session owns an
    /// instance at a time.
    Session,
}

/// What shutdown does with workspaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cleanup {
    /// Keep every workspace.
    Keep,
    /// Remove the clean ones (no uncommitted changes, no commits that are not on the base;
    /// for `dir`, an empty directory), keep and report the others. The default.
    #[default]
    RemoveClean,
}

/// Shell commands run at points of a workspace's life, each with `sh -c`, the workspace as its
/// working directory, and `AIM_WORKSPACE`, `AIM_WORKSPACE_KEY` and `AIM_TOOL` in its
/// environment. A hook that runs past `timeout` is killed (its whole process group) and counts
/// as failed; so does a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Hooks {
    /// Run once when a workspace is created (install dependencies, copy `.env`). On failure
    /// the new workspace is removed again and not used: the start fails with
    /// [`Error::Workspace`]. Defaults to none.
    pub after_create: Option<String>,
    /// Run before each process start in the workspace. On failure that start fails with
    /// [`Error::Workspace`] (the monitor retries it like any failed start). Defaults to none.
    pub before_run: Option<String>,
    /// Run after each answer and after each process exit. A failure is logged, nothing more.
    /// Defaults to none.
    pub after_run: Option<String>,
    /// Run before shutdown removes a workspace. On failure the workspace is kept and
    /// reported. Defaults to none.
    pub before_remove: Option<String>,
    /// How long each hook may run. Defaults to 60 s.
    #[serde(rename = "timeout_ms", with = "duration_ms")]
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            after_create: None,
            before_run: None,
            after_run: None,
            before_remove: None,
            timeout: Duration::from_secs(60),
        }
    }
}

impl Hooks {
    crate::setters::config_setters! {
        /// Sets [`Hooks::timeout`], how long each hook may run.
        timeout: Duration;
    }

    /// Sets [`Hooks::after_create`]. Defaults to none.
    pub fn after_create(mut self, command: impl Into<String>) -> Self {
        self.after_create = Some(command.into());
        self
    }

    /// Sets [`Hooks::before_run`]. Defaults to none.
    pub fn before_run(mut self, command: impl Into<String>) -> Self {
        self.before_run = Some(command.into());
        self
    }

    /// Sets [`Hooks::after_run`]. Defaults to none.
    pub fn after_run(mut self, command: impl Into<String>) -> Self {
        self.after_run = Some(command.into());
        self
    }

    /// Sets [`Hooks::before_remove`]. Defaults to none.
    pub fn before_remove(mut self, command: impl Into<String>) -> Self {
        self.before_remove = Some(command.into());
        self
    }
}

/// Where and how each instance gets a working directory of its own (the `workspace` field of a
/// tool's spec).
///
/// The root defaults to `<checkout>.aim-workspaces`, a sibling of the git checkout (for
/// `git_worktree`) or of the spec's `cwd` or our working directory (for `dir`): nothing is
/// written inside the user's checkout. A later launch with the same root and keys reuses the
/// workspaces that are there.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkspaceSpec {
    /// The kind. Defaults to [`WorkspaceKind::None`].
    pub kind: WorkspaceKind,
    /// Whose workspace. Defaults to [`WorkspaceKey::Instance`].
    pub key: WorkspaceKey,
    /// The directory that holds the workspaces (relative paths are taken from our working
    /// directory at launch). Defaults to `<checkout>.aim-workspaces` next to the checkout.
    pub root: Option<String>,
    /// The ref new worktrees start from. Defaults to `HEAD` (of the checkout, at launch).
    pub base: Option<String>,
    /// The lifecycle hooks. Defaults to none.
    pub hooks: Hooks,
    /// What shutdown does. Defaults to [`Cleanup::RemoveClean`].
    pub cleanup: Cleanup,
}

impl WorkspaceSpec {
    /// A spec of `kind`, everything else at its default.
    pub fn new(kind: WorkspaceKind) -> Self {
        WorkspaceSpec {
            kind,
            ..WorkspaceSpec::default()
        }
    }

    /// Sets [`WorkspaceSpec::root`]. Defaults to `<checkout>.aim-workspaces`.
    pub fn root(mut self, root: impl Into<String>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// Sets [`WorkspaceSpec::base`]. Defaults to `HEAD`.
    pub fn base(mut self, base: impl Into<String>) -> Self {
        self.base = Some(base.into());
        self
    }

    crate::setters::config_setters! {
        /// Sets [`WorkspaceSpec::hooks`].
        hooks: Hooks;
        /// Sets [`WorkspaceSpec::cleanup`], what shutdown does.
        cleanup: Cleanup;
        /// Sets [`WorkspaceSpec::key`], whose workspace a process runs in.
        key: WorkspaceKey;
    }

    /// Whether processes get a workspace at all.
    pub fn is_enabled(&self) -> bool {
        self.kind != WorkspaceKind::None
    }

    /// Checks the fields, returning [`Error::InvalidConfig`] naming the first bad one.
    ///
    /// # Errors
    /// An empty root or base, an empty hook command, a zero hook timeout or one over a year.
    pub fn validate(&self) -> Result<()> {
        if self.root.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(Error::config("workspace.root", "must not be empty"));
        }
        if let Some(base) = &self.base {
            if base.trim().is_empty() || base.starts_with('-') {
                return Err(Error::config(
                    "workspace.base",
                    "must be a git ref (not empty, not starting with '-')",
                ));
            }
        }
        let hooks = &self.hooks;
        for (name, hook) in [
            ("after_create", &hooks.after_create),
            ("before_run", &hooks.before_run),
            ("after_run", &hooks.after_run),
            ("before_remove", &hooks.before_remove),
        ] {
            if hook.as_deref().is_some_and(|h| h.trim().is_empty()) {
                return Err(Error::config(
                    format!("workspace.hooks.{name}"),
                    "must not be empty",
                ));
            }
        }
        if hooks.timeout.is_zero() || hooks.timeout > crate::duration::MAX_DURATION {
            return Err(Error::config(
                "workspace.hooks.timeout_ms",
                "must be positive and at most one year",
            ));
        }
        Ok(())
    }
}

/// How a turn changed one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    /// The file did not exist before the turn.
    Created,
    /// Its content changed.
    Modified,
    /// It existed before the turn and does not now.
    Deleted,
}

/// A file a turn created, modified or deleted in its workspace, whether committed or not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChangedFile {
    /// The path, relative to the workspace, `/`-separated as git writes it.
    pub path: String,
    /// What happened to it.
    pub change: FileChange,
}

/// A workspace that shutdown left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeptWorkspace {
    /// Its key (the instance index for per-instance workspaces).
    pub key: String,
    /// Its directory.
    pub path: PathBuf,
    /// Its branch (git worktrees only).
    pub branch: Option<String>,
    /// It has uncommitted changes (for `dir`: it is not empty).
    pub dirty: bool,
    /// How many of its commits are not on the base.
    pub ahead: u64,
    /// Why it was kept, in words.
    pub reason: String,
}

/// Logs a warning when `count` agent instances (aider, claude, codex) of `tool` would share
/// one git checkout: they have no workspace setting and `dir` (their working directory, or
/// ours) is inside a git work tree. Looks for a `.git` entry upwards; runs no command.
pub(crate) fn warn_if_shared(tool: &str, count: usize, dir: Option<&std::path::Path>) {
    if count < 2 {
        return;
    }
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => match std::env::current_dir() {
            Ok(dir) => dir,
            Err(_) => return,
        },
    };
    if let Some(checkout) = dir.ancestors().find(|d| d.join(".git").exists()) {
        log::warn!(
            "{tool}: {count} instances share the git checkout {}: their edits and commits \
             collide; set `workspace` (tools file) or `--workspace worktree` (aim run) to give \
             each its own worktree",
            checkout.display()
        );
    }
}
