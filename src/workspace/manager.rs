//! [`Workspaces`]: the workspaces of one pool: where they live, creating or reusing one for a
//! key, running the hooks, and deciding at shutdown which to keep.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::command;
use super::git::{self, git};
use super::key::{contained, sanitize_key};
use super::{changes, ChangedFile, Cleanup, KeptWorkspace, Snapshot, WorkspaceKind, WorkspaceSpec};
use crate::error::{Error, Result};

/// One workspace: its key, directory and branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workspace {
    /// The sanitised key.
    pub key: String,
    pub path: PathBuf,
    /// `aim/<tool>-<key>` for git worktrees.
    pub branch: Option<String>,
}

/// The checkout git worktrees are made from.
#[derive(Debug)]
struct Repo {
    /// The checkout's top directory.
    top: PathBuf,
    /// Its common git directory (the lock key).
    common: PathBuf,
    /// The commit new worktrees start from, and against which "ahead" is counted.
    base: String,
}

/// The workspaces of one pool. Shared by its I/O threads (each asks for its own key) and
/// closed by its shutdown.
#[derive(Debug)]
pub(crate) struct Workspaces {
    spec: WorkspaceSpec,
    /// The tool's name as a file name.
    tool: String,
    root: PathBuf,
    repo: Option<Repo>,
    /// Every workspace handed out, by key.
    known: Mutex<BTreeMap<String, Workspace>>,
}

impl Workspaces {
    /// The workspaces for tool `tool` whose checkout (or base directory) is `base_dir` (the
    /// spec's `cwd`, or ours). `None` for [`WorkspaceKind::None`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the spec is invalid, a `git_worktree` base directory is not
    /// in a git checkout or its base is not a commit, or the root cannot be created.
    pub(crate) fn open(
        spec: &WorkspaceSpec,
        tool: &str,
        base_dir: Option<&Path>,
    ) -> Result<Option<Arc<Workspaces>>> {
        if !spec.is_enabled() {
            return Ok(None);
        }
        spec.validate()?;
        let cwd = std::env::current_dir().map_err(|e| Error::io("cannot read our cwd", e))?;
        let base_dir = match base_dir {
            Some(dir) => cwd.join(dir),
            None => cwd.clone(),
        };
        let repo = match spec.kind {
            WorkspaceKind::GitWorktree => {
                let (top, common) = git::checkout_of(&base_dir).map_err(|reason| {
                    Error::config(
                        "workspace.kind",
                        format!("git_worktree needs a git checkout: {reason}"),
                    )
                })?;
                let base = git::commit_of(&top, spec.base.as_deref().unwrap_or("HEAD"))
                    .map_err(|reason| Error::config("workspace.base", reason))?;
                Some(Repo { top, common, base })
            }
            _ => None,
        };
        let root = match &spec.root {
            Some(root) => cwd.join(root),
            None => {
                let of = repo.as_ref().map_or(&base_dir, |r| &r.top);
                let name = of.file_name().ok_or_else(|| {
                    Error::config(
                        "workspace.root",
                        format!("no default for {}: set one", of.display()),
                    )
                })?;
                let mut name = name.to_os_string();
                name.push(".aim-workspaces");
                of.with_file_name(name)
            }
        };
        if let Some(repo) = &repo {
            if root.starts_with(&repo.top) {
                log::warn!(
                    "{tool}: workspace root {} is inside the checkout {}: its worktrees show \
                     as untracked files there",
                    root.display(),
                    repo.top.display()
                );
            }
        }
        std::fs::create_dir_all(&root).map_err(|e| {
            Error::config(
                "workspace.root",
                format!("cannot create {}: {e}", root.display()),
            )
        })?;
        Ok(Some(Arc::new(Workspaces {
            spec: spec.clone(),
            tool: sanitize_key(tool),
            root,
            repo,
            known: Mutex::new(BTreeMap::new()),
        })))
    }

