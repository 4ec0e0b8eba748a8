//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aim::{Framing, InputFormat, Readiness, ToolRegistry, ToolSpec};

/// Starts the `aim` command with `args`, its stdin, stdout and stderr piped.
pub fn spawn_aim<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Child {
    Command::new(env!("CARGO_BIN_EXE_aim"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs the `aim` command with `args` to its end, with `input` on its stdin.
pub fn run_aim<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
    input: &[u8],
) -> Output {
    let mut child = spawn_aim(args);
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Logs go to the test's captured output; `RUST_LOG=aim=debug cargo test` shows them.
/// Also arms a watchdog for the whole test binary (10 minutes): a lost wake-up then fails the
/// run with a message instead of hanging `cargo test`.
pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
    static BINARY_WATCHDOG: std::sync::Once = std::sync::Once::new();
    BINARY_WATCHDOG.call_once(|| {
        std::mem::forget(watchdog("this test binary", Duration::from_secs(600)));
    });
}

/// The demo agent binary built for these tests.
pub fn demo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_aim-demo")
}

/// The built-in demo spec pointed at the test build of the demo agent, with extra flags.
pub fn demo(args: &[&str]) -> ToolSpec {
    let mut spec = ToolRegistry::builtin()
        .get("demo")
        .expect("demo is built in");
    spec.program = demo_bin().to_string();
    spec.args = args.iter().map(|s| s.to_string()).collect();
    spec.stop_grace = Duration::from_millis(500);
    spec
}

/// The demo agent in `--line` mode with line framing.
pub fn demo_lines(args: &[&str]) -> ToolSpec {
    let mut all = vec!["--line"];
    all.extend_from_slice(args);
    demo(&all)
        .framing(Framing::Line)
        .input(InputFormat::Line)
        .readiness(Readiness::Immediate)
}

/// `cat` in line framing: the simplest echo tool.
pub fn cat() -> ToolSpec {
    ToolSpec::new("cat", "cat")
        .framing(Framing::Line)
        .stop_grace(Duration::from_millis(500))
}

/// Polls `cond` until it holds or `timeout` passes; panics naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is gone: no such process, or a zombie that is not ours to reap.
pub fn is_gone(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // The state is the field after the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            let ppid: Option<i32> = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok());
            state == Some("Z") && ppid != Some(std::process::id() as i32)
        }
    }
}

/// Every descendant of `pid` (children, grandchildren, ...), from one pass over /proc.
pub fn descendants(pid: u32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let ppid = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|p| p.parse::<i32>().ok())
            });
        if let Some(ppid) = ppid {
            parent_of.push((child, ppid));
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![pid as i32];
    while let Some(parent) = stack.pop() {
        for &(child, ppid) in &parent_of {
            if ppid == parent {
                found.push(child);
                stack.push(child);
            }
        }
    }
    found
}

/// Asserts every pid is gone (waiting a little for the kernel to finish killing them).
pub fn assert_gone(pids: &[i32]) {
    for &pid in pids {
        wait_until(
            Duration::from_secs(5),
            &format!("pid {pid} to be gone"),
            || is_gone(pid),
        );
    }
}

/// Whether `pid` is a zombie child of this process (a reaping bug).
pub fn is_our_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let rest = stat.rsplit(')').next().unwrap_or("").to_string();
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid: Option<i32> = fields.next().and_then(|p| p.parse().ok());
            state == Some("Z") && ppid == Some(std::process::id() as i32)
        })
        .unwrap_or(false)
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false)
}

/// An event sink that keeps every event, for assertions.
#[derive(Debug, Default)]
pub struct Recorder(std::sync::Mutex<Vec<aim::Event>>);

impl aim::EventSink for Recorder {
    fn on_event(&self, event: &aim::Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<aim::Event> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, pred: impl Fn(&aim::Event) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| pred(e)).count()
    }
}

/// Supervision settings for fast tests: short, deterministic backoff and a roomy budget.
pub fn fast_supervision() -> aim::SupervisionConfig {
    aim::SupervisionConfig::default()
        .health_interval(Duration::from_secs(60))
        .backoff(
            aim::BackoffConfig::default()
                .base(Duration::from_millis(10))
                .factor(2.0)
                .max(Duration::from_millis(200))
                .jitter(aim::Jitter::None)
                .reset_after(Duration::from_millis(100)),
        )
        .budget(
            aim::BudgetConfig::default()
                .max_restarts(1000)
                .window(Duration::from_secs(60))
                .failed_cooldown(Duration::from_secs(600)),
        )
        .breaker(aim::BreakerConfig::default().failure_threshold(1000))
}

/// Shuts a pool down and asserts that every process it was running is gone.
pub fn stop_pool(pool: &aim::ToolProcessPool) {
    let pids: Vec<i32> = pool.status().iter().map(|s| s.pid).collect();
    let report = pool.shutdown();
    assert!(report.all_reaped(), "{report:?}");
    assert_gone(&pids);
}

/// Shuts a cluster down and asserts that every process it was running is gone.
pub fn stop_cluster(cluster: &aim::ClusterManager) {
    let pids: Vec<i32> = cluster.status().iter().map(|s| s.pid).collect();
    let report = cluster.shutdown();
    assert!(report.all_reaped(), "{report:?}");
    assert_gone(&pids);
}

/// Fails the test binary if a test does not finish in time, instead of hanging `cargo test`:
/// a lost wake-up then shows up as a named failure. Dropping the guard disarms it.
pub struct Watchdog {
    _disarm: crossbeam_channel::Sender<()>,
}

/// Arms a [`Watchdog`] for the calling test: after `limit`, it prints `what` and exits the
/// process with status 101 (the status of a failed test binary).
pub fn watchdog(what: &str, limit: Duration) -> Watchdog {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let what = what.to_string();
    std::thread::spawn(move || {
        if let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("watchdog: {what} did not finish within {limit:?} (a lost wake-up?)");
            std::process::exit(101);
        }
    });
    Watchdog { _disarm: tx }
}
pub mod agents;
pub mod git;
pub mod sshd;
