//! Exact answers from the built-in REPLs under real-world output (issue 20): output that
//! looks like a prompt, init lines, unfinished statements, display settings, exits and deaths
//! while answering, streamed pieces.

mod support;

use std::time::{Duration, Instant};

use aim::{Error, Request, ToolProcessPool, ToolRegistry, ToolSpec};
use support::*;

fn python() -> Option<ToolSpec> {
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return None;
    }
    Some(ToolRegistry::builtin().resolve("python").unwrap())
}

fn sqlite3() -> Option<ToolSpec> {
    if !have("sqlite3") {
        eprintln!("SKIPPED: sqlite3 not installed");
        return None;
    }
    Some(ToolRegistry::builtin().resolve("sqlite3").unwrap())
}

#[test]
fn python_output_that_looks_like_the_prompt_does_not_end_the_answer() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool
        .send_to(
            0,
            r#"import sys,time; _ = sys.stderr.write(">>> "); sys.stderr.flush(); time.sleep(0.3); print("late")"#,
        )
        .unwrap();
    assert_eq!(r.text, "late\n");
    assert_eq!(r.stderr, ">>> ");
    assert_eq!(
        pool.send_to(0, r#"print("second")"#).unwrap().text,
        "second\n"
    );
    assert_eq!(
        pool.send_to(0, r#"print("third")"#).unwrap().text,
        "third\n"
    );
    stop_pool(&pool);
}

#[test]
fn python_init_lines_are_all_answered_before_the_first_prompt() {
    init_logs();
    let Some(mut spec) = python() else { return };
    spec.init = vec![
        "import math".into(),
        "y = 5".into(),
        "import time; time.sleep(0.2)".into(),
    ];
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(pool.send_to(0, "print(y * 2)").unwrap().text, "10\n");
    assert_eq!(
        pool.send_to(0, "print(math.floor(2.5))").unwrap().text,
        "2\n"
    );
    stop_pool(&pool);
}

#[test]
fn a_prompt_framed_tool_is_ready_only_after_the_prompts_of_all_its_init_lines() {
    init_logs();
    // The demo agent answers each init line slowly: its prompts arrive after the first one.
    let mut spec = demo(&["--latency-ms", "100"]);
    spec.init = vec!["one".into(), "two".into()];
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool.send_to(0, "three").unwrap();
    assert!(r.text.starts_with("You said: three\n"), "{:?}", r.text);
    let r = pool.send_to(0, "four").unwrap();
    assert!(r.text.starts_with("You said: four\n"), "{:?}", r.text);
    stop_pool(&pool);
}

#[test]
fn python_compound_statement_on_one_line_is_answered() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    pool.send_to(0, "kept = 41").unwrap();
    let began = Instant::now();
    let r = pool.send_to(0, "for i in range(3): print(i)").unwrap();
    assert_eq!(r.text, "0\n1\n2\n");
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "it waited for a timeout"
    );
    assert_eq!(pool.send_to(0, "print(kept + 1)").unwrap().text, "42\n");
    stop_pool(&pool);
}

#[test]
fn python_statement_that_cannot_be_finished_is_a_typed_error_that_keeps_the_process() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let pid = pool.send_to(0, "kept = 7").unwrap().pid;
    let began = Instant::now();
    let err = pool.send_to(0, "print((1,").unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "it waited for a timeout"
    );
    assert!(matches!(err, Error::ToolReported { .. }), "{err:?}");
    assert!(err.to_string().contains("unfinished"), "{err}");
    assert!(err.to_string().contains("KeyboardInterrupt"), "{err}");
    let r = pool.send_to(0, "print(kept)").unwrap();
    assert_eq!(r.text, "7\n");
    assert_eq!(r.pid, pid, "the process was kept");
    stop_pool(&pool);
}

#[test]
fn sqlite3_statement_without_its_semicolon_is_answered() {
    init_logs();
    let Some(spec) = sqlite3() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let began = Instant::now();
    assert_eq!(pool.send_to(0, "SELECT 1 + 1").unwrap().text, "2\n");
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "it waited for a timeout"
    );
    assert_eq!(pool.send_to(0, "SELECT 3;").unwrap().text, "3\n");
    stop_pool(&pool);
}

