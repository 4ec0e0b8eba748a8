//! Workspaces with real git and real processes: one worktree per instance, what each turn
//! changed, kept across restarts and relaunches, cleaned up by policy, and the hooks with
//! their timeouts and failure rules.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aim::{
    ChangedFile, Cleanup, Error, FileChange, Hooks, ToolProcessPool, ToolRegistry, ToolSpec,
    WorkspaceKind, WorkspaceSpec,
};
use support::git::{git, repo};
use support::*;

/// A fresh directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aim-ws-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The built-in python REPL, started in `repo`, with a workspace of `kind` under `root`.
fn python(repo: &Path, workspace: WorkspaceSpec) -> ToolSpec {
    let mut spec = ToolRegistry::builtin().get("python").unwrap();
    spec.cwd = Some(repo.to_string_lossy().into_owned());
    spec.stop_grace = Duration::from_millis(500);
    spec.workspace = workspace;
    spec
}

fn worktrees(root: &Path) -> WorkspaceSpec {
    WorkspaceSpec::new(WorkspaceKind::GitWorktree).root(root.to_string_lossy())
}

fn pool(spec: ToolSpec, count: usize) -> ToolProcessPool {
    ToolProcessPool::builder(spec)
        .count(count)
        .supervision(fast_supervision())
        .launch()
        .unwrap()
}

/// Python that writes `name` and commits it with git (the agent's "tool call").
fn write_and_commit(name: &str) -> String {
    format!(
        "import subprocess; _ = open('{name}', 'w').write('{name}\\n'); \
         print(subprocess.run('git add {name} && git commit -qm {name}', shell=True).returncode)"
    )
}

fn created(path: &str) -> ChangedFile {
    serde_json::from_value(serde_json::json!({"path": path, "change": "created"})).unwrap()
}

