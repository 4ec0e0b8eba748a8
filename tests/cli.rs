//! The `aim` command, run as a real process.

mod support;

use std::process::{Command, Stdio};

fn aim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aim"))
}

fn run_with_input(args: &[&str], input: &str) -> (i32, String, String) {
    let out = support::run_aim(args, input.as_bytes());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_answers_each_line_in_order_as_json() {
    let input = "{\"prompt\": \"hello\"}\n{\"prompt\": \"in a session\", \"session\": \"s\"}\n{\"prompt\": \"world\"}\n";
    let (code, stdout, stderr) = run_with_input(&["run", "-n", "2", "--input", "jsonl"], input);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["id"], i);
    }
    assert!(lines[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("You said: hello"));
    assert!(lines[1]["text"].as_str().unwrap().contains("in a session"));
    assert!(stderr.contains("3 answered, 0 failed"), "{stderr}");
    assert!(stderr.contains("using sticky routing"), "{stderr}");
}

#[test]
fn run_exits_non_zero_when_a_prompt_fails() {
    let (code, stdout, _) = run_with_input(
        &["run", "demo", "-n", "1", "--input", "jsonl"],
        "{\"prompt\": \"/crash\"}\n{not json\n",
    );
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["kind"], "died");
    assert_eq!(lines[1]["kind"], "input");
}

#[test]
fn soak_with_chaos_loses_nothing() {
    let out = aim()
        .args([
            "soak",
            "-n",
            "3",
            "--duration",
            "2s",
            "--chaos-kill-every",
            "300ms",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let verdict: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(verdict["verdict"], "pass");
    assert_eq!(verdict["lost"], 0);
    assert_eq!(verdict["crossed"], 0);
    assert_eq!(verdict["zombies"], 0);
    assert_eq!(verdict["leaked_fds"], 0);
    assert!(verdict["kills"].as_u64().unwrap() >= 1, "{verdict}");
    assert!(verdict["answered"].as_u64().unwrap() > 0);
    let submitted = verdict["submitted"].as_u64().unwrap();
    let accounted = verdict["answered"].as_u64().unwrap() + verdict["failed"].as_u64().unwrap();
    assert_eq!(submitted, accounted);
}

#[test]
fn bad_arguments_get_a_clear_error_and_exit_code_two() {
    for args in [
        vec!["bogus"],
        vec!["run", "--strategy", "fastest"],
        vec!["run", "-n"],
        vec!["soak", "--duration", "soon"],
        vec!["run", "no-such-tool"],
    ] {
        let out = aim().args(&args).stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("aim: "), "{args:?}: {stderr}");
    }
}

#[test]
fn help_and_tools_list_what_there_is() {
    for args in [
        vec!["--help"],
        vec!["help", "soak"],
        vec!["run", "--help"],
        vec!["soak", "-h"],
    ] {
        let out = aim().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("aim "),
            "{args:?}"
        );
    }
    let out = aim().arg("tools").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for tool in [
        "demo", "python", "bc", "sqlite3", "aider", "claude", "codex",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(tool)),
            "{tool} missing: {text}"
        );
    }
}

