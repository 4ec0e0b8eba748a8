//! Tools files as a user writes them: mistakes caught at load with the file's line, and a
//! working directory the user may not enter reported as such.

mod support;

use aim::{Error, ToolRegistry};
use support::*;

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("aim-toolsfile-{name}-{}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn load_error(name: &str, text: &str) -> Error {
    let path = temp_file(name, text);
    let err = ToolRegistry::from_path(&path).unwrap_err();
    std::fs::remove_file(path).ok();
    err
}

#[test]
fn a_duplicate_tool_id_is_an_error_at_its_second_line() {
    let err = load_error(
        "dup",
        "{\n  \"x\": {\"program\": \"cat\"},\n  \"y\": {\"program\": \"cat\"},\n  \"x\": {\"program\": \"sleep\"}\n}\n",
    );
    let Error::ToolsFile {
        tool,
        location,
        reason,
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(tool.as_deref(), Some("x"), "{err}");
    assert!(reason.contains("duplicate"), "{err}");
    assert_eq!(location.map(|(line, _)| line), Some(4), "{err}");
}

#[test]
fn checks_after_parsing_give_the_line_of_the_field() {
    // No program at all: the tool's entry starts on line 3.
    let err = load_error(
        "noprogram",
        "{\n  \"ok\": {\"program\": \"cat\"},\n  \"x\": {\n    \"framing\": {\"kind\": \"line\"}\n  }\n}\n",
    );
    let Error::ToolsFile {
        field, location, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(field.as_deref(), Some("program"), "{err}");
    assert_eq!(location.map(|(line, _)| line), Some(3), "{err}");
    assert!(err.to_string().contains(":3:"), "{err}");
    // A value that parses but fails validation: the line of that field.
    let err = load_error(
        "badname",
        "{\n  \"x\": {\n    \"program\": \"cat\",\n    \"name\": \"other\"\n  }\n}\n",
    );
    let Error::ToolsFile {
        field, location, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(field.as_deref(), Some("name"), "{err}");
    assert_eq!(location.map(|(line, _)| line), Some(4), "{err}");
}

#[test]
fn a_working_directory_the_user_may_not_enter_is_reported_as_such() {
    init_logs();
    let dir = std::env::temp_dir().join(format!("aim-closed-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    let tools = temp_file(
        "closedcwd",
        &serde_json::json!({"closed": {"program": "cat", "framing": {"kind": "line"},
            "cwd": dir.to_str().unwrap()}})
        .to_string(),
    );
    // root enters any directory: run the command as `nobody` then.
    let aim = env!("CARGO_BIN_EXE_aim");
    let run = [
        "run",
        "closed",
        "-n",
        "1",
        "--tools",
        tools.to_str().unwrap(),
    ];
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let mut command = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", aim]);
        c
    } else {
        std::process::Command::new(aim)
    };
    let out = command
        .args(run)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&tools).ok();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("working directory") && stderr.contains("permission"),
        "{stderr}"
    );
    assert!(!stderr.contains("not executable"), "{stderr}");
}
