//! Real third-party REPLs through the pool: python3, bc, sqlite3.

mod support;

use aim::{ToolProcessPool, ToolRegistry};
use support::*;

#[test]
fn python_answers_on_stdout_with_its_prompt_on_stderr() {
    init_logs();
    let spec = ToolRegistry::builtin().resolve("python").unwrap();
    let pool = ToolProcessPool::new(spec, 2).unwrap();
    assert_eq!(pool.send_to(0, "6 * 7").unwrap().text, "42\n");
    assert_eq!(pool.send_to(1, "print('hello')").unwrap().text, "hello\n");
    // State lives in the process: a variable set on instance 0 is there for instance 0 only.
    pool.send_to(0, "x = 41").unwrap();
    assert_eq!(pool.send_to(0, "x + 1").unwrap().text, "42\n");
    let err = pool.send_to(1, "x").unwrap();
    assert_eq!(err.text, "");
    assert!(err.stderr.contains("NameError"), "{:?}", err.stderr);
    let pids: Vec<i32> = pool.status().iter().map(|s| s.pid).collect();
    let report = pool.shutdown();
    assert!(report.all_reaped());
    assert_gone(&pids);
}

#[test]
fn bc_answers_through_sentinel_framing() {
    init_logs();
    let spec = ToolRegistry::builtin().resolve("bc").unwrap();
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(pool.send_to(0, "2 + 3").unwrap().text, "5\n");
    // BC_LINE_LENGTH=0: long numbers are not wrapped.
    assert_eq!(
        pool.send_to(0, "2^200").unwrap().text,
        "1606938044258990275541962092341162602522202993782792835301376\n"
    );
    // An assignment prints nothing: sentinel framing still knows the answer is complete.
    assert_eq!(pool.send_to(0, "a = 5").unwrap().text, "");
    assert_eq!(pool.send_to(0, "a * a").unwrap().text, "25\n");
    let r = pool.send_to(0, "1 / 0").unwrap();
    assert!(r.stderr.contains("ivide by zero"), "{:?}", r.stderr);
    stop_pool(&pool);
}

#[test]
fn sqlite3_answers_through_sentinel_framing() {
    init_logs();
    let spec = ToolRegistry::builtin().resolve("sqlite3").unwrap();
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(
        pool.send_to(0, "CREATE TABLE t(x INTEGER);").unwrap().text,
        ""
    );
    pool.send_to(0, "INSERT INTO t VALUES (1), (2), (3);")
        .unwrap();
    assert_eq!(
        pool.send_to(0, "SELECT sum(x) FROM t;").unwrap().text,
        "6\n"
    );
    assert_eq!(
        pool.send_to(0, "SELECT x FROM t ORDER BY x;").unwrap().text,
        "1\n2\n3\n"
    );
    let r = pool.send_to(0, "SELECT * FROM missing;").unwrap();
    assert!(r.stderr.contains("no such table"), "{:?}", r.stderr);
    assert_eq!(pool.send_to(0, "SELECT 1;").unwrap().text, "1\n");
    stop_pool(&pool);
}

#[test]
fn many_prompts_keep_answers_aligned() {
    init_logs();
    let spec = ToolRegistry::builtin().resolve("bc").unwrap();
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    for i in 0..200u64 {
        assert_eq!(
            pool.send_to(0, format!("{i} * 3")).unwrap().text,
            format!("{}\n", i * 3)
        );
    }
    stop_pool(&pool);
}

#[test]
fn every_spec_field_has_a_setter() {
    init_logs();
    let spec = aim::ToolSpec::new("t", "sh")
        .max_prompt_bytes(10)
        .stderr_lines(3)
        .strip_ansi(true)
        .init(["a", "b"])
        .env_remove("HOME")
        .env_clear();
    assert_eq!(spec.max_prompt_bytes, 10);
    assert_eq!(spec.stderr_lines, 3);
    assert!(spec.strip_ansi);
    assert_eq!(spec.init, ["a", "b"]);
    assert_eq!(spec.env.remove, ["HOME"]);
    assert!(spec.env.clear);
    // The prompt cap applies.
    let pool = aim::ToolProcessPool::new(cat().max_prompt_bytes(10), 1).unwrap();
    let err = pool.send_to(0, "far more than ten bytes").unwrap_err();
    assert!(matches!(err, aim::Error::InvalidPrompt { .. }), "{err}");
    stop_pool(&pool);
}

#[test]
fn a_registered_spec_and_a_tool_id_launch_the_demo_agent_the_same_way() {
    init_logs();
    // `get` keeps the placeholder program; the pool resolves it when it launches.
    let spec = ToolRegistry::builtin().get("demo").unwrap();
    assert_eq!(spec.program, ToolRegistry::DEMO_PROGRAM);
    let pool = ToolProcessPool::builder(spec).launch().unwrap();
    assert!(pool
        .send_to(0, "hi")
        .unwrap()
        .text
        .starts_with("You said: hi"));
    assert!(pool.shutdown().all_reaped());

    let pool = ToolProcessPool::builder_for("demo")
        .unwrap()
        .launch()
        .unwrap();
    assert!(pool
        .send_to(0, "one")
        .unwrap()
        .text
        .starts_with("You said: one"));
    assert!(pool.shutdown().all_reaped());

    let cluster = aim::ClusterManager::builder_for("demo")
        .unwrap()
        .count(2)
        .launch()
        .unwrap();
    assert!(cluster
        .send("two")
        .unwrap()
        .text
        .starts_with("You said: two"));
    assert!(cluster.shutdown().all_reaped());

    match aim::ClusterManager::builder_for("no-such-tool") {
        Err(aim::Error::UnknownTool { id, known }) => {
            assert_eq!(id, "no-such-tool");
            assert!(known.iter().any(|k| k == "demo"), "{known:?}");
        }
        other => panic!("expected UnknownTool, got {other:?}"),
    }
}

#[test]
fn a_pinned_pool_prompt_takes_a_request_with_its_own_time_limit() {
    init_logs();
    let pool = ToolProcessPool::builder_for("demo")
        .unwrap()
        .launch()
        .unwrap();
    let request = aim::Request::new("/sleep 5000").timeout(std::time::Duration::from_millis(200));
    match pool.send_to(0, request) {
        Err(aim::Error::Timeout { prompt, .. }) => {
            assert_eq!(prompt.as_deref(), Some("/sleep 5000"))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(pool.shutdown().all_reaped());
}

#[test]
fn a_pinned_prompt_keeps_its_answer_timeout() {
    init_logs();
    let pool = ToolProcessPool::builder_for("demo")
        .unwrap()
        .launch()
        .unwrap();
    let request = aim::Request::new("/sleep 5000")
        .answer_timeout(std::time::Duration::from_millis(200))
        .timeout(std::time::Duration::from_secs(60));
    match pool.send_to(0, request) {
        Err(aim::Error::Timeout { stage, .. }) => {
            assert_eq!(stage, aim::TimeoutStage::Answering)
        }
        other => panic!("expected the answer timeout, got {other:?}"),
    }
    assert!(pool.shutdown().all_reaped());
}
