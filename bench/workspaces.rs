//! Workspaces: the time to launch N `cat` instances ready, each in a git worktree of its own
//! (created by `git worktree add`, serialised per repository), against the same launch
//! without workspaces, for N = 1, 10, 50; then the relaunch that reuses them; and the added
//! round-trip time of a turn whose changed files are computed from git (`cat` answering one
//! line, with and without a worktree). The repository holds 200 small files.
//!
//! `cargo bench --bench workspaces`; `cargo test --benches` runs a tiny iteration.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aim::{Framing, ToolProcessPool, ToolSpec, WorkspaceKind, WorkspaceSpec};
use common::*;

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .status()
        .expect("git")
        .success();
    assert!(ok, "git {args:?}");
}

fn repo(base: &Path) -> PathBuf {
    let repo = base.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "b@example.com"]);
    git(&repo, &["config", "user.name", "b"]);
    for i in 0..200 {
        std::fs::write(repo.join(format!("f{i}.txt")), format!("{i}\n")).unwrap();
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-qm", "base"]);
    repo
}

fn cat(repo: &Path, workspace: Option<&Path>) -> ToolSpec {
    let mut spec = ToolSpec::new("cat", "cat")
        .framing(Framing::Line)
        .stop_grace(Duration::from_millis(500))
        .cwd(repo.to_string_lossy());
    if let Some(root) = workspace {
        spec = spec
            .workspace(WorkspaceSpec::new(WorkspaceKind::GitWorktree).root(root.to_string_lossy()));
    }
    spec
}

/// Launch time of `n` instances ready.
fn launch(spec: ToolSpec, n: usize) -> (Duration, ToolProcessPool) {
    let started = Instant::now();
    let pool = ToolProcessPool::new(spec, n).expect("launch");
    (started.elapsed(), pool)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let sizes: Vec<usize> = if full_run() {
        vec![1, 10, 50]
    } else {
        vec![1, 2]
    };
    let runs = iterations(3, 1);
    let base = std::env::temp_dir().join(format!("aim-bench-ws-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let repo = repo(&base);
    let mut rows = Vec::new();
    for &n in &sizes {
        let (mut plain, mut fresh, mut reuse) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let (took, pool) = launch(cat(&repo, None), n);
            plain.push(ms(took));
            pool.shutdown();
            let root = base.join(format!("wt-{n}-{run}"));
            let (took, pool) = launch(cat(&repo, Some(&root)), n);
            fresh.push(ms(took));
            // Dirty each worktree so shutdown keeps it, for the relaunch.
            for i in 0..n {
                std::fs::write(root.join(format!("cat-{i}/dirty")), "x").unwrap();
            }
            pool.shutdown();
            let (took, pool) = launch(cat(&repo, Some(&root)), n);
            reuse.push(ms(took));
            for i in 0..n {
                std::fs::remove_file(root.join(format!("cat-{i}/dirty"))).unwrap();
            }
            let report = pool.shutdown();
            assert!(report.kept_workspaces.is_empty(), "{report:?}");
        }
        let (plain, fresh, reuse) = (median(&mut plain), median(&mut fresh), median(&mut reuse));
        let per_instance = (fresh - plain) / n as f64;
        println!(
            "N={n:<3} launch ready: plain {plain:8.1} ms, new worktrees {fresh:8.1} ms \
             (+{per_instance:.1} ms per instance), reused worktrees {reuse:8.1} ms"
        );
        rows.push(
            serde_json::json!({"n": n, "plain_ms": plain, "new_worktrees_ms": fresh,
            "added_ms_per_instance": per_instance, "reused_worktrees_ms": reuse}),
        );
    }

    // Per turn: the git snapshots before and after an answer.
    let turns = iterations(300, 5);
    let round_trip = |spec: ToolSpec| {
        let pool = ToolProcessPool::new(spec, 1).expect("launch");
        for _ in 0..5 {
            pool.send_to(0, "warm").unwrap();
        }
        let mut samples: Vec<Duration> = (0..turns)
            .map(|_| {
                let t = Instant::now();
                pool.send_to(0, "hello").unwrap();
                t.elapsed()
            })
            .collect();
        pool.shutdown();
        summarize(&mut samples)
    };
    let plain = round_trip(cat(&repo, None));
    let with = round_trip(cat(&repo, Some(&base.join("wt-turns"))));
    print_summary("round trip, no workspace", &plain);
    print_summary("round trip, git worktree (changed files)", &with);
    println!(
        "{}",
        serde_json::json!({"bench": "workspaces", "launch": rows,
            "round_trip_plain": summary_json(&plain), "round_trip_worktree": summary_json(&with)})
    );
    let _ = std::fs::remove_dir_all(&base);
}