#[test]
fn sqlite3_display_modes_do_not_disturb_the_end_of_answers() {
    init_logs();
    let Some(spec) = sqlite3() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(pool.send_to(0, ".mode box").unwrap().text, "");
    let boxed = "┌───┐\n│ c │\n├───┤\n│ 3 │\n└───┘\n";
    assert_eq!(pool.send_to(0, "SELECT 3 AS c;").unwrap().text, boxed);
    assert_eq!(pool.send_to(0, ".headers on").unwrap().text, "");
    assert_eq!(pool.send_to(0, ".mode csv").unwrap().text, "");
    // CSV rows end in CRLF, as RFC 4180 says.
    assert_eq!(
        pool.send_to(0, "SELECT 4 AS d;").unwrap().text,
        "d\r\n4\r\n"
    );
    assert_eq!(pool.send_to(0, ".mode html").unwrap().text, "");
    let html = pool.send_to(0, "SELECT 5 AS e;").unwrap().text;
    assert!(html.contains("<TD>5</TD>"), "{html:?}");
    assert_eq!(pool.send_to(0, ".mode list").unwrap().text, "");
    assert_eq!(pool.send_to(0, "SELECT 6 AS f;").unwrap().text, "f\n6\n");
    stop_pool(&pool);
}

#[test]
fn python_exit_while_answering_is_a_failure_and_the_instance_comes_back() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::builder(spec)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let err = pool
        .send_to(0, r#"print("bye"); raise SystemExit(0)"#)
        .unwrap_err();
    assert!(matches!(err, Error::InstanceDied { .. }), "{err:?}");
    let mut answer = None;
    wait_until(Duration::from_secs(30), "a restarted python", || match pool
        .send_to(0, r#"print("after")"#)
    {
        Ok(r) => {
            answer = Some(r);
            true
        }
        Err(_) => false,
    });
    assert_eq!(answer.unwrap().text, "after\n");
    stop_pool(&pool);
}

#[test]
fn what_a_tool_printed_before_it_died_is_in_the_error() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::builder(spec)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let err = pool
        .send_to(0, r#"print("bye"); import os; os._exit(3)"#)
        .unwrap_err();
    assert!(matches!(err, Error::InstanceDied { .. }), "{err:?}");
    assert_eq!(err.partial_answer(), Some("bye\n"), "{err:?}");
    stop_pool(&pool);
}

#[test]
fn streamed_pieces_add_up_to_the_answer_with_characters_split_across_reads() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    // "é" is two bytes: the first arrives alone, the second 50 ms later.
    let prompt = r#"import sys,time; o=sys.stdout.buffer; _ = o.write(b"caf\xc3"); o.flush(); time.sleep(0.05); _ = o.write(b"\xa9!\n"); o.flush()"#;
    let ticket = pool
        .submit_to(0, Request::new(prompt).stream(true))
        .unwrap();
    let chunks: Vec<String> = ticket.chunks().collect();
    let answer = ticket.wait().unwrap();
    assert_eq!(answer.text, "café!\n");
    assert_eq!(chunks.concat(), answer.text, "{chunks:?}");
    stop_pool(&pool);
}

#[test]
fn streamed_pieces_leave_out_the_prompt_marker() {
    init_logs();
    let pool = ToolProcessPool::new(demo(&[]), 1).unwrap();
    for prompt in ["/lines 3", "/quote", "hello"] {
        let ticket = pool
            .submit_to(0, Request::new(prompt).stream(true))
            .unwrap();
        let chunks: Vec<String> = ticket.chunks().collect();
        let answer = ticket.wait().unwrap();
        assert_eq!(chunks.concat(), answer.text, "{prompt}: {chunks:?}");
    }
    stop_pool(&pool);
}

#[test]
fn sqlite3_echoing_its_input_does_not_end_answers_early() {
    init_logs();
    let Some(spec) = sqlite3() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    // `.echo on` prints every line sqlite3 reads, the sentinel command included.
    let on = pool.send_to(0, ".echo on").unwrap().text;
    assert!(!on.contains("__aim_"), "{on:?}");
    for i in 0..5 {
        let r = pool.send_to(0, format!("SELECT {i};")).unwrap();
        assert!(
            r.text.starts_with(&format!("SELECT {i};\n{i}\n")),
            "{:?}",
            r.text
        );
        assert!(!r.text.contains("__aim_"), "{:?}", r.text);
    }
    stop_pool(&pool);
}

