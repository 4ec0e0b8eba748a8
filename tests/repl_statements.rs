//! sqlite3 and bc (issue 20): statements they would wait on are refused at once with a typed
//! error that keeps the process and its state (and the check agrees with the tools); init
//! lines are ended and checked like prompts; a died error carries this prompt's stderr.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aim::{Error, StatementCheck, ToolProcessPool, ToolRegistry, ToolSpec};
use support::*;

fn builtin(id: &str) -> Option<ToolSpec> {
    if !have(id) {
        eprintln!("SKIPPED: {id} not installed");
        return None;
    }
    let mut spec = ToolRegistry::builtin().resolve(id).unwrap();
    // A prompt the tool waits on would otherwise fail only at this timeout.
    spec.request_timeout = Duration::from_secs(10);
    Some(spec)
}

const SQL: &[&str] = &[
    "SELECT 1",
    "SELECT 1;",
    "SELECT 1 -- c",
    "SELECT 1 /* c */",
    "SELECT 'a''b'",
    "SELECT \"a\"\"b\"",
    "SELECT 1 AS [a b]",
    "SELECT 1 AS `a`",
    "SELECT ';'",
    ".mode list",
    ".print 'abc",
    ".print \"a",
    "SELECT 1;\n.print x",
    "SELECT\n1\n",
    "-- only a comment",
    "SELECT 'multi\nline'",
    "SELECT 1; /* trailing */",
    "SELECT 'é'",
    "EXPLAIN SELECT 1",
    "SELECT 1 /* open",
    "SELECT \"abc",
    "SELECT [abc",
    "SELECT 'abc",
    "SELECT `abc",
    "SELECT 'a';\nSELECT 'b",
    "SELECT 'a\n.print x",
    "CREATE TEMP TABLE t(a)",
    "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END;",
    "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END",
    "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1;",
    "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1",
    "CREATE TEMP TRIGGER r AFTER INSERT ON t BEGIN SELECT 1; END x",
    "SELECT 1 /* a */ /* b",
    "SELECT '--'",
    "SELECT 1 -- '",
];

const BC: &[&str] = &[
    "1+2",
    "x = 3",
    "define f(n) { return n }",
    "define void f() { print 1 }",
    "define f(n) {\nreturn n\n}",
    "if (0) 1",
    "if (0) 1 else 2",
    "while (0) {}",
    "for (i=0;i<1;i++) i",
    "print \"a{(\"",
    "# \"x",
    "/* { */ 1",
    "(1+2",
    "}",
    "1 + \\\n2",
    "define g(n) {",
    "\"abc",
    "/* c",
    "if (0)",
    "while (0)",
    "x = 1; while (0)",
    "if (0) /* c */",
    "if(0)#c",
    "if (1) 1 else",
    "define f(n)",
    "{",
    "while (0) {",
    "1 + \\",
    "x = \"a",
];

/// Whether `program` (fed `stmt`, aim's sentinel lines, then end of input) runs the sentinel.
fn tool_runs_the_sentinel(program: &str, args: &[&str], stmt: &str, sentinel: &str) -> bool {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    write!(stdin, "{stmt}\n{sentinel}\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("SENTINEL_DONE")
}

#[test]
fn the_sqlite3_check_agrees_with_sqlite3() {
    if !have("sqlite3") {
        eprintln!("SKIPPED: sqlite3 not installed");
        return;
    }
    for stmt in SQL {
        let runs =
            tool_runs_the_sentinel("sqlite3", &["-batch"], stmt, ";-- x\n.print SENTINEL_DONE");
        let unfinished = StatementCheck::Sqlite3.unfinished(stmt);
        assert_eq!(runs, unfinished.is_none(), "{stmt:?}: {unfinished:?}");
    }
}

#[test]
fn the_bc_check_agrees_with_bc() {
    if !have("bc") {
        eprintln!("SKIPPED: bc not installed");
        return;
    }
    for stmt in BC {
        let runs = tool_runs_the_sentinel("bc", &["-q"], stmt, "print \"SENTINEL_DONE\\n\"");
        let unfinished = StatementCheck::Bc.unfinished(stmt);
        assert_eq!(runs, unfinished.is_none(), "{stmt:?}: {unfinished:?}");
    }
}

fn refused_at_once_keeping_state(
    pool: &ToolProcessPool,
    prompts: &[&str],
    check: &str,
    want: &str,
) {
    let pid = pool.send_to(0, check).unwrap().pid;
    for prompt in prompts {
        let began = Instant::now();
        let err = pool.send_to(0, *prompt).unwrap_err();
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{prompt:?} waited for a timeout: {err}"
        );
        assert!(
            matches!(err, Error::InvalidPrompt { .. }),
            "{prompt:?}: {err:?}"
        );
        assert!(err.to_string().contains("unfinished statement"), "{err}");
        let r = pool.send_to(0, check).unwrap();
        assert_eq!(r.text, want, "after {prompt:?}");
        assert_eq!(r.pid, pid, "the process was kept after {prompt:?}");
    }
}

