//! Agents that change things: the real clients (aider, claude, codex) against the fake LLM
//! backend, whose tool markers make the model write, edit and run commands in each API's own
//! format. Files really change on disk (or are refused and listed in `denials`), questions
//! are answered by the approval policy or a callback, and usage equals what the backend
//! counted. Each test prints `SKIPPED: ...` and passes when its client is not installed.

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aim::{
    ApprovalRequest, Approve, ApproverFn, ClusterManager, Decision, Denial, Error, Permissions,
    ToolSpec,
};
use support::agents::{self, FakeLlm};
use support::*;

fn one(spec: ToolSpec) -> ClusterManager {
    ClusterManager::builder(spec)
        .count(1)
        .request_timeout(Duration::from_secs(120))
        .submit_timeout(Duration::from_secs(120))
        .supervision(fast_supervision())
        .launch()
        .expect("the cluster starts")
}

/// An answer in brief, for assertion messages.
fn brief(answer: &aim::Response) -> String {
    format!(
        "text {:?}, denials {:?}, usage {:?}, files {:?}",
        answer.text, answer.denials, answer.usage, answer.files_edited
    )
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Creates then edits `hello.txt` in `repo`; each turn's usage is what the backend counted.
fn creates_and_edits_a_file(spec: ToolSpec, llm: &FakeLlm, repo: &Path) {
    let cluster = one(spec);
    let before = llm.requests();
    let answer = cluster
        .send("please [[write:hello.txt|hello from the model]]")
        .unwrap();
    assert_eq!(
        read(&repo.join("hello.txt")).as_deref(),
        Some("hello from the model"),
        "{}",
        brief(&answer)
    );
    assert!(answer.denials.is_empty(), "{:?}", answer.denials);
    assert!(answer.text.contains("TOOLS-DONE") || answer.text.contains("hello.txt"));
    assert_eq!(
        answer.usage,
        Some(llm.counted_since(before).usage()),
        "{}",
        brief(&answer)
    );
    let before = llm.requests();
    let answer = cluster
        .send("now [[edit:hello.txt|from the model|edited by the model]]")
        .unwrap();
    assert_eq!(
        read(&repo.join("hello.txt")).as_deref().map(str::trim_end),
        Some("hello edited by the model"),
        "{}",
        brief(&answer)
    );
    assert!(answer.denials.is_empty(), "{:?}", answer.denials);
    assert_eq!(
        answer.usage,
        Some(llm.counted_since(before).usage()),
        "{}",
        brief(&answer)
    );
    // The totals add up over both turns, in metrics() and on /metrics.
    let all = llm.counted_since(0);
    let metrics = cluster.metrics();
    let totals = &metrics.cluster.usage;
    assert_eq!(
        (totals.input_tokens, totals.output_tokens),
        (all.input, all.output)
    );
    assert_eq!(
        (totals.cache_read_tokens, totals.cache_write_tokens),
        (all.cache_read, all.cache_write)
    );
    assert_eq!(metrics.instances[0].usage, *totals);
    let text = metrics.to_prometheus();
    assert!(
        text.contains(&format!(
            "aim_tokens_total{{tool=\"{}\",instance=\"0\",kind=\"input\"}} {}\n",
            metrics.tool, all.input
        )),
        "{text}"
    );
    stop_cluster(&cluster);
}

/// With `read-only`, the write is refused and listed in `denials`.
fn read_only_refuses_and_lists_the_denial(spec: ToolSpec, repo: &Path, tool: &str) {
    let cluster = one(spec.permissions(Permissions::ReadOnly));
    let answer = cluster
        .send("please [[write:hello.txt|hello from the model]]")
        .unwrap();
    assert_eq!(read(&repo.join("hello.txt")), None, "{}", brief(&answer));
    assert!(
        answer.denials.iter().any(|d| d.tool == tool),
        "no {tool} denial: {:?}",
        answer.denials
    );
    stop_cluster(&cluster);
}

fn claude_setup(test: &str) -> Option<(ToolSpec, FakeLlm, std::path::PathBuf)> {
    let program = agents::client("claude")?;
    let dir = agents::scratch(test);
    let llm = FakeLlm::start(&dir);
    let repo = agents::git_repo(&dir, "repo");
    let mut spec = agents::claude(&program, &llm, &dir);
    spec.cwd = Some(repo.display().to_string());
    Some((spec, llm, repo))
}

fn codex_setup(test: &str) -> Option<(ToolSpec, FakeLlm, std::path::PathBuf)> {
    let program = agents::client("codex")?;
    let dir = agents::scratch(test);
    let llm = FakeLlm::start(&dir);
    let repo = agents::git_repo(&dir, "repo");
    let mut spec = agents::codex(&program, &llm, &dir);
    spec.cwd = Some(repo.display().to_string());
    Some((spec, llm, repo))
}

fn aider_setup(test: &str) -> Option<(ToolSpec, FakeLlm, std::path::PathBuf)> {
    let program = agents::client("aider")?;
    let dir = agents::scratch(test);
    let llm = FakeLlm::start(&dir);
    let repo = agents::git_repo(&dir, "repo");
    let mut spec = agents::aider(&program, &llm, &dir);
    spec.cwd = Some(repo.display().to_string());
    Some((spec, llm, repo))
}

// ----- as shipped (edit) ---------------------------------------------------------------------

#[test]
fn claude_as_shipped_creates_and_edits_a_file_and_reports_what_it_used() {
    init_logs();
    let Some((spec, llm, repo)) = claude_setup("claude-edit") else {
        return;
    };
    assert_eq!(spec.permissions, Some(Permissions::Edit));
    creates_and_edits_a_file(spec, &llm, &repo);
}

#[test]
fn codex_as_shipped_creates_and_edits_a_file_and_reports_what_it_used() {
    init_logs();
    let Some((spec, llm, repo)) = codex_setup("codex-edit") else {
        return;
    };
    creates_and_edits_a_file(spec, &llm, &repo);
}

#[test]
fn aider_as_shipped_creates_and_edits_a_file_and_reports_what_it_used() {
    init_logs();
    let Some((mut spec, llm, repo)) = aider_setup("aider-edit") else {
        return;
    };
    // Streaming, aider reports its own estimate of the tokens; without streaming, what the
    // provider counted.
    spec.args.push("--no-stream".into());
    let cluster = one(spec);
    let before = llm.requests();
    let answer = cluster
        .send("please [[write:hello.txt|hello from the model]]")
        .unwrap();
    assert_eq!(
        read(&repo.join("hello.txt")).as_deref().map(str::trim_end),
        Some("hello from the model")
    );
    assert_eq!(answer.files_edited, vec!["hello.txt".to_string()]);
    assert!(!answer.text.contains("Tokens:"), "{}", answer.text);
    assert!(!answer.text.contains("Applied edit"), "{}", answer.text);
    assert_eq!(
        answer.usage,
        Some(llm.counted_since(before).usage()),
        "{}",
        brief(&answer)
    );
    let before = llm.requests();
    let answer = cluster
        .send("now [[edit:hello.txt|from the model|edited by the model]]")
        .unwrap();
    assert_eq!(
        read(&repo.join("hello.txt")).as_deref().map(str::trim_end),
        Some("hello edited by the model")
    );
    assert_eq!(
        answer.usage,
        Some(llm.counted_since(before).usage()),
        "{}",
        brief(&answer)
    );
    assert!(answer.denials.is_empty(), "{:?}", answer.denials);
    stop_cluster(&cluster);
}

// ----- read-only -----------------------------------------------------------------------------

#[test]
fn claude_read_only_refuses_a_write_and_lists_it() {
    init_logs();
    let Some((spec, _llm, repo)) = claude_setup("claude-ro") else {
        return;
    };
    read_only_refuses_and_lists_the_denial(spec, &repo, "Write");
}

#[test]
fn codex_read_only_refuses_a_write_and_lists_it() {
    init_logs();
    let Some((spec, _llm, repo)) = codex_setup("codex-ro") else {
        return;
    };
    read_only_refuses_and_lists_the_denial(spec, &repo, "commandExecution");
}

#[test]
fn aider_read_only_refuses_a_write_and_lists_it() {
    init_logs();
    let Some((spec, _llm, repo)) = aider_setup("aider-ro") else {
        return;
    };
    read_only_refuses_and_lists_the_denial(spec, &repo, "edit");
}

// ----- beyond the permissions: the approval policy and the callback --------------------------

#[test]
fn claude_shell_command_is_denied_with_approve_none_and_runs_with_approve_all() {
    init_logs();
    let Some((spec, _llm, repo)) = claude_setup("claude-bash") else {
        return;
    };
    denied_with_approve_none_and_run_with_approve_all(
        spec,
        "[[bash:python3 -c \"open('ran-by-claude', 'w')\"]]",
        |d| d.tool == "Bash",
        &repo.join("ran-by-claude"),
    );
}

#[test]
fn codex_escalated_command_is_denied_with_approve_none_and_runs_with_approve_all() {
    init_logs();
    let Some((spec, _llm, repo)) = codex_setup("codex-escalate") else {
        return;
    };
    let outside = repo.parent().unwrap().join("outside-by-codex");
    denied_with_approve_none_and_run_with_approve_all(
        spec,
        &format!("[[escalate:touch {}]]", outside.display()),
        |d| d.tool == "commandExecution" && d.target.contains("outside-by-codex"),
        &outside,
    );
}

/// `prompt` asks for a command that creates `effect`: as shipped (`--approve none`) it is
/// denied (a denial matching `denied`, no `effect`); with [`Approve::All`] it runs.
fn denied_with_approve_none_and_run_with_approve_all(
    spec: ToolSpec,
    prompt: &str,
    denied: impl Fn(&Denial) -> bool,
    effect: &Path,
) {
    let cluster = one(spec.clone());
    let answer = cluster.send(prompt).unwrap();
    assert!(answer.denials.iter().any(denied), "{}", brief(&answer));
    assert!(!effect.exists());
    stop_cluster(&cluster);
    let cluster = one(spec.approve(Approve::All));
    let answer = cluster.send(prompt).unwrap();
    assert!(answer.denials.is_empty(), "{:?}", answer.denials);
    assert!(effect.exists(), "{}", brief(&answer));
    stop_cluster(&cluster);
}

#[test]
fn a_library_callback_sees_claudes_request_and_decides() {
    init_logs();
    let Some((spec, _llm, repo)) = claude_setup("claude-callback") else {
        return;
    };
    let seen: Arc<Mutex<Vec<ApprovalRequest>>> = Arc::default();
    let record = Arc::clone(&seen);
    let spec = spec.approver(Arc::new(ApproverFn(move |r: &ApprovalRequest| {
        record.lock().unwrap().push(r.clone());
        if r.target.contains("allowed") {
            Decision::Allow
        } else {
            Decision::Deny("the callback says no".into())
        }
    })));
    let cluster = one(spec);
    let answer = cluster
        .send("[[bash:python3 -c \"open('allowed-file', 'w')\"]] [[bash:python3 -c \"open('refused-file', 'w')\"]]")
        .unwrap();
    assert!(repo.join("allowed-file").exists(), "{}", brief(&answer));
    assert!(!repo.join("refused-file").exists(), "{}", brief(&answer));
    let denials: Vec<_> = answer.denials.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(denials, ["the callback says no"], "{}", brief(&answer));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|r| r.tool == "Bash" && r.instance == 0));
    stop_cluster(&cluster);
}

