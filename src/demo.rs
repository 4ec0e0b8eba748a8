//! The built-in demo agent: a stand-in for an AI coding CLI, used by the README, the examples,
//! the soak test and the test suite.
//!
//! It prints a banner, then a `> ` prompt without a newline; each stdin line is one message
//! (a multi-line message comes as `{`, the lines, `}`), and each answer is a few lines ending
//! in a `Tokens: ...` line, followed by the prompt again. Faults are chosen by flags or by
//! commands in the prompt:
//!
//! | command | effect |
//! |---|---|
//! | `/exit` | exit with code 0 |
//! | `/crash [CODE]` | exit at once with CODE (default 3), no answer |
//! | `/abort` | die by SIGABRT |
//! | `/hang` | never answer |
//! | `/deaf` | answer once, then read and ignore everything (alive but stuck) |
//! | `/sleep MS` | answer after MS milliseconds |
//! | `/flood N` | write N bytes of answer |
//! | `/flood-stderr N` | write N bytes to stderr, then answer |
//! | `/garbage` | answer with invalid UTF-8 and NUL bytes |
//! | `/grandchild` | start a process that sleeps forever, answer its pid |
//! | `/ignore-sigterm` | ignore SIGTERM from now on |
//! | `/quote` | an answer with a line starting `> ` inside it |
//! | `/stall MS` | print a line and the prompt, pause MS milliseconds (300), then the rest |
//! | `/pid`, `/env NAME`, `/cwd`, `/echo TEXT`, `/lines N` | what they say |
//!
//! Flags: `--latency-ms N`, `--jitter-ms N`, `--startup-ms N`, `--crash-after N`,
//! `--exit-code N`, `--exit-at-start N`, `--exit-after-ms N` (exit with `--exit-code` that
//! long after becoming ready), `--never-ready`, `--ignore-sigterm`, `--line` (one
//! line per answer, no banner or prompt), `--json` (JSON lines in and out, like a headless
//! agent), `--banner TEXT`, `--prompt TEXT`.
//!
//! Run it with `cargo run --bin aim-demo`, or from any binary that calls
//! [`serve_if_requested`] first thing in `main`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Set in a child's environment to make [`serve_if_requested`] run the demo agent.
pub const DEMO_AGENT_ENV: &str = "AIM_DEMO_AGENT";
/// Names the demo agent executable to use instead of searching for one.
pub const DEMO_BIN_ENV: &str = "AIM_DEMO_BIN";

static EMBEDDED: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main` to embed the demo agent in your binary: when this process was
/// started as the demo agent it runs the agent and exits; otherwise it returns at once and the
/// registry's `demo` tool will start this same binary as its agent.
///
/// ```
/// aim::demo::serve_if_requested();
/// // ... the rest of main
/// ```
pub fn serve_if_requested() {
    if std::env::var_os(DEMO_AGENT_ENV).is_some_and(|v| v == "1") {
        let code = run(std::env::args().skip(1));
        std::process::exit(code);
    }
    EMBEDDED.store(true, Ordering::Release);
}

/// Finds the demo agent: `AIM_DEMO_BIN`, else this binary if it embeds the agent, else an
/// `aim-demo` executable beside this one (or one directory up).
pub(crate) fn locate() -> Result<(PathBuf, Vec<(String, String)>)> {
    if let Some(path) = std::env::var_os(DEMO_BIN_ENV).filter(|p| !p.is_empty()) {
        return Ok((PathBuf::from(path), Vec::new()));
    }
    if EMBEDDED.load(Ordering::Acquire) {
        if let Ok(exe) = std::env::current_exe() {
            return Ok((exe, vec![(DEMO_AGENT_ENV.into(), "1".into())]));
        }
    }
    let dirs = sibling_dirs();
    for dir in &dirs {
        let candidate = dir.join("aim-demo");
        if candidate.is_file() {
            return Ok((candidate, Vec::new()));
        }
    }
    Err(Error::DemoAgentNotFound { searched: dirs })
}

#[derive(Debug, Default)]
struct Options {
    latency: Duration,
    jitter: Duration,
    startup: Duration,
    crash_after: Option<u64>,
    exit_code: i32,
    exit_at_start: Option<i32>,
    exit_after: Option<Duration>,
    never_ready: bool,
    ignore_sigterm: bool,
    line: bool,
    json: bool,
    sleeper: bool,
    banner: Option<String>,
    prompt: String,
}

/// The directories searched for a sibling executable: the current executable's directory and
/// its parent (so `target/debug/examples/x` and `target/debug/deps/x` find `target/debug/`).
fn sibling_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_path_buf());
            if let Some(parent) = dir.parent() {
                dirs.push(parent.to_path_buf());
            }
        }
    }
    dirs
}