#[test]
fn concurrent_instances_commit_in_their_own_worktrees() {
    init_logs();
    let base = scratch("concurrent");
    let repo = repo(&base);
    let root = base.join("wt");
    let pool = pool(python(&repo, worktrees(&root)), 3);
    let tickets: Vec<_> = (0..3)
        .map(|i| {
            pool.submit_to(i, write_and_commit(&format!("f{i}.txt")))
                .unwrap()
        })
        .collect();
    let answers: Vec<_> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.text.trim(), "0", "instance {i}: git commit failed");
        let expected = root.join(format!("python-{i}"));
        assert_eq!(answer.workspace.as_deref(), Some(expected.as_path()));
        assert_eq!(answer.changed_files, vec![created(&format!("f{i}.txt"))]);
        let branch = format!("aim/python-{i}");
        assert_eq!(
            git(&repo, &["rev-list", "--count", &format!("main..{branch}")]).trim(),
            "1"
        );
        let files = git(&repo, &["show", "--name-only", "--format=", &branch]);
        assert_eq!(files.trim(), format!("f{i}.txt"), "one file per commit");
    }
    for status in pool.status() {
        let i = status.index;
        assert_eq!(status.workspace, Some(root.join(format!("python-{i}"))));
        assert_eq!(
            status.branch.as_deref(),
            Some(format!("aim/python-{i}").as_str())
        );
    }
    // The user's checkout is untouched.
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(git(&repo, &["rev-list", "--count", "main"]).trim(), "1");
    stop_pool(&pool);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn shutdown_keeps_dirty_and_ahead_workspaces_and_a_relaunch_reuses_them() {
    init_logs();
    let base = scratch("shutdown");
    let repo = repo(&base);
    let root = base.join("wt");
    let spec = python(&repo, worktrees(&root));
    let first = pool(spec.clone(), 3);
    first
        .send_to(0, "open('notes.txt', 'w').write('draft')")
        .unwrap();
    let answer = first.send_to(1, write_and_commit("done.txt")).unwrap();
    assert_eq!(answer.text.trim(), "0");
    first.send_to(2, "1 + 1").unwrap();
    let pids: Vec<i32> = first.status().iter().map(|s| s.pid).collect();
    let report = first.shutdown();
    assert_gone(&pids);
    let kept: Vec<_> = report
        .kept_workspaces
        .iter()
        .map(|k| (k.key.as_str(), k.dirty, k.ahead, k.branch.clone().unwrap()))
        .collect();
    assert_eq!(
        kept,
        vec![
            ("0", true, 0, "aim/python-0".to_string()),
            ("1", false, 1, "aim/python-1".to_string())
        ]
    );
    assert!(root.join("python-0/notes.txt").exists());
    assert!(!root.join("python-2").exists(), "the clean one is removed");
    let branches = git(&repo, &["branch", "--list", "aim/*"]);
    assert!(!branches.contains("aim/python-2"), "{branches}");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");

    // A relaunch finds what it left.
    let second = pool(spec, 3);
    let answer = second
        .send_to(
            0,
            "import os; print(open('notes.txt').read(), os.path.exists('done.txt'))",
        )
        .unwrap();
    assert_eq!(answer.text.trim(), "draft False");
    let answer = second
        .send_to(1, "import os; print(os.path.exists('done.txt'))")
        .unwrap();
    assert_eq!(answer.text.trim(), "True");
    stop_pool(&second);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_killed_instance_restarts_in_its_own_workspace() {
    init_logs();
    let base = scratch("restart");
    let repo = repo(&base);
    let root = base.join("wt");
    let pool = pool(python(&repo, worktrees(&root)), 2);
    pool.send_to(1, "open('mine.txt', 'w').write('1')").unwrap();
    let before = pool.status()[1].pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    wait_until(Duration::from_secs(20), "a restarted instance 1", || {
        let s = &pool.status()[1];
        s.pid != before && s.is_healthy()
    });
    let answer = pool
        .send_to(
            1,
            "import os; print(os.getcwd(), os.path.exists('mine.txt'))",
        )
        .unwrap();
    assert_eq!(
        answer.text.trim(),
        format!("{} True", root.join("python-1").display())
    );
    assert_eq!(answer.generation, 2);
    stop_pool(&pool);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn dir_workspaces_are_empty_directories_removed_when_left_empty() {
    init_logs();
    let base = scratch("dir");
    let root = base.join("dirs");
    let spec = python(
        &base,
        WorkspaceSpec::new(WorkspaceKind::Dir).root(root.to_string_lossy()),
    );
    let pool = pool(spec, 2);
    let answer = pool
        .send_to(0, "import os; print(os.listdir('.'))")
        .unwrap();
    assert_eq!(answer.text.trim(), "[]");
    assert_eq!(answer.workspace, Some(root.join("python-0")));
    assert!(
        answer.changed_files.is_empty(),
        "no git, no changes reported"
    );
    pool.send_to(1, "open('x', 'w').write('x')").unwrap();
    let report = pool.shutdown();
    assert_eq!(report.kept_workspaces.len(), 1, "{report:?}");
    assert_eq!(report.kept_workspaces[0].path, root.join("python-1"));
    assert!(!root.join("python-0").exists());
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn cleanup_keep_keeps_clean_workspaces() {
    init_logs();
    let base = scratch("keep");
    let repo = repo(&base);
    let root = base.join("wt");
    let pool = pool(python(&repo, worktrees(&root).cleanup(Cleanup::Keep)), 1);
    pool.send_to(0, "1").unwrap();
    let report = pool.shutdown();
    assert_eq!(report.kept_workspaces.len(), 1);
    assert_eq!(report.kept_workspaces[0].reason, "cleanup is keep");
    assert!(root.join("python-0/README").exists());
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_worktree_outside_a_git_checkout_is_a_config_error() {
    init_logs();
    let base = scratch("nogit");
    let err = ToolProcessPool::new(python(&base, worktrees(&base.join("wt"))), 1).unwrap_err();
    match err {
        Error::InvalidConfig { field, reason } => {
            assert_eq!(field, "workspace.kind");
            assert!(reason.contains("git checkout"), "{reason}");
        }
        other => panic!("{other}"),
    }
    std::fs::remove_dir_all(&base).unwrap();
}

// ----- hooks ------------------------------------------------------------------------------

fn hooked(base: &Path, hooks: Hooks) -> (PathBuf, PathBuf, ToolSpec) {
    let repo = repo(base);
    let root = base.join("wt");
    let spec = python(
        &repo,
        worktrees(&root).hooks(hooks.timeout(Duration::from_secs(20))),
    );
    (repo, root, spec)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn after_create_runs_once_per_new_workspace_in_it() {
    init_logs();
    let base = scratch("after-create");
    let log = base.join("log");
    let hook = format!(
        "echo \"$AIM_WORKSPACE_KEY $(pwd)\" >> {}; touch .env",
        log.display()
    );
    let (_, root, spec) = hooked(&base, Hooks::default().after_create(hook));
    let first = pool(
        spec.clone()
            .workspace(spec.workspace.clone().cleanup(Cleanup::Keep)),
        2,
    );
    let answer = first
        .send_to(1, "import os; print(os.path.exists('.env'))")
        .unwrap();
    assert_eq!(answer.text.trim(), "True");
    stop_pool(&first);
    let mut got = lines(&log);
    got.sort();
    assert_eq!(
        got,
        vec![
            format!("0 {}", root.join("python-0").display()),
            format!("1 {}", root.join("python-1").display())
        ]
    );
    // Reused workspaces are not created again.
    let second = pool(spec, 2);
    stop_pool(&second);
    assert_eq!(lines(&log).len(), 2);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_failing_after_create_fails_the_start_and_leaves_no_workspace() {
    init_logs();
    let base = scratch("after-create-fails");
    let (repo, root, spec) = hooked(
        &base,
        Hooks::default().after_create("echo no deps >&2; exit 3"),
    );
    let err = ToolProcessPool::new(spec, 1).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), "workspace", "{text}");
    assert!(
        text.contains("after_create hook failed with exit code 3: no deps"),
        "{text}"
    );
    assert!(!root.join("python-0").exists());
    assert_eq!(git(&repo, &["branch", "--list", "aim/*"]), "");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_fails() {
    init_logs();
    let base = scratch("timeout");
    let repo = repo(&base);
    let root = base.join("wt");
    let hooks = Hooks::default()
        .after_create("sleep 30")
        .timeout(Duration::from_millis(300));
    let spec = python(&repo, worktrees(&root).hooks(hooks));
    let err = ToolProcessPool::new(spec, 1).unwrap_err();
    assert!(err.to_string().contains("ran past its timeout"), "{err}");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn before_run_runs_before_every_start_and_its_failure_fails_the_start() {
    init_logs();
    let base = scratch("before-run");
    let log = base.join("log");
    let hook = format!("echo start >> {}", log.display());
    let (repo, root, spec) = hooked(&base, Hooks::default().before_run(hook));
    let pool = pool(spec.clone(), 1);
    assert_eq!(lines(&log), ["start"]);
    pool.restart_instance(0).unwrap();
    wait_until(Duration::from_secs(20), "a second start", || {
        lines(&log).len() == 2
    });
    stop_pool(&pool);

    let failing = python(
        &repo,
        worktrees(&root).hooks(Hooks::default().before_run("exit 9")),
    );
    let err = ToolProcessPool::new(failing, 1).unwrap_err();
    assert!(
        err.to_string()
            .contains("before_run hook failed with exit code 9"),
        "{err}"
    );
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn after_run_runs_after_each_turn_and_its_failure_is_only_logged() {
    init_logs();
    let base = scratch("after-run");
    let log = base.join("log");
    let hook = format!("git status --porcelain >> {}; exit 1", log.display());
    let (_, _, spec) = hooked(&base, Hooks::default().after_run(hook));
    let pool = pool(spec, 1);
    let answer = pool.send_to(0, "open('a', 'w').write('a')").unwrap();
    assert_eq!(answer.changed_files, vec![created("a")]);
    pool.send_to(0, "2").unwrap();
    assert_eq!(lines(&log), ["?? a", "?? a"]);
    stop_pool(&pool);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn before_remove_runs_before_a_clean_workspace_goes_and_its_failure_keeps_it() {
    init_logs();
    let base = scratch("before-remove");
    let log = base.join("log");
    let hook = format!(
        "echo $AIM_WORKSPACE_KEY >> {}; test $AIM_WORKSPACE_KEY = 0",
        log.display()
    );
    let (_, root, spec) = hooked(&base, Hooks::default().before_remove(hook));
    let pool = pool(spec, 2);
    let report = pool.shutdown();
    let mut got = lines(&log);
    got.sort();
    assert_eq!(got, ["0", "1"]);
    assert!(!root.join("python-0").exists());
    assert_eq!(report.kept_workspaces.len(), 1);
    assert_eq!(report.kept_workspaces[0].key, "1");
    assert!(
        report.kept_workspaces[0]
            .reason
            .contains("before_remove hook failed"),
        "{:?}",
        report.kept_workspaces
    );
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_file_deleted_and_one_modified_are_reported() {
    init_logs();
    let base = scratch("modify");
    let repo = repo(&base);
    std::fs::write(repo.join("other"), "o\n").unwrap();
    git(&repo, &["add", "other"]);
    git(&repo, &["commit", "-qm", "other"]);
    let pool = pool(python(&repo, worktrees(&base.join("wt"))), 1);
    let answer = pool
        .send_to(
            0,
            "import os; os.remove('other'); open('README', 'a').write('more\\n')",
        )
        .unwrap();
    let changes: Vec<_> = answer
        .changed_files
        .iter()
        .map(|c| (c.path.as_str(), c.change))
        .collect();
    assert_eq!(
        changes,
        [
            ("README", FileChange::Modified),
            ("other", FileChange::Deleted)
        ]
    );
    let report = pool.shutdown();
    assert!(report.kept_workspaces[0].dirty);
    std::fs::remove_dir_all(&base).unwrap();
}

// ----- the aim command ----------------------------------------------------------------------

fn aim_in(dir: &Path, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_aim"))
        .args(args)
        .current_dir(dir)
        .env_remove("AIM_TOOLS")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn aim_run_prints_each_answers_workspace_and_changed_files() {
    init_logs();
    let base = scratch("cli");
    let repo = repo(&base);
    let root = base.join("wt");
    let input = format!(
        "{}\n{}\n",
        write_and_commit("x.txt"),
        "_ = open('y.txt', 'w').write('y')"
    );
    let out = aim_in(
        &repo,
        &[
            "run",
            "python",
            "-n",
            "1",
            "--workspace",
            "worktree",
            "--workspace-root",
            root.to_str().unwrap(),
        ],
        &input,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let workspace = root.join("python-0").to_string_lossy().into_owned();
    assert_eq!(lines[0]["workspace"], workspace.as_str());
    assert_eq!(
        lines[0]["changed_files"],
        serde_json::json!([{"path": "x.txt", "change": "created"}])
    );
    assert_eq!(
        lines[1]["changed_files"],
        serde_json::json!([{"path": "y.txt", "change": "created"}])
    );
    // Dirty and ahead: kept, and said so.
    assert!(
        stderr.contains(&format!("kept workspace {workspace} (branch aim/python-0)")),
        "{stderr}"
    );
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn aim_run_warns_when_agents_would_share_a_checkout() {
    init_logs();
    let base = scratch("warn");
    let repo = repo(&base);
    // The built-in claude entry, overridden only where this test needs: a program that
    // exits at once (so the launch fails fast after the warning).
    let tools = base.join("tools.json");
    std::fs::write(
        &tools,
        r#"{"claude": {"program": "true", "restart": "never"}}"#,
    )
    .unwrap();
    let tools = tools.to_str().unwrap();
    let out = aim_in(&repo, &["run", "claude", "-n", "2", "--tools", tools], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 instances share the git checkout") && stderr.contains("--workspace"),
        "{stderr}"
    );
    let out = aim_in(
        &repo,
        &[
            "run",
            "claude",
            "-n",
            "2",
            "--tools",
            tools,
            "--workspace",
            "worktree",
        ],
        "",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("share the git checkout"), "{stderr}");
    let out = aim_in(&repo, &["run", "claude", "-n", "1", "--tools", tools], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("share the git checkout"), "{stderr}");
    std::fs::remove_dir_all(&base).unwrap();
}

// ----- per-session workspaces -------------------------------------------------------------

#[test]
fn sessions_on_one_instance_never_see_each_others_files() {
    init_logs();
    let base = scratch("sessions");
    let repo = repo(&base);
    let root = base.join("wt");
    let spec = python(&repo, worktrees(&root).key(aim::WorkspaceKey::Session));
    let cluster = aim::ClusterManager::builder(spec)
        .count(1)
        .strategy(aim::Strategy::Sticky)
        .session_mode(aim::SessionMode::Exclusive)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let listing = "import os; print(os.path.basename(os.getcwd()), sorted(f for f in os.listdir('.') if f.endswith('.txt')))";
    {
        let alice = cluster.session("alice");
        let answer = alice.send("_ = open('alice.txt', 'w').write('a')").unwrap();
        assert_eq!(answer.changed_files, vec![created("alice.txt")]);
        assert_eq!(answer.workspace, Some(root.join("python-s-alice")));
        assert_eq!(
            alice.send(listing).unwrap().text.trim(),
            "python-s-alice ['alice.txt']"
        );
    }
    {
        let bob = cluster.session("bob");
        let answer = bob.send(listing).unwrap();
        assert_eq!(answer.instance, 0);
        assert_eq!(answer.text.trim(), "python-s-bob []");
        bob.send("_ = open('bob.txt', 'w').write('b')").unwrap();
    }
    {
        let alice = cluster.session("alice");
        let answer = alice.send(listing).unwrap();
        assert_eq!(answer.text.trim(), "python-s-alice ['alice.txt']");
    }
    assert_eq!(
        cluster.status()[0].branch.as_deref(),
        Some("aim/python-s-alice")
    );
    let report = cluster.shutdown();
    let mut kept: Vec<_> = report
        .kept_workspaces
        .iter()
        .map(|k| k.key.clone())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        ["s-alice", "s-bob"],
        "both dirty; the instance's own was clean"
    );
    assert!(!root.join("python-0").exists());
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_worktree_deleted_by_hand_is_made_again() {
    init_logs();
    let base = scratch("deleted");
    let repo = repo(&base);
    let root = base.join("wt");
    let spec = python(&repo, worktrees(&root).cleanup(Cleanup::Keep));
    stop_pool(&pool(spec.clone(), 1));
    std::fs::remove_dir_all(root.join("python-0")).unwrap();
    let again = pool(spec, 1);
    let answer = again
        .send_to(0, "import os; print(os.path.exists('README'))")
        .unwrap();
    assert_eq!(answer.text.trim(), "True");
    stop_pool(&again);
    std::fs::remove_dir_all(&base).unwrap();
}