#[test]
fn aider_questions_are_answered_never_stalled() {
    init_logs();
    let Some((mut spec, _llm, repo)) = aider_setup("aider-ask") else {
        return;
    };
    // Without --yes-always aider asks before creating a file. Read-only permissions (and
    // --approve none) answer no; the turn ends with the refusal listed.
    spec.args.retain(|a| a != "--yes-always");
    spec.permissions = None;
    let cluster = one(spec.clone());
    let answer = cluster
        .send("please [[write:hello.txt|hello from the model]]")
        .unwrap();
    assert_eq!(read(&repo.join("hello.txt")), None);
    assert!(
        answer
            .denials
            .iter()
            .any(|d| d.tool == "Create new file?" && d.target == "hello.txt"),
        "{}",
        brief(&answer)
    );
    // The instance goes on.
    let answer = cluster.send("[[reply:still here]]").unwrap();
    assert_eq!(answer.text, "still here");
    stop_cluster(&cluster);
    // Under `edit`, creating a file is within the permissions: yes.
    let cluster = one(spec.permissions(Permissions::Edit));
    let answer = cluster
        .send("please [[write:hello.txt|hello from the model]]")
        .unwrap();
    assert!(answer.denials.is_empty(), "{}", brief(&answer));
    assert_eq!(
        read(&repo.join("hello.txt")).as_deref().map(str::trim_end),
        Some("hello from the model")
    );
    stop_cluster(&cluster);
}