#[test]
fn a_tools_file_adds_a_tool_that_run_can_use() {
    let path = std::env::temp_dir().join(format!("aim-cli-tools-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"echo": {"program": "cat", "framing": {"kind": "line"}, "stop_grace_ms": 200}}"#,
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let out = aim().args(["tools", "--tools", file]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("echo") && l.contains("cat")));
    let (code, stdout, stderr) =
        run_with_input(&["run", "echo", "-n", "2", "--tools", file], "one\ntwo\n");
    assert_eq!(code, 0, "{stderr}");
    let texts: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].to_string())
        .collect();
    assert_eq!(texts, ["\"one\"", "\"two\""]);

    std::fs::write(
        &path,
        r#"{"broken": {"program": "cat", "framing": {"kind": "nope"}}}"#,
    )
    .unwrap();
    let out = aim().args(["tools", "--tools", file]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains(file) && stderr.contains("broken"),
        "{stderr}"
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn tools_prints_an_entry_as_a_tools_file_that_loads_back() {
    let (code, stdout, stderr) = run_with_input(&["tools", "aider"], "");
    assert_eq!(code, 0, "{stderr}");
    let file: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let aider = &file["aider"];
    assert_eq!(aider["protocol"]["kind"], "aider");
    assert!(aider["args"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--no-git"));
    // Copied under another name, it is a valid tools file.
    let copy = serde_json::json!({ "my-aider": aider });
    let mut copy = copy;
    copy["my-aider"]["name"] = "my-aider".into();
    let path = std::env::temp_dir().join(format!("aim-tools-{}.json", std::process::id()));
    std::fs::write(&path, copy.to_string()).unwrap();
    let (code, stdout, stderr) = run_with_input(&["tools", "--tools", path.to_str().unwrap()], "");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("my-aider") && l.contains(" aider ")),
        "{stdout}"
    );
    let (code, _, stderr) = run_with_input(&["tools", "nope"], "");
    assert_ne!(code, 0);
    assert!(stderr.contains("unknown tool"), "{stderr}");
    std::fs::remove_file(path).ok();
}

#[test]
fn run_stream_prints_each_answers_pieces_before_its_line() {
    let (code, stdout, stderr) = run_with_input(
        &["run", "-n", "2", "--stream"],
        "/lines 3\nhello\n/sleep 20\n",
    );
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut answered = std::collections::HashSet::new();
    let mut streamed = std::collections::HashMap::<u64, String>::new();
    for line in &lines {
        let id = line["id"].as_u64().unwrap();
        match line["chunk"].as_str() {
            Some(chunk) => {
                assert!(
                    !answered.contains(&id),
                    "a piece after its answer: {stdout}"
                );
                streamed.entry(id).or_default().push_str(chunk);
            }
            None => {
                let text = line["text"].as_str().unwrap();
                assert!(streamed[&id].starts_with(text), "{stdout}");
                answered.insert(id);
            }
        }
    }
    assert_eq!(answered.len(), 3, "{stdout}");
}

fn run_with_soft_fd_limit(limit: u32, extra: &str) -> (i32, String, String) {
    let aim = env!("CARGO_BIN_EXE_aim");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -Sn {limit}; echo hi | {aim} run -n 20 {extra}"
        ))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn too_many_instances_for_the_open_file_limit_is_said_before_starting() {
    let (code, stdout, stderr) = run_with_soft_fd_limit(60, "");
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("RLIMIT_NOFILE") && stderr.contains("of 60"),
        "{stderr}"
    );
    assert!(stderr.contains("5 each"), "{stderr}");
    // With the opt-in, the soft limit is raised (the hard one allows it) and the run works.
    let (code, stdout, stderr) = run_with_soft_fd_limit(60, "--raise-fd-limit");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("You said: hi"), "{stdout}");
}

#[test]
fn a_timeout_line_reports_the_configured_timeout_not_the_time_spent_queued() {
    // Two hanging prompts on one instance: the second waits behind the first, then hangs
    // for its own second; both errors name the 1s that was configured.
    let (code, stdout, stderr) = run_with_input(
        &["run", "demo", "-n", "1", "--timeout", "1s"],
        "/hang\n/hang\n",
    );
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in &lines {
        assert_eq!(line["kind"], "timeout", "{line}");
        let error = line["error"].as_str().unwrap();
        assert!(error.contains("within its timeout of 1s ("), "{error}");
        assert!(error.contains("since it was submitted"), "{error}");
    }
}

#[test]
fn a_died_line_keeps_what_the_tool_answered_before_it_died() {
    if !support::have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let (code, stdout, stderr) = run_with_input(
        &["run", "python", "-n", "1"],
        "print(\"bye\"); import os; os._exit(3)\n",
    );
    assert_eq!(code, 1, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(line["kind"], "died", "{line}");
    assert_eq!(line["partial"], "bye\n", "{line}");
}