#[test]
fn sqlite3_output_redirection_is_refused_and_never_gets_the_sentinel() {
    init_logs();
    let Some(spec) = sqlite3() else { return };
    // Short, so today's code (the sentinel lost in the file) fails fast instead of in 60 s.
    let spec = spec.request_timeout(Duration::from_secs(5));
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let dir = std::env::temp_dir().join(format!("aim-sqlite-output-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x");
    let file = file.display();
    assert_eq!(pool.send_to(0, "SELECT 0;").unwrap().text, "0\n");
    let pid = pool.metrics().instances[0].pid;
    for prompt in [
        format!(".output {file}"),
        format!(".once {file}"),
        format!(".o {file}"),
        format!(".\"output\" {file}"),
        ".excel".to_string(),
        ".testcase t".to_string(),
    ] {
        let err = pool.send_to(0, prompt.as_str()).unwrap_err();
        match &err {
            Error::InvalidPrompt {
                reason,
                prompt: back,
            } => {
                assert_eq!(back, &prompt);
                assert!(reason.contains("standard output"), "{reason}");
            }
            other => panic!("{prompt:?}: {other:?}"),
        }
        assert_eq!(pool.send_to(0, "SELECT 1;").unwrap().text, "1\n");
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "something was written into the user's directory"
    );
    assert!(!std::path::Path::new("testcase-out.txt").exists());
    // The same process, its state untouched; other dot commands still work (CSV ends in CRLF).
    assert_eq!(pool.metrics().instances[0].pid, pid);
    assert_eq!(pool.send_to(0, ".mode csv").unwrap().text, "");
    assert_eq!(pool.send_to(0, "SELECT 2;").unwrap().text, "2\r\n");
    stop_pool(&pool);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bc() -> Option<ToolSpec> {
    if !have("bc") {
        eprintln!("SKIPPED: bc not installed");
        return None;
    }
    Some(ToolRegistry::builtin().resolve("bc").unwrap())
}

#[test]
fn bc_answer_without_a_final_newline_is_kept() {
    init_logs();
    let Some(spec) = bc() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    // bc prints the sentinel right after "abc", on the same line.
    assert_eq!(pool.send_to(0, r#"print "abc""#).unwrap().text, "abc");
    assert_eq!(pool.send_to(0, r#"print "x=", 5"#).unwrap().text, "x=5");
    assert_eq!(pool.send_to(0, "1+1").unwrap().text, "2\n");
    // Streamed pieces still add up to the answer.
    for prompt in [r#"print "abc""#, r#"print "x=", 5, "\n", "y""#, "2+2"] {
        let ticket = pool
            .submit_to(0, Request::new(prompt).stream(true))
            .unwrap();
        let chunks: Vec<String> = ticket.chunks().collect();
        let answer = ticket.wait().unwrap();
        assert!(!answer.text.is_empty() && !answer.text.contains("__aim_"));
        assert_eq!(chunks.concat(), answer.text, "{prompt}: {chunks:?}");
    }
    stop_pool(&pool);
}

#[test]
fn sqlite3_answer_without_a_final_newline_is_kept() {
    init_logs();
    let Some(spec) = sqlite3() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(
        pool.send_to(0, ".system printf hi").unwrap().text,
        "hi",
        "shell output without a newline"
    );
    assert_eq!(pool.send_to(0, ".mode ascii").unwrap().text, "");
    assert_eq!(pool.send_to(0, "select 1, 2;").unwrap().text, "1\x1f2\x1e");
    let ticket = pool
        .submit_to(0, Request::new("select 3, 4;").stream(true))
        .unwrap();
    let chunks: Vec<String> = ticket.chunks().collect();
    let answer = ticket.wait().unwrap();
    assert_eq!(answer.text, "3\x1f4\x1e");
    assert_eq!(chunks.concat(), answer.text, "{chunks:?}");
    assert_eq!(pool.send_to(0, ".mode list").unwrap().text, "");
    assert_eq!(pool.send_to(0, ".separator , ;").unwrap().text, "");
    assert_eq!(pool.send_to(0, "select 1, 2;").unwrap().text, "1,2;");
    // Echoed input after an answer without a newline: the echo of `;` shares its line.
    assert_eq!(pool.send_to(0, ".mode ascii").unwrap().text, "");
    let on = pool.send_to(0, ".echo on").unwrap().text;
    assert!(!on.contains("__aim_"), "{on:?}");
    assert_eq!(
        pool.send_to(0, "select 5, 6;").unwrap().text,
        "select 5, 6;\n5\x1f6\x1e"
    );
    stop_pool(&pool);
}

#[test]
fn python_compound_init_lines_are_ended_the_way_python_expects() {
    init_logs();
    let Some(mut spec) = python() else { return };
    spec.init = vec![
        "def f(): return 41".into(),
        "x = f()".into(),
        "for i in range(2): x += i".into(),
        "class C: v = 1".into(),
    ];
    spec.startup_timeout = Duration::from_secs(60);
    let began = Instant::now();
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "it waited for the startup timeout"
    );
    assert_eq!(pool.send_to(0, "print(x + C.v)").unwrap().text, "43\n");
    stop_pool(&pool);
}

#[test]
fn python_unfinished_init_line_fails_the_start_at_once_naming_the_line() {
    init_logs();
    let Some(mut spec) = python() else { return };
    spec.init = vec!["y = 1".into(), "print((1,".into()];
    spec.startup_timeout = Duration::from_secs(60);
    spec.restart = aim::RestartPolicy::Never;
    let began = Instant::now();
    let err = ToolProcessPool::new(spec, 1).unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "it waited for the startup timeout: {err}"
    );
    assert!(matches!(err, Error::NotReady { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("init line 2"), "{text}");
    assert!(text.contains("print((1,"), "{text}");
}

#[test]
fn python_prompts_changed_by_the_user_do_not_break_the_framing() {
    init_logs();
    let Some(spec) = python() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let pid = pool.send_to(0, "kept = 5").unwrap().pid;
    let r = pool
        .send_to_timeout(
            0,
            r#"import sys; sys.ps1 = "py> "; sys.ps2 = "... ""#,
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(r.text, "");
    // What the user set reads back; the framing is unchanged.
    let r = pool
        .send_to_timeout(0, "print(sys.ps1, sys.ps2, kept)", Duration::from_secs(20))
        .unwrap();
    assert_eq!(r.text, "py>  ...  5\n");
    let r = pool
        .send_to_timeout(0, "for i in range(2): print(i)", Duration::from_secs(20))
        .unwrap();
    assert_eq!(r.text, "0\n1\n");
    let r = pool
        .send_to_timeout(
            0,
            "del sys.ps1; print(type(sys).__name__)",
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(r.text, "module\n");
    assert_eq!(r.pid, pid, "the process was kept");
    stop_pool(&pool);
}

/// Sends `prompt` streamed; returns the answer and its streamed pieces.
fn streamed(pool: &ToolProcessPool, prompt: &str) -> (aim::Response, Vec<String>) {
    let ticket = pool
        .submit_to(0, Request::new(prompt).stream(true))
        .unwrap();
    let chunks: Vec<String> = ticket.chunks().collect();
    (ticket.wait().unwrap(), chunks)
}

#[test]
fn sqlite3_echo_streams_pieces_that_add_up_to_the_answer_without_aims_own_lines() {
    init_logs();
    let Some(spec) = sqlite3() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let expected = [
        (".echo on", ""),
        ("SELECT 1;", "SELECT 1;\n1\n"),
        // No `;`: aim ends the statement, and its `;` is not read back in the answer.
        ("SELECT 2", "SELECT 2\n2\n"),
        ("SELECT ';';", "SELECT ';';\n;\n"),
        (".print 'abc'", ".print 'abc'\nabc\n"),
        (".mode ascii", ".mode ascii\n"),
        // No final newline in ascii mode: the read-back follows the answer on its line.
        ("SELECT 3;", "SELECT 3;\n3\u{1e}"),
        ("SELECT 4", "SELECT 4\n4\u{1e}"),
    ];
    for (prompt, text) in expected {
        let (r, chunks) = streamed(&pool, prompt);
        assert_eq!(r.text, text, "{prompt}");
        assert_eq!(chunks.concat(), r.text, "{prompt}: {chunks:?}");
    }
    stop_pool(&pool);
}

#[test]
fn sqlite3_errors_do_not_show_aims_own_text() {
    init_logs();
    let Some(spec) = sqlite3() else { return };
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    let r = pool.send_to(0, "SELECT 1 +").unwrap();
    assert!(r.stderr.contains("syntax error"), "{:?}", r.stderr);
    assert!(!r.stderr.contains("__aim_"), "{:?}", r.stderr);
    assert!(!r.stderr.contains("+ ;"), "aim's own `;`: {:?}", r.stderr);
    stop_pool(&pool);
}

#[test]
fn python_readiness_text_printed_by_an_init_line_waits_for_every_init_line() {
    init_logs();
    let Some(mut spec) = python() else { return };
    spec.readiness = aim::Readiness::Text {
        text: "ready-now".into(),
        stream: aim::Stream::Stdout,
    };
    spec.init = vec![
        "def f(): return 1".into(),
        "print('ready-' + 'now')".into(),
        "import time; time.sleep(0.2); g = 2".into(),
    ];
    let pool = ToolProcessPool::new(spec, 1).unwrap();
    assert_eq!(pool.send_to(0, "print(f() + g)").unwrap().text, "3\n");
    assert_eq!(pool.send_to(0, "print(g)").unwrap().text, "2\n");
    stop_pool(&pool);
}