#[test]
fn strict_denials_make_a_refusal_an_error_and_the_instance_goes_on() {
    init_logs();
    let Some((spec, _llm, _repo)) = claude_setup("claude-strict") else {
        return;
    };
    let cluster = one(spec.strict_denials(true));
    let err = cluster
        .send("[[bash:python3 -c \"open('nope', 'w')\"]]")
        .unwrap_err();
    match &err {
        Error::Denied { denials, .. } => assert_eq!(denials[0].tool, "Bash"),
        other => panic!("expected Denied, got {other}"),
    }
    assert!(err.prompt().is_some_and(|p| p.contains("nope")));
    let answer = cluster.send("[[reply:fine]]").unwrap();
    assert_eq!(answer.text, "fine");
    stop_cluster(&cluster);
}

// ----- through `aim run` ----------------------------------------------------------------------

/// `aim run NAME` with `spec` in a tools file, `input` on stdin: (answer lines, stderr).
fn aim_run(
    name: &str,
    mut spec: ToolSpec,
    dir: &Path,
    extra: &[&str],
    input: &str,
) -> (Vec<serde_json::Value>, String) {
    spec.name = name.to_string();
    let tools = dir.join(format!("{name}-tools.json"));
    std::fs::write(&tools, serde_json::json!({ name: spec }).to_string()).unwrap();
    let mut args = vec!["run".to_string(), name.to_string(), "-n".into(), "1".into()];
    args.push("--tools".into());
    args.push(tools.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run_aim(&args, input.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (lines, stderr)
}

#[test]
fn aim_run_claude_changes_files_as_shipped_and_shows_denials_and_totals() {
    init_logs();
    let Some((spec, llm, repo)) = claude_setup("claude-run") else {
        return;
    };
    let dir = repo.parent().unwrap().to_path_buf();
    let input = "please [[write:hello.txt|from aim run]]\n\
                 [[bash:python3 -c \"open('by-bash', 'w')\"]]\n";
    let (lines, stderr) = aim_run("claude-fake", spec.clone(), &dir, &[], input);
    assert_eq!(lines.len(), 2, "{lines:?}\n{stderr}");
    assert_eq!(
        read(&repo.join("hello.txt")).as_deref(),
        Some("from aim run")
    );
    assert!(lines[0].get("denials").is_none(), "{}", lines[0]);
    assert_eq!(lines[1]["denials"][0]["tool"], "Bash", "{}", lines[1]);
    assert!(!repo.join("by-bash").exists());
    let all = llm.counted_since(0);
    assert!(
        stderr.contains(&format!(
            "aim: usage: {} input, {} output, {} cache read, {} cache write tokens",
            all.input, all.output, all.cache_read, all.cache_write
        )),
        "{stderr}"
    );
    assert!(stderr.contains("; 1 denied"), "{stderr}");
    // --permissions read-only refuses the write; --approve all lets the command run.
    let input = "please [[write:other.txt|no]]\n";
    let (lines, _) = aim_run(
        "claude-fake",
        spec.clone(),
        &dir,
        &["--permissions", "read-only"],
        input,
    );
    assert_eq!(lines[0]["denials"][0]["tool"], "Write", "{}", lines[0]);
    assert!(!repo.join("other.txt").exists());
    let input = "[[bash:python3 -c \"open('by-bash', 'w')\"]]\n";
    let (lines, _) = aim_run("claude-fake", spec, &dir, &["--approve", "all"], input);
    assert!(lines[0].get("denials").is_none(), "{}", lines[0]);
    assert!(repo.join("by-bash").exists());
}

// ----- questions and stalls ------------------------------------------------------------------

#[test]
fn claude_asking_the_user_fails_fast_as_input_required_and_goes_on() {
    init_logs();
    let Some((spec, _llm, _repo)) = claude_setup("claude-ask") else {
        return;
    };
    let cluster = one(spec);
    let err = cluster
        .send("[[ask:Which color should the button be?]]")
        .unwrap_err();
    match &err {
        Error::InputRequired { question, .. } => {
            assert_eq!(question, "Which color should the button be?")
        }
        other => panic!("expected InputRequired, got {other}"),
    }
    let answer = cluster.send("[[reply:still here]]").unwrap();
    assert_eq!(answer.text, "still here");
    stop_cluster(&cluster);
}

#[test]
fn a_stalled_claude_turn_ends_at_the_stall_timeout_saying_what_it_was_doing() {
    init_logs();
    let Some((spec, _llm, _repo)) = claude_setup("claude-stall") else {
        return;
    };
    let cluster = one(spec.stall_timeout(Duration::from_secs(2)));
    let err = cluster.send("[[chunks:a|b]] [[delay:30000]]").unwrap_err();
    match &err {
        Error::Timeout {
            stage: aim::TimeoutStage::Stalled,
            activity,
            ..
        } => assert_eq!(activity.as_deref(), Some("waiting for the model"), "{err}"),
        other => panic!("expected a stall, got {other}"),
    }
    assert!(
        err.to_string().contains("last: waiting for the model"),
        "{err}"
    );
    stop_cluster(&cluster);
}

/// `aim run NAME` creates then edits a file as shipped; with `--permissions read-only` the
/// write is refused and the refusal is in the answer line's `denials`.
fn aim_run_edits_then_read_only_refuses(name: &str, spec: ToolSpec, repo: &Path, tool: &str) {
    let dir = repo.parent().unwrap().to_path_buf();
    let input = "please [[write:made.txt|made by aim run]]\n\
                 now [[edit:made.txt|made by|edited by]]\n";
    let (lines, stderr) = aim_run(name, spec.clone(), &dir, &[], input);
    assert_eq!(lines.len(), 2, "{lines:?}\n{stderr}");
    assert!(
        lines.iter().all(|l| l.get("denials").is_none()),
        "{lines:?}"
    );
    assert_eq!(
        read(&repo.join("made.txt")).as_deref().map(str::trim_end),
        Some("edited by aim run")
    );
    let input = "please [[write:refused.txt|no]]\n";
    let (lines, stderr) = aim_run(name, spec, &dir, &["--permissions", "read-only"], input);
    assert_eq!(
        lines[0]["denials"][0]["tool"], tool,
        "{}\n{stderr}",
        lines[0]
    );
    assert!(!repo.join("refused.txt").exists());
    assert!(stderr.contains("; 1 denied"), "{stderr}");
}

#[test]
fn aim_run_codex_edits_as_shipped_and_read_only_refuses() {
    init_logs();
    let Some((spec, _llm, repo)) = codex_setup("codex-run") else {
        return;
    };
    aim_run_edits_then_read_only_refuses("codex-fake", spec, &repo, "commandExecution");
}

#[test]
fn aim_run_aider_edits_as_shipped_and_read_only_refuses() {
    init_logs();
    let Some((spec, _llm, repo)) = aider_setup("aider-run") else {
        return;
    };
    aim_run_edits_then_read_only_refuses("aider-fake", spec, &repo, "edit");
}

#[test]
fn claude_full_permissions_as_root_is_a_launch_error_saying_why() {
    init_logs();
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        eprintln!("SKIPPED: not running as root");
        return;
    }
    let Some((spec, _llm, _repo)) = claude_setup("claude-full-root") else {
        return;
    };
    let err = ClusterManager::builder(spec.permissions(Permissions::Full))
        .count(1)
        .supervision(fast_supervision())
        .launch()
        .unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
}
