//! Every bad input gets a clear, typed error, loses nothing, never panics or hangs.

mod support;

use std::time::{Duration, Instant};

use aim::{Error, ExitInfo, InstanceState, ToolProcessPool, ToolRegistry, ToolSpec};
use support::*;

#[test]
fn unknown_tool_lists_the_known_ones() {
    init_logs();
    let err = ToolRegistry::builtin().resolve("emacs").unwrap_err();
    assert!(matches!(err, Error::UnknownTool { .. }));
    let text = err.to_string();
    assert!(text.contains("emacs") && text.contains("python") && text.contains("demo"));
}

#[test]
fn a_missing_binary_fails_fast_with_a_spawn_error() {
    init_logs();
    let started = Instant::now();
    let err =
        ToolProcessPool::new(ToolSpec::new("ghost", "/nonexistent/ghost-tool"), 2).unwrap_err();
    match &err {
        Error::Spawn {
            program, source, ..
        } => {
            assert_eq!(program, "/nonexistent/ghost-tool");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Spawn, got {other}"),
    }
    assert!(std::error::Error::source(&err).is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "must not wait for a timeout"
    );
}

#[test]
fn a_tool_that_exits_at_once_reports_its_exit_code_and_stderr() {
    init_logs();
    let err = ToolProcessPool::new(demo(&["--exit-at-start", "4"]), 1).unwrap_err();
    match &err {
        Error::NotReady { exit, stderr, .. } => {
            assert_eq!(*exit, Some(ExitInfo::Code(4)));
            assert!(
                stderr.iter().any(|l| l.contains("exiting at start")),
                "{stderr:?}"
            );
        }
        other => panic!("expected NotReady, got {other}"),
    }
    assert!(err.to_string().contains("exit code 4"), "{err}");
}

#[test]
fn a_tool_that_never_becomes_ready_times_out_and_is_cleaned_up() {
    init_logs();
    let spec = demo(&["--never-ready"]).startup_timeout(Duration::from_millis(400));
    let err = ToolProcessPool::new(spec, 1).unwrap_err();
    match err {
        Error::NotReady { waited, exit, .. } => {
            assert!(waited >= Duration::from_millis(400));
            assert_eq!(exit, None);
        }
        other => panic!("expected NotReady, got {other}"),
    }
}

#[test]
fn empty_multiline_nul_and_oversized_prompts_are_rejected_with_the_prompt_back() {
    init_logs();
    let mut spec = cat();
    spec.max_prompt_bytes = 1000;
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let big = "y".repeat(1001);
    for bad in ["", "  ", "two\nlines", "nul\0byte", big.as_str()] {
        let err = pool.send_to(0, bad).unwrap_err();
        assert!(matches!(err, Error::InvalidPrompt { .. }), "{bad:?}: {err}");
        assert_eq!(err.into_prompt().as_deref(), Some(bad));
    }
    // The instance is untouched.
    assert_eq!(pool.send_to(0, "still fine").unwrap().text, "still fine");
    stop_pool(&pool);
}

#[test]
fn a_hanging_request_times_out_and_the_instance_is_recycled() {
    init_logs();
    let mut spec = demo(&[]);
    spec.stop_grace = Duration::from_millis(200);
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let before = pool.send_to(0, "/pid").unwrap();
    let err = pool
        .send_to_timeout(0, "/hang", Duration::from_millis(300))
        .unwrap_err();
    match &err {
        Error::Timeout {
            instance, stage, ..
        } => {
            assert_eq!(*instance, Some(0));
            assert_eq!(*stage, aim::TimeoutStage::Answering);
        }
        other => panic!("expected Timeout, got {other}"),
    }
    // The tool may have acted on it: a resend would run it twice.
    assert!(err.is_timeout() && !err.is_retryable());
    assert_eq!(err.prompt(), Some("/hang"));
    // The stale process is replaced; the next answer comes from a new generation.
    wait_until(Duration::from_secs(10), "the recycled instance", || {
        pool.status()[0].generation == 2 && pool.status()[0].state == InstanceState::Ready
    });
    let after = pool.send_to(0, "/pid").unwrap();
    assert_eq!(after.generation, before.generation + 1);
    assert_gone(&[before.pid]);
    stop_pool(&pool);
}

#[test]
fn an_answer_over_the_size_cap_is_an_error_not_out_of_memory() {
    init_logs();
    let spec = demo(&[]).max_response_bytes(64 * 1024);
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let err = pool.send_to(0, "/flood 10000000").unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: 65536, .. }),
        "{err}"
    );
    wait_until(Duration::from_secs(10), "the recycled instance", || {
        pool.status()[0].generation == 2 && pool.status()[0].state == InstanceState::Ready
    });
    assert!(pool.send_to(0, "ok?").unwrap().text.contains("ok?"));
    stop_pool(&pool);
}

