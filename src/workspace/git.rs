//! Git through its command line: every call is `git -C DIR ...` run to completion within
//! [`GIT_TIMEOUT`], and calls that change a repository's shared metadata (worktree add,
//! remove, prune, branch delete) are serialised per repository, so concurrent creation never
//! trips over git's own lock files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::command;

/// How long one git command may take.
pub(crate) const GIT_TIMEOUT: Duration = Duration::from_secs(120);

/// One lock per repository (by its common git directory), for the whole process.
static REPO_LOCKS: Mutex<BTreeMap<PathBuf, Arc<Mutex<()>>>> =
    parking_lot::const_mutex(BTreeMap::new());

/// The lock that serialises metadata changes to the repository whose common dir is `common`.
pub(crate) fn repo_lock(common: &Path) -> Arc<Mutex<()>> {
    Arc::clone(REPO_LOCKS.lock().entry(common.to_path_buf()).or_default())
}

/// `git -C dir args...`: its stdout on success.
///
/// # Errors
/// The command, and git's exit status and last stderr line.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    // What a surrounding git (a hook, a test harness) set must not redirect our commands.
    for var in [
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0").env("LC_ALL", "C");
    let what = format!("git {}", args.join(" "));
    let done = command::run(cmd, GIT_TIMEOUT).map_err(|e| format!("{what}: {e}"))?;
    if done.success() {
        Ok(done.stdout_text())
    } else {
        Err(format!("{what}: {}", done.describe()))
    }
}

/// The top of the checkout that holds `dir`, and its common git directory (shared by its
/// worktrees).
///
/// # Errors
/// When `dir` is not in a git checkout, or git is missing.
pub(crate) fn checkout_of(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let out = git(
        dir,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-common-dir",
        ],
    )?;
    let mut lines = out.lines();
    match (lines.next(), lines.next()) {
        (Some(top), Some(common)) if !top.is_empty() => {
            Ok((PathBuf::from(top), PathBuf::from(common)))
        }
        _ => Err(format!("{} is not inside a git work tree", dir.display())),
    }
}

/// The commit `rev` names, in `dir`'s repository.
pub(crate) fn commit_of(dir: &Path, rev: &str) -> Result<String, String> {
    let spec = format!("{rev}^{{commit}}");
    git(dir, &["rev-parse", "--verify", "--quiet", &spec])
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("{rev:?} does not name a commit in {}", dir.display()))
}

/// Whether `branch` exists in `dir`'s repository.
pub(crate) fn branch_exists(dir: &Path, branch: &str) -> bool {
    let full = format!("refs/heads/{branch}");
    git(dir, &["show-ref", "--verify", "--quiet", &full]).is_ok()
}

/// Whether the worktree at `path` has uncommitted changes (untracked files included), read
/// without taking git's index lock.
pub(crate) fn is_dirty(path: &Path) -> Result<bool, String> {
    git(
        path,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=normal",
        ],
    )
    .map(|s| !s.trim().is_empty())
}

/// How many commits `branch` has that `base` does not.
pub(crate) fn ahead(dir: &Path, base: &str, branch: &str) -> Result<u64, String> {
    let range = format!("{base}..refs/heads/{branch}");
    git(dir, &["rev-list", "--count", &range])?
        .trim()
        .parse()
        .map_err(|e| format!("git rev-list --count: {e}"))
}
