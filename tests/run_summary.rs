//! `aim run`'s exit code, its summary line and its error lines agree: bad input lines count
//! as failures in both, a blank line is no prompt, and errors are said once.

mod support;

use support::*;

/// Runs `aim run ARGS` with `input`; returns (exit code, stdout lines as JSON, stderr).
fn run(args: &[&str], input: &str) -> (i32, Vec<serde_json::Value>, String) {
    let out = run_aim([&["run"], args].concat(), input.as_bytes());
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The summary line's `N answered, M failed, success P` as (N, M, P).
fn summary(stderr: &str) -> (u64, u64, String) {
    let line = stderr
        .lines()
        .find(|l| l.contains(" answered, "))
        .unwrap_or_else(|| panic!("no summary: {stderr}"));
    let number = |word: &str| -> u64 {
        let before = &line[..line.find(word).unwrap()];
        before
            .trim_end()
            .rsplit([' ', ':'])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let success = line
        .split("success ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    (number(" answered"), number(" failed"), success)
}

#[test]
fn bad_jsonl_lines_are_failures_in_the_summary_as_in_the_exit_code() {
    init_logs();
    let input = "{\"prompt\": \"a\"}\n{\"prompt\": \"b\"}\n{\"prompt\": \"c\"}\n{x}\n";
    let (code, lines, stderr) = run(&["--input", "jsonl"], input);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(lines.len(), 4, "{lines:?}");
    let (answered, failed, success) = summary(&stderr);
    assert_eq!((answered, failed), (3, 1), "{stderr}");
    assert_eq!(success, "75.00%", "{stderr}");
    // One line number in the error: the input's, with serde's column.
    let error = lines[3]["error"].as_str().unwrap();
    assert!(error.starts_with("line 4"), "{error}");
    assert_eq!(error.matches("line").count(), 1, "{error}");
    assert!(error.contains("column 2"), "{error}");
}

#[test]
fn a_blank_line_is_no_prompt_and_no_failure() {
    init_logs();
    let (code, lines, stderr) = run(&[], "a\n\nb\n   \nc\n");
    assert_eq!(code, 0, "{stderr}");
    let ids: Vec<u64> = lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    // Ids still count input lines, so an answer can be matched to its line.
    assert_eq!(ids, [0, 2, 4], "{lines:?}");
    assert!(lines.iter().all(|l| l["text"].is_string()), "{lines:?}");
    let (answered, failed, success) = summary(&stderr);
    assert_eq!((answered, failed), (3, 0), "{stderr}");
    assert_eq!(success, "100.00%", "{stderr}");
    let (code, lines, stderr) = run(&["--input", "jsonl"], "{\"prompt\": \"a\"}\n\n");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 1, "{lines:?}");
}

#[test]
fn a_missing_program_is_one_clear_error() {
    init_logs();
    let path = std::env::temp_dir().join(format!("aim-missing-{}.json", std::process::id()));
    std::fs::write(
        &path,
        r#"{"nope": {"program": "/nonexistent/aim-test-tool", "framing": {"kind": "line"}}}"#,
    )
    .unwrap();
    let (code, lines, stderr) = run(
        &["nope", "-n", "3", "--tools", path.to_str().unwrap()],
        "hi\n",
    );
    std::fs::remove_file(&path).ok();
    assert_eq!(code, 2, "{stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    let said: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].starts_with("aim: ")
            && said[0].contains("/nonexistent/aim-test-tool does not exist"),
        "{stderr}"
    );
}