#[test]
fn invalid_utf8_and_nul_bytes_are_kept_raw_and_offered_lossy() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let r = pool.send_to(0, "/garbage").unwrap();
    assert_eq!(r.bytes, b"bad \xff\xfe bytes \x00 and NUL\n");
    assert!(r.text.contains('\u{FFFD}'));
    assert!(r.text.contains('\0'));
    stop_pool(&pool);
}

#[test]
fn a_flood_of_stderr_does_not_deadlock() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    // 8 MiB is far more than a pipe holds: the child would block forever if nobody read it.
    let r = pool.send_to(0, "/flood-stderr 8388608").unwrap();
    assert!(r.text.starts_with("flooded stderr with"), "{:?}", r.text);
    assert!(pool.send_to(0, "after").unwrap().text.contains("after"));
    stop_pool(&pool);
}

#[test]
fn a_one_mebibyte_prompt_goes_through_while_the_tool_writes_back() {
    init_logs();
    // cat echoes while it is still reading: without poll-multiplexed writes this deadlocks
    // once both pipes are full.
    let pool = ToolProcessPool::new(cat(), 1).unwrap();
    let prompt: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let r = pool.send_to(0, prompt.clone()).unwrap();
    assert_eq!(r.text.len(), prompt.len());
    assert_eq!(r.text, prompt);
    stop_pool(&pool);

    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let r = pool.send_to(0, prompt.clone()).unwrap();
    assert!(r.text.starts_with("You said: abcdef"));
    assert!(r.text.contains(&prompt));
    stop_pool(&pool);
}

#[test]
fn a_crash_mid_request_fails_it_with_the_exit_status_and_stderr() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    let err = pool.send_to(0, "/crash 9").unwrap_err();
    match &err {
        Error::InstanceDied { exit, stderr, .. } => {
            assert_eq!(*exit, Some(ExitInfo::Code(9)));
            assert!(
                stderr.iter().any(|l| l.contains("crashing on request")),
                "{stderr:?}"
            );
        }
        other => panic!("expected InstanceDied, got {other}"),
    }
    let err = {
        wait_until(Duration::from_secs(10), "restart", || {
            pool.status()[0].state == InstanceState::Ready
        });
        pool.send_to(0, "/abort").unwrap_err()
    };
    match err {
        Error::InstanceDied { exit, .. } => assert_eq!(exit, Some(ExitInfo::Signal(6))),
        other => panic!("expected InstanceDied, got {other}"),
    }
    stop_pool(&pool);
}

#[test]
fn a_zero_count_is_invalid_config() {
    init_logs();
    let err = ToolProcessPool::new(cat(), 0).unwrap_err();
    match err {
        Error::InvalidConfig { field, .. } => assert_eq!(field, "count"),
        other => panic!("{other}"),
    }
}

#[test]
fn huge_timeouts_are_rejected_in_config_and_capped_per_request_never_panicking() {
    init_logs();
    let err = ToolProcessPool::new(cat().request_timeout(Duration::MAX), 1).unwrap_err();
    match err {
        Error::InvalidConfig { field, .. } => assert_eq!(field, "request_timeout_ms"),
        other => panic!("{other}"),
    }
    let pool = ToolProcessPool::new(cat(), 1).unwrap();
    // Duration::MAX from a caller would overflow Instant arithmetic: it is capped instead.
    let r = pool
        .send_to_timeout(0, "still answered", Duration::MAX)
        .unwrap();
    assert_eq!(r.text, "still answered");
    let ticket = pool.submit_to(0, "again").unwrap();
    assert_eq!(
        ticket.wait_timeout(Duration::MAX).unwrap().unwrap().text,
        "again"
    );
    stop_pool(&pool);
}
