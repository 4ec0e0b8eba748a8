//! The built-in python as a user sees it (issue 20): `sys.ps1` / `sys.ps2` read back as in
//! plain python, an unfinished statement python will not abandon, a closed stderr.

mod support;

use std::time::{Duration, Instant};

use aim::{Error, ToolProcessPool, ToolRegistry, ToolSpec};
use support::*;

fn python() -> Option<ToolSpec> {
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return None;
    }
    let mut spec = ToolRegistry::builtin().resolve("python").unwrap();
    spec.request_timeout = Duration::from_secs(60);
    Some(spec)
}

fn send(pool: &ToolProcessPool, prompt: &str) -> aim::Result<aim::Response> {
    pool.send_to_timeout(0, prompt, Duration::from_secs(60))
}

#[test]
fn python_prompts_read_back_as_in_plain_python() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = send(
        &pool,
        "import sys, types; print(repr(sys.ps1), repr(sys.ps2))",
    )
    .unwrap();
    assert_eq!(r.text, "'>>> ' '... '\n");
    let r = send(
        &pool,
        "print(type(sys.ps1) is str, isinstance(sys, types.ModuleType))",
    )
    .unwrap();
    assert_eq!(r.text, "True True\n");
    stop_pool(&pool);
}

#[test]
fn python_code_that_prints_sys_ps1_does_not_shift_answers() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = send(
        &pool,
        r#"import sys,time; sys.stderr.write(str(sys.ps1)); sys.stderr.flush(); time.sleep(0.3); print("late2")"#,
    )
    .unwrap();
    // The REPL shows the value of `write` (4 characters), as plain python does.
    assert_eq!(r.text, "4\nlate2\n");
    assert!(r.stderr.starts_with(">>> "), "{:?}", r.stderr);
    assert_eq!(send(&pool, r#"print("next2")"#).unwrap().text, "next2\n");
    assert_eq!(send(&pool, r#"print("next3")"#).unwrap().text, "next3\n");
    stop_pool(&pool);
}

#[test]
fn python_deleted_prompts_are_gone_and_can_be_set_again() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let pid = send(&pool, "import sys; del sys.ps1; print(hasattr(sys, 'ps1'))")
        .map(|r| {
            assert_eq!(r.text, "False\n");
            r.pid
        })
        .unwrap();
    let r = send(&pool, "sys.ps1").unwrap();
    assert!(r.stderr.contains("AttributeError"), "{:?}", r.stderr);
    let r = send(
        &pool,
        "sys.ps1 = 'a> '; print(sys.ps1, hasattr(sys, 'ps1'))",
    )
    .unwrap();
    assert_eq!(r.text, "a>  True\n");
    let r = send(&pool, "for i in range(2): print(i)").unwrap();
    assert_eq!(r.text, "0\n1\n");
    assert_eq!(r.pid, pid, "the process was kept");
    stop_pool(&pool);
}

#[test]
fn python_unfinished_statement_it_will_not_abandon_is_recycled_within_moments() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let pid = send(
        &pool,
        "import signal; _ = signal.signal(signal.SIGINT, signal.SIG_IGN)",
    )
    .unwrap()
    .pid;
    let began = Instant::now();
    let err = send(&pool, "x=(1,").unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "it waited for the request timeout: {err}"
    );
    let Error::ToolReported { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("unfinished statement"), "{message}");
    assert!(message.contains("recycled"), "{message}");
    let r = send(&pool, "print(2)").unwrap();
    assert_eq!(r.text, "2\n");
    assert_ne!(r.pid, pid, "a fresh process answers");
    stop_pool(&pool);
}

#[test]
fn python_closing_its_stderr_fails_the_prompt_within_moments_and_is_recycled() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let pid = send(&pool, "print(0)").unwrap().pid;
    let began = Instant::now();
    let err = send(&pool, "import os; os.close(2)").unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "it waited for the request timeout: {err}"
    );
    assert!(matches!(err, Error::InstanceDied { .. }), "{err:?}");
    assert!(err.to_string().contains("stderr"), "{err}");
    let r = send(&pool, "print(1)").unwrap();
    assert_eq!(r.text, "1\n");
    assert_ne!(r.pid, pid, "a fresh process answers");
    stop_pool(&pool);
}

#[test]
fn a_timeout_is_logged_once() {
    if !have("python3") {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aim"))
        .args(["run", "python", "-n", "1", "--timeout", "1s"])
        .env("RUST_LOG", "aim=warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"import time; time.sleep(5)\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("did not finish answering").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn closing_the_stream_a_fixed_prompt_is_read_on_fails_the_prompt_within_moments() {
    init_logs();
    if !have("python3") {
        return;
    }
    // Any framing whose end marker comes on stderr, not only numbered prompts.
    let spec = ToolSpec::new("py", "python3")
        .args(["-i", "-q", "-u"])
        .framing(aim::Framing::Prompt {
            marker: ">>> ".into(),
            stream: aim::Stream::Stderr,
            settle: Duration::ZERO,
            await_read: false,
        })
        .request_timeout(Duration::from_secs(60));
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(send(&pool, "print(0)").unwrap().text, "0\n");
    let began = Instant::now();
    let err = send(&pool, "import os; os.close(2)").unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "it waited for the request timeout: {err}"
    );
    assert!(matches!(err, Error::InstanceDied { .. }), "{err:?}");
    stop_pool(&pool);
}
