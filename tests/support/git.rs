//! Real git repositories for the workspace tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `git -C dir ARGS`, panicking with git's stderr when it fails; returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A repository at `<base>/repo` on branch `main`, with a README in one commit and a local
/// identity, so commits made in it (or by agents whose `HOME` is a scratch directory) work.
pub fn repo(base: &Path) -> PathBuf {
    let repo = base.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "agent@example.com"]);
    git(&repo, &["config", "user.name", "agent"]);
    std::fs::write(repo.join("README"), "base\n").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-qm", "base"]);
    repo
}