fn parse(args: impl Iterator<Item = String>) -> std::result::Result<Options, String> {
    let mut o = Options {
        exit_code: 3,
        prompt: "> ".into(),
        ..Options::default()
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let ms = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("not a number of milliseconds: {v}"))
        };
        match arg.as_str() {
            "--latency-ms" => o.latency = ms(value(&arg)?)?,
            "--jitter-ms" => o.jitter = ms(value(&arg)?)?,
            "--startup-ms" => o.startup = ms(value(&arg)?)?,
            "--crash-after" => {
                o.crash_after = Some(value(&arg)?.parse().map_err(|_| "bad --crash-after")?)
            }
            "--exit-code" => o.exit_code = value(&arg)?.parse().map_err(|_| "bad --exit-code")?,
            "--exit-at-start" => {
                o.exit_at_start = Some(value(&arg)?.parse().map_err(|_| "bad --exit-at-start")?)
            }
            "--exit-after-ms" => o.exit_after = Some(ms(value(&arg)?)?),
            "--never-ready" => o.never_ready = true,
            "--ignore-sigterm" => o.ignore_sigterm = true,
            "--line" => o.line = true,
            "--json" => o.json = true,
            "--sleeper" => o.sleeper = true,
            "--banner" => o.banner = Some(value(&arg)?),
            "--prompt" => o.prompt = value(&arg)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(o)
}

/// Runs the demo agent on this process's stdin and stdout; returns the exit code. For the
/// `aim-demo` binary; programs embed the agent with [`serve_if_requested`].
#[doc(hidden)]
pub fn run(args: impl Iterator<Item = String>) -> i32 {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("aim-demo: {e}");
            return 2;
        }
    };
    if options.sleeper {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Some(code) = options.exit_at_start {
        eprintln!("aim-demo: exiting at start with code {code}");
        return code;
    }
    if options.ignore_sigterm {
        ignore_sigterm();
    }
    Agent::new(options).serve()
}

fn ignore_sigterm() {
    // Blocking (rather than ignoring) needs no unsafe handler and has the same effect for a
    // single-threaded program: SIGTERM stays pending and never acts.
    let set = nix::sys::signal::SigSet::from(nix::sys::signal::Signal::SIGTERM);
    let _ = set.thread_block();
}

struct Agent {
    o: Options,
    answered: u64,
    rng: u64,
    out: std::io::Stdout,
}

enum Step {
    Continue,
    Exit(i32),
    /// Read and ignore all further input.
    Deaf,
}

