//! Three real agents (claude, codex, aider) on one git repository, three prompts at once,
//! each writing and committing: with `--workspace worktree`-style workspaces every instance
//! commits on its own branch in its own worktree, each answer lists what its turn changed,
//! and the user's checkout is untouched. Against the fake LLM backend, whose tool markers
//! make the model write files and run commands. Each test prints `SKIPPED: ...` and passes
//! when its client is not installed.

mod support;

use std::path::Path;
use std::time::Duration;

use aim::{ChangedFile, Permissions, ToolProcessPool, ToolSpec, WorkspaceKind, WorkspaceSpec};
use support::agents::{self, FakeLlm};
use support::git::{git, repo};
use support::*;

/// Three instances of `spec` (named `tool`) in worktrees under `root`, prompted at once with
/// `prompt(i)`: each branch holds one commit with exactly `expected(i)`.
fn three_commit_at_once(
    tool: &str,
    spec: ToolSpec,
    repo: &Path,
    root: &Path,
    prompt: impl Fn(usize) -> String,
    expected: impl Fn(usize) -> ChangedFile,
) {
    let spec =
        spec.workspace(WorkspaceSpec::new(WorkspaceKind::GitWorktree).root(root.to_string_lossy()));
    let pool = ToolProcessPool::builder(spec)
        .count(3)
        .start_at_once(3)
        .supervision(fast_supervision())
        .launch()
        .expect("three agents start");
    let tickets: Vec<_> = (0..3)
        .map(|i| pool.submit_to(i, prompt(i)).unwrap())
        .collect();
    let answers: Vec<_> = tickets
        .into_iter()
        .map(|t| t.wait().expect("an answer"))
        .collect();
    for (i, answer) in answers.iter().enumerate() {
        let what = format!(
            "{tool} {i}: text {:?}, changed {:?}",
            answer.text, answer.changed_files
        );
        assert_eq!(
            answer.workspace.as_deref(),
            Some(root.join(format!("{tool}-{i}")).as_path()),
            "{what}"
        );
        assert_eq!(answer.changed_files, vec![expected(i)], "{what}");
        let branch = format!("aim/{tool}-{i}");
        let ahead = git(repo, &["rev-list", "--count", &format!("main..{branch}")]);
        assert_eq!(ahead.trim(), "1", "{what}: one commit on {branch}");
        let files = git(repo, &["show", "--name-only", "--format=", &branch]);
        assert_eq!(files.trim(), expected(i).path, "{what}");
    }
    // The user's checkout is untouched.
    assert_eq!(git(repo, &["status", "--porcelain"]), "");
    assert_eq!(git(repo, &["rev-list", "--count", "main"]).trim(), "1");
    let pids: Vec<i32> = pool.status().iter().map(|s| s.pid).collect();
    let report = pool.shutdown();
    assert_gone(&pids);
    assert_eq!(report.kept_workspaces.len(), 3, "{report:?}");
    assert!(report
        .kept_workspaces
        .iter()
        .all(|k| k.ahead == 1 && !k.dirty));
}

fn modified(path: &str) -> ChangedFile {
    serde_json::from_value(serde_json::json!({"path": path, "change": "modified"})).unwrap()
}

fn created(path: &str) -> ChangedFile {
    serde_json::from_value(serde_json::json!({"path": path, "change": "created"})).unwrap()
}

/// A shell tool call that appends this instance's line to the README and commits it.
fn append_and_commit(i: usize) -> String {
    format!("[[bash:echo line-{i} >> README && git commit -qam agent-{i}]]")
}

/// Each of `tool`'s three branches (`aim/TOOL-i`) has the base README plus its own line only.
fn each_branch_has_only_its_own_line(repo: &Path, tool: &str) {
    for i in 0..3 {
        let readme = git(repo, &["show", &format!("aim/{tool}-{i}:README")]);
        assert_eq!(readme, format!("base\nline-{i}\n"), "only its own line");
    }
}

#[test]
fn three_claudes_commit_in_their_own_worktrees() {
    init_logs();
    let Some(program) = agents::client("claude") else {
        return;
    };
    let dir = agents::scratch("ws-claude");
    let llm = FakeLlm::start(&dir);
    let repo = repo(&dir);
    // `full` is refused to root by claude: `edit`, and its Bash request approved.
    let mut spec = agents::claude(&program, &llm, &dir)
        .permissions(Permissions::Edit)
        .approve(aim::Approve::All);
    spec.cwd = Some(repo.display().to_string());
    three_commit_at_once(
        "claude",
        spec,
        &repo,
        &dir.join("wt"),
        append_and_commit,
        |_| modified("README"),
    );
    each_branch_has_only_its_own_line(&repo, "claude");
}

#[test]
fn three_codexes_commit_in_their_own_worktrees() {
    init_logs();
    let Some(program) = agents::client("codex") else {
        return;
    };
    let dir = agents::scratch("ws-codex");
    let llm = FakeLlm::start(&dir);
    let repo = repo(&dir);
    let mut spec = agents::codex(&program, &llm, &dir).permissions(Permissions::Full);
    spec.cwd = Some(repo.display().to_string());
    three_commit_at_once(
        "codex",
        spec,
        &repo,
        &dir.join("wt"),
        append_and_commit,
        |_| modified("README"),
    );
    each_branch_has_only_its_own_line(&repo, "codex");
}

#[test]
fn three_aiders_commit_in_their_own_worktrees() {
    init_logs();
    let Some(program) = agents::client("aider") else {
        return;
    };
    let dir = agents::scratch("ws-aider");
    let llm = FakeLlm::start(&dir);
    let repo = repo(&dir);
    let mut spec = agents::aider(&program, &llm, &dir);
    spec.cwd = Some(repo.display().to_string());
    spec.startup_timeout = Duration::from_secs(180);
    three_commit_at_once(
        "aider",
        spec,
        &repo,
        &dir.join("wt"),
        |i| format!("[[write:notes-{i}.txt|line-{i}]]"),
        |i| created(&format!("notes-{i}.txt")),
    );
}

#[test]
fn a_killed_claude_restarts_in_its_worktree_and_its_restored_conversation_sees_its_files() {
    init_logs();
    let Some(program) = agents::client("claude") else {
        return;
    };
    let dir = agents::scratch("ws-claude-kill");
    let llm = FakeLlm::start(&dir);
    let repo = repo(&dir);
    let root = dir.join("wt");
    let mut spec = agents::claude(&program, &llm, &dir)
        .permissions(Permissions::Edit)
        .approve(aim::Approve::All)
        .workspace(WorkspaceSpec::new(WorkspaceKind::GitWorktree).root(root.to_string_lossy()));
    spec.cwd = Some(repo.display().to_string());
    let cluster = aim::ClusterManager::builder(spec)
        .count(1)
        .supervision(fast_supervision())
        .launch()
        .expect("claude starts");
    let session = cluster.session("work");
    let first = session
        .send("[[write:mine.txt|kept across the kill]]")
        .unwrap();
    assert_eq!(
        first.changed_files,
        vec![created("mine.txt")],
        "{:?}",
        first.text
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    wait_until(Duration::from_secs(60), "claude restarted", || {
        let s = &cluster.status()[0];
        s.pid != first.pid && s.is_healthy()
    });
    let second = session.send("[[bash:cat mine.txt]]").unwrap();
    assert!(second.generation > first.generation);
    assert!(second.context_restored, "{second:?}");
    assert_eq!(second.workspace, Some(root.join("claude-0")));
    assert!(
        second.text.contains("kept across the kill"),
        "{:?}",
        second.text
    );
    stop_cluster(&cluster);
}