#[test]
fn sqlite3_unfinished_statements_fail_at_once_keeping_the_process() {
    init_logs();
    let Some(spec) = builtin("sqlite3") else {
        return;
    };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    pool.send_to(0, "CREATE TABLE t(a); INSERT INTO t VALUES(1);")
        .unwrap();
    refused_at_once_keeping_state(
        &pool,
        &[
            "SELECT 1 /* open",
            "SELECT \"abc",
            "SELECT [abc",
            "SELECT 'abc",
            "CREATE TRIGGER r AFTER INSERT ON t BEGIN SELECT 1;",
        ],
        "SELECT count(*) FROM t;",
        "1\n",
    );
    stop_pool(&pool);
}

#[test]
fn bc_unfinished_statements_fail_at_once_keeping_the_process() {
    init_logs();
    let Some(spec) = builtin("bc") else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    pool.send_to(0, "kept = 7").unwrap();
    refused_at_once_keeping_state(
        &pool,
        &["define g(n) {", "\"abc", "/* c", "while (0)"],
        "kept",
        "7\n",
    );
    stop_pool(&pool);
}

#[test]
fn sqlite3_init_lines_are_each_ended_like_a_prompt() {
    init_logs();
    let Some(mut spec) = builtin("sqlite3") else {
        return;
    };
    spec.init = vec!["CREATE TABLE t(a)".into(), "INSERT INTO t VALUES(1)".into()];
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool.send_to(0, "SELECT count(*) FROM t;").unwrap();
    assert_eq!(r.text, "1\n");
    assert_eq!(r.stderr, "");
    stop_pool(&pool);
}

fn start_error(spec: ToolSpec) -> String {
    let began = Instant::now();
    let err = ToolProcessPool::new(spec, 1).unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "it waited for the startup timeout: {err}"
    );
    err.to_string()
}

#[test]
fn an_init_line_the_tool_reports_an_error_for_fails_the_start() {
    init_logs();
    if let Some(mut spec) = builtin("sqlite3") {
        spec.startup_timeout = Duration::from_secs(20);
        spec.init = vec!["CREATE TABLE t(a)".into(), "SELECT nosuch()".into()];
        let err = start_error(spec);
        assert!(err.contains("init line 2 `SELECT nosuch()`"), "{err}");
        assert!(err.contains("no such function: nosuch"), "{err}");
    }
    if let Some(mut spec) = builtin("bc") {
        spec.startup_timeout = Duration::from_secs(20);
        spec.init = vec!["x = 1".into(), "x = = 2".into()];
        let err = start_error(spec);
        assert!(err.contains("init line 2 `x = = 2`"), "{err}");
        assert!(err.contains("syntax error"), "{err}");
    }
}

#[test]
fn an_unfinished_init_line_fails_at_once_naming_it() {
    let Some(mut spec) = builtin("sqlite3") else {
        return;
    };
    spec.init = vec!["CREATE TABLE t(a)".into(), "SELECT 'abc".into()];
    let err = start_error(spec);
    assert!(err.contains("line 2 `SELECT 'abc`"), "{err}");
    assert!(err.contains("unfinished statement"), "{err}");
}

fn died_stderr(err: &Error) -> Vec<String> {
    match err {
        Error::InstanceDied { stderr, .. } => stderr.clone(),
        other => panic!("not a died error: {other:?}"),
    }
}

#[test]
fn a_died_error_carries_the_tools_reason_from_this_prompt_only() {
    init_logs();
    if let Some(spec) = builtin("sqlite3") {
        let pool = ToolProcessPool::new(spec, 1).unwrap();
        pool.send_to(0, ".bail on").unwrap();
        let err = pool.send_to(0, "SELECT nosuch();").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("no such function: nosuch"), "{shown}");
        assert!(shown.contains("error here"), "{shown}");
        assert_eq!(err.stderr_lines(), died_stderr(&err).as_slice());
        stop_pool(&pool);
    }
    if let Some(spec) = builtin("bc") {
        let pool = ToolProcessPool::new(spec, 1).unwrap();
        let r = pool.send_to(0, "sqrt(-1)").unwrap();
        assert!(r.stderr.contains("Square root"), "{r:?}");
        let err = pool.send_to(0, "halt").unwrap_err();
        assert_eq!(died_stderr(&err), Vec::<String>::new(), "{err}");
        assert!(!err.to_string().contains("Square root"), "{err}");
        stop_pool(&pool);
    }
}

#[test]
fn sqlite3_bare_output_back_to_stdout_is_allowed() {
    init_logs();
    let Some(spec) = builtin("sqlite3") else {
        return;
    };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(pool.send_to(0, ".output").unwrap().text, "");
    assert_eq!(pool.send_to(0, ".o  ").unwrap().text, "");
    assert_eq!(pool.send_to(0, "SELECT 2;").unwrap().text, "2\n");
    let err = pool.send_to(0, ".output /tmp/x").unwrap_err();
    assert!(matches!(err, Error::InvalidPrompt { .. }), "{err:?}");
    let err = pool.send_to(0, ".once").unwrap_err();
    assert!(matches!(err, Error::InvalidPrompt { .. }), "{err:?}");
    stop_pool(&pool);
}