impl Agent {
    fn new(o: Options) -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id());
        Agent {
            o,
            answered: 0,
            rng: seed | 1,
            out: std::io::stdout(),
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut out = self.out.lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    fn serve(mut self) -> i32 {
        if !self.o.startup.is_zero() {
            std::thread::sleep(self.o.startup);
        }
        if !self.o.line && !self.o.json {
            let banner = self.o.banner.clone().unwrap_or_else(|| {
                format!(
                    "aim demo agent (pid {}). Type a message, or /help.\n",
                    std::process::id()
                )
            });
            self.write(banner.as_bytes());
            if self.o.never_ready {
                // Read and drop input forever, never printing the prompt.
                let stdin = std::io::stdin();
                let mut sink = Vec::new();
                while stdin.lock().read_until(b'\n', &mut sink).unwrap_or(0) > 0 {
                    sink.clear();
                }
                return 0;
            }
            let prompt = self.o.prompt.clone();
            self.write(prompt.as_bytes());
        }
        if let Some(after) = self.o.exit_after {
            let code = self.o.exit_code;
            std::thread::spawn(move || {
                std::thread::sleep(after);
                eprintln!("aim-demo: exiting after {after:?} as asked");
                std::process::exit(code);
            });
        }
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match input.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return 0,
                Ok(_) => {}
            }
            let mut message = String::from_utf8_lossy(&raw)
                .trim_end_matches(['\n', '\r'])
                .to_string();
            if message == "{" && !self.o.json {
                let mut lines = Vec::new();
                loop {
                    raw.clear();
                    match input.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => return 0,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&raw)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if line == "}" {
                        break;
                    }
                    lines.push(line);
                }
                message = lines.join("\n");
            }
            if self.o.json {
                message = json_message(&message);
            }
            match self.answer(&message) {
                Step::Continue => {}
                Step::Exit(code) => return code,
                Step::Deaf => {
                    raw.clear();
                    while input.read_until(b'\n', &mut raw).unwrap_or(0) > 0 {
                        raw.clear();
                    }
                    return 0;
                }
            }
        }
    }

    fn delay(&mut self) {
        let mut d = self.o.latency;
        if !self.o.jitter.is_zero() {
            self.rng = crate::framing::splitmix64(self.rng);
            d += Duration::from_micros(self.rng % (self.o.jitter.as_micros() as u64 + 1));
        }
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }

    fn answer(&mut self, message: &str) -> Step {
        let (command, arg) = match message.strip_prefix('/') {
            Some(rest) => {
                let mut parts = rest.splitn(2, ' ');
                (
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or("").trim().to_string(),
                )
            }
            None => ("", String::new()),
        };
        let number = |default: u64| arg.parse::<u64>().unwrap_or(default);
        let body: Vec<u8> = match command {
            "exit" | "quit" => return Step::Exit(0),
            "crash" => {
                eprintln!("aim-demo: crashing on request");
                return Step::Exit(arg.parse().unwrap_or(3));
            }
            "abort" => std::process::abort(),
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "deaf" => {
                self.write(b"deaf from now on\n");
                let prompt = self.o.prompt.clone();
                self.write(prompt.as_bytes());
                return Step::Deaf;
            }
            "sleep" => {
                eprintln!("aim-demo: sleeping {} ms", number(100));
                std::thread::sleep(Duration::from_millis(number(100)));
                b"slept\n".to_vec()
            }
            "flood" => {
                let n = number(1 << 20) as usize;
                let mut v: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                v.push(b'\n');
                v
            }
            "flood-stderr" => {
                let n = number(1 << 20) as usize;
                let line = "stderr noise ".repeat(6) + "\n";
                let mut err = std::io::stderr().lock();
                let mut written = 0;
                while written < n {
                    let _ = err.write_all(line.as_bytes());
                    written += line.len();
                }
                let _ = err.flush();
                format!("flooded stderr with {written} bytes\n").into_bytes()
            }
            "garbage" => b"bad \xff\xfe bytes \x00 and NUL\n".to_vec(),
            "grandchild" => match spawn_grandchild() {
                Ok(pid) => format!("grandchild {pid}\n").into_bytes(),
                Err(e) => format!("cannot spawn grandchild: {e}\n").into_bytes(),
            },
            "ignore-sigterm" => {
                ignore_sigterm();
                b"ignoring SIGTERM\n".to_vec()
            }
            "quote" => b"Here is a quote:\n> quoted line\nend of answer\n".to_vec(),
            "stall" => {
                // Like a model stream that pauses right after a markdown quote marker: the
                // output ends with the prompt text while the answer is still being written.
                let prompt = self.o.prompt.clone();
                self.write(format!("before the stall\n{prompt}").as_bytes());
                std::thread::sleep(Duration::from_millis(number(300)));
                b"after the stall\n".to_vec()
            }
            "pid" => format!("{}\n", std::process::id()).into_bytes(),
            "env" => format!("{}\n", std::env::var(&arg).unwrap_or_default()).into_bytes(),
            "cwd" => format!(
                "{}\n",
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            )
            .into_bytes(),
            "echo" => format!("{arg}\n").into_bytes(),
            "lines" => (0..number(10))
                .map(|i| format!("line {i}\n"))
                .collect::<String>()
                .into_bytes(),
            "help" => b"commands: /exit /crash /abort /hang /deaf /sleep /flood /flood-stderr /garbage /grandchild /ignore-sigterm /quote /stall /pid /env /cwd /echo /lines\n".to_vec(),
            _ => {
                self.delay();
                let words = message.split_whitespace().count();
                if self.o.line {
                    format!("You said: {}\n", message.replace('\n', " ")).into_bytes()
                } else {
                    format!(
                        "You said: {message}\nThat is {} characters in {words} words.\nTokens: {} sent, {} received.\n",
                        message.chars().count(),
                        words * 3 + 12,
                        words * 5 + 20
                    )
                    .into_bytes()
                }
            }
        };
        self.answered += 1;
        if self.o.json {
            let text = String::from_utf8_lossy(&body).trim_end().to_string();
            let events = format!(
                "{}\n{}\n",
                serde_json::json!({"type": "assistant", "message": {"content": text}}),
                serde_json::json!({"type": "result", "result": text, "is_error": false})
            );
            self.write(events.as_bytes());
        } else if self.o.line {
            self.write(&body);
        } else {
            let mut out = body;
            out.extend_from_slice(self.o.prompt.as_bytes());
            self.write(&out);
        }
        if self.o.crash_after.is_some_and(|n| self.answered >= n) {
            eprintln!("aim-demo: crashing after {} answers", self.answered);
            return Step::Exit(self.o.exit_code);
        }
        Step::Continue
    }
}

/// The user message inside a JSON line like `{"type":"user","message":{"content":"..."}}`.
fn json_message(line: &str) -> String {
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(_) => return format!("(invalid JSON: {line})"),
    };
    let content = &value["message"]["content"];
    match content {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn spawn_grandchild() -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .arg("--sleeper")
        .stdin(std::process::Stdio::null())
        .spawn()?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags() {
        let o = parse(
            ["--latency-ms", "5", "--crash-after", "2", "--json"]
                .into_iter()
                .map(String::from),
        )
        .unwrap();
        assert_eq!(o.latency, Duration::from_millis(5));
        assert_eq!(o.crash_after, Some(2));
        assert!(o.json);
        assert!(parse(["--bogus".to_string()].into_iter()).is_err());
        assert!(parse(["--latency-ms".to_string()].into_iter()).is_err());
    }

    #[test]
    fn reads_json_messages() {
        assert_eq!(
            json_message(r#"{"type":"user","message":{"content":"hi"}}"#),
            "hi"
        );
        assert!(json_message("nope").starts_with("(invalid JSON"));
    }
}