    fn error(&self, key: &str, path: &Path, reason: impl Into<String>) -> Error {
        Error::Workspace {
            tool: self.tool.clone(),
            key: key.to_string(),
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// The workspace for `raw_key`: the one handed out before, one already on disk (from an
    /// earlier launch), or a new one (then `after_create` runs in it). Blocks for the git
    /// commands and the hook (each within its timeout).
    ///
    /// # Errors
    /// [`Error::Workspace`] when the path would leave the root, is taken by something else,
    /// git fails, or `after_create` fails (the new workspace is removed again).
    pub(crate) fn acquire(&self, raw_key: &str) -> Result<Workspace> {
        let key = sanitize_key(raw_key);
        if let Some(ws) = self.known.lock().get(&key) {
            if ws.path.is_dir() {
                return Ok(ws.clone());
            }
        }
        let name = format!("{}-{key}", self.tool);
        let path = contained(&self.root, &name).map_err(|r| self.error(&key, &self.root, r))?;
        let (ws, created, branch_new) = match &self.repo {
            Some(repo) => self.git_worktree(repo, &key, path)?,
            None => {
                let created = !path.is_dir();
                if created {
                    std::fs::create_dir(&path)
                        .map_err(|e| self.error(&key, &path, format!("cannot create: {e}")))?;
                }
                (
                    Workspace {
                        key: key.clone(),
                        path,
                        branch: None,
                    },
                    created,
                    false,
                )
            }
        };
        if created {
            if let Some(hook) = &self.spec.hooks.after_create {
                if let Err(reason) = self.run_hook("after_create", hook, &ws) {
                    // Only a branch made now goes: an older one may hold someone's commits.
                    self.remove(&ws, branch_new);
                    return Err(self.error(&key, &ws.path, reason));
                }
            }
            log::info!("{}: created workspace {}", self.tool, ws.path.display());
        } else {
            log::info!("{}: reusing workspace {}", self.tool, ws.path.display());
        }
        self.known.lock().insert(key, ws.clone());
        Ok(ws)
    }

    /// Adds (or finds) the worktree for `key` at `path`; whether the worktree, and its branch,
    /// were created now.
    fn git_worktree(
        &self,
        repo: &Repo,
        key: &str,
        path: PathBuf,
    ) -> Result<(Workspace, bool, bool)> {
        let branch = format!("aim/{}-{key}", self.tool);
        let fail = |reason: String| self.error(key, &path, reason);
        let lock = git::repo_lock(&repo.common);
        let _serialised = lock.lock();
        let ws = Workspace {
            key: key.to_string(),
            path: path.clone(),
            branch: Some(branch.clone()),
        };
        if path.join(".git").exists() {
            let (_, common) = git::checkout_of(&path).map_err(fail)?;
            if !same_dir(&common, &repo.common) {
                return Err(fail(format!(
                    "is a checkout of another repository ({})",
                    common.display()
                )));
            }
            return Ok((ws, false, false));
        }
        if path.exists() && std::fs::read_dir(&path).map_or(true, |mut d| d.next().is_some()) {
            return Err(fail("exists and is not a git worktree".into()));
        }
        let target = path.to_string_lossy().into_owned();
        let branch_new = !git::branch_exists(&repo.top, &branch);
        let add = || {
            if branch_new {
                git(
                    &repo.top,
                    &[
                        "worktree", "add", "--quiet", "-b", &branch, &target, &repo.base,
                    ],
                )
            } else {
                git(&repo.top, &["worktree", "add", "--quiet", &target, &branch])
            }
        };
        if add().is_err() {
            // A worktree deleted by hand leaves an entry that blocks adding it again: prune
            // the stale entries and try once more (pruning every time costs a git command
            // per workspace).
            git(&repo.top, &["worktree", "prune"]).map_err(fail)?;
            add().map_err(fail)?;
        }
        Ok((ws, true, branch_new))
    }

    /// Runs `before_run` in `ws` (before a process starts there).
    ///
    /// # Errors
    /// [`Error::Workspace`] when the hook fails or runs past its timeout.
    pub(crate) fn before_run(&self, ws: &Workspace) -> Result<()> {
        match &self.spec.hooks.before_run {
            Some(hook) => self
                .run_hook("before_run", hook, ws)
                .map_err(|reason| self.error(&ws.key, &ws.path, reason)),
            None => Ok(()),
        }
    }

    /// Runs `after_run` in `ws` (after an answer or a process exit); a failure is logged.
    pub(crate) fn after_run(&self, ws: &Workspace) {
        if let Some(hook) = &self.spec.hooks.after_run {
            if let Err(reason) = self.run_hook("after_run", hook, ws) {
                log::warn!("{}: workspace {}: {reason}", self.tool, ws.path.display());
            }
        }
    }

    /// Whose workspaces these are.
    pub(crate) fn key(&self) -> super::WorkspaceKey {
        self.spec.key
    }

    /// Whether turns' changes can be seen (git worktrees).
    pub(crate) fn tracks_changes(&self) -> bool {
        self.repo.is_some()
    }

    /// The state of `ws` now, for [`Workspaces::changes`]; `None` (logged) when git fails.
    pub(crate) fn snapshot(&self, ws: &Workspace) -> Option<Snapshot> {
        if !self.tracks_changes() {
            return None;
        }
        changes::snapshot(&ws.path)
            .map_err(|e| log::warn!("{}: workspace {}: {e}", self.tool, ws.path.display()))
            .ok()
    }

    /// The files changed in `ws` since `before`; empty (logged) when git fails.
    pub(crate) fn changes(&self, ws: &Workspace, before: &Snapshot) -> Vec<ChangedFile> {
        let Some(after) = self.snapshot(ws) else {
            return Vec::new();
        };
        changes::changes(&ws.path, before, &after).unwrap_or_else(|e| {
            log::warn!("{}: workspace {}: {e}", self.tool, ws.path.display());
            Vec::new()
        })
    }

    /// Runs `command` for `what` in `ws` within the hook timeout.
    fn run_hook(
        &self,
        what: &str,
        command: &str,
        ws: &Workspace,
    ) -> std::result::Result<(), String> {
        let env = [
            ("AIM_WORKSPACE", ws.path.to_string_lossy().into_owned()),
            ("AIM_WORKSPACE_KEY", ws.key.clone()),
            ("AIM_TOOL", self.tool.clone()),
        ];
        let done = command::run(
            command::shell(command, &ws.path, &env),
            self.spec.hooks.timeout,
        )
        .map_err(|e| format!("{what} hook {e}"))?;
        if done.success() {
            Ok(())
        } else {
            Err(format!("{what} hook failed with {}", done.describe()))
        }
    }

    /// Removes `ws` (its worktree and, when `branch_too`, its branch). Logs failures.
    fn remove(&self, ws: &Workspace, branch_too: bool) -> bool {
        let removed = match (&self.repo, &ws.branch) {
            (Some(repo), Some(branch)) => {
                let lock = git::repo_lock(&repo.common);
                let _serialised = lock.lock();
                let target = ws.path.to_string_lossy().into_owned();
                let mut done = git(&repo.top, &["worktree", "remove", "--force", &target]);
                if done.is_ok() && branch_too {
                    done =
                        git(&repo.top, &["branch", "-D", "--quiet", branch]).map(|_| String::new());
                }
                done.map(|_| ())
            }
            _ => std::fs::remove_dir_all(&ws.path).map_err(|e| e.to_string()),
        };
        match removed {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "{}: cannot remove workspace {}: {e}",
                    self.tool,
                    ws.path.display()
                );
                false
            }
        }
    }

    /// At shutdown: keeps (and returns) every workspace with uncommitted changes or commits
    /// not on the base, or all under [`Cleanup::Keep`]; removes the others after
    /// `before_remove`. Blocks for the git commands and hooks.
    pub(crate) fn close(&self) -> Vec<KeptWorkspace> {
        let all: Vec<Workspace> = std::mem::take(&mut *self.known.lock())
            .into_values()
            .collect();
        let mut kept = Vec::new();
        for ws in all {
            if !ws.path.is_dir() {
                continue;
            }
            let (dirty, ahead) = match self.state(&ws) {
                Ok(state) => state,
                Err(reason) => {
                    kept.push(self.kept(&ws, true, 0, format!("cannot tell its state: {reason}")));
                    continue;
                }
            };
            let reason = if dirty {
                Some("it has uncommitted changes".to_string())
            } else if ahead > 0 {
                Some(format!("its branch has {ahead} commits not on the base"))
            } else if self.spec.cleanup == Cleanup::Keep {
                Some("cleanup is keep".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                kept.push(self.kept(&ws, dirty, ahead, reason));
                continue;
            }
            if let Some(hook) = &self.spec.hooks.before_remove {
                if let Err(reason) = self.run_hook("before_remove", hook, &ws) {
                    kept.push(self.kept(&ws, dirty, ahead, reason));
                    continue;
                }
            }
            if self.remove(&ws, true) {
                log::info!(
                    "{}: removed clean workspace {}",
                    self.tool,
                    ws.path.display()
                );
            } else {
                kept.push(self.kept(&ws, dirty, ahead, "removing it failed".into()));
            }
        }
        for k in &kept {
            log::warn!(
                "{}: kept workspace {}{}: {}",
                self.tool,
                k.path.display(),
                k.branch
                    .as_deref()
                    .map(|b| format!(" (branch {b})"))
                    .unwrap_or_default(),
                k.reason
            );
        }
        kept
    }

    /// Whether `ws` is dirty, and how many commits it is ahead of the base.
    fn state(&self, ws: &Workspace) -> std::result::Result<(bool, u64), String> {
        match (&self.repo, &ws.branch) {
            (Some(repo), Some(branch)) => Ok((
                git::is_dirty(&ws.path)?,
                git::ahead(&repo.top, &repo.base, branch)?,
            )),
            _ => {
                let mut entries = std::fs::read_dir(&ws.path).map_err(|e| e.to_string())?;
                Ok((entries.next().is_some(), 0))
            }
        }
    }

    fn kept(&self, ws: &Workspace, dirty: bool, ahead: u64, reason: String) -> KeptWorkspace {
        KeptWorkspace {
            key: ws.key.clone(),
            path: ws.path.clone(),
            branch: ws.branch.clone(),
            dirty,
            ahead,
            reason,
        }
    }
}

/// Whether two paths name the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
