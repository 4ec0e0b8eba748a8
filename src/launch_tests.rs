//! The pool, its I/O threads and its monitor driven in memory through the fake launcher
//! (`crate::launch::fake`): no process is started.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::Error;
use crate::launch::fake::FakeLauncher;
use crate::launch::{Launched, Launcher};
use crate::pool::{PoolCore, PoolOptions};
use crate::spec::Framing;
use crate::spec::ToolSpec;
use crate::state::ExitInfo;
use crate::ToolProcessPool;

fn pool(launcher: &Arc<FakeLauncher>, framing: Framing) -> ToolProcessPool {
    let spec = ToolSpec::new("fake", "/nonexistent/fake-tool").framing(framing);
    let options = PoolOptions {
        launcher: Arc::clone(launcher) as Arc<dyn Launcher>,
        ..PoolOptions::default()
    };
    ToolProcessPool::from_core(PoolCore::launch(spec, 1, options, None).unwrap())
}

fn prompt(await_read: bool) -> Framing {
    Framing::Prompt {
        marker: "> ".into(),
        stream: crate::spec::Stream::Stdout,
        settle: Duration::ZERO,
        await_read,
    }
}

#[test]
fn a_pool_answers_through_the_launcher_without_any_process() {
    let launcher = Arc::new(FakeLauncher::default());
    let pool = pool(&launcher, prompt(false));
    let answer = pool.send_to(0, "hello").unwrap();
    assert_eq!(answer.text, "echo: hello\n");
    let report = pool.shutdown();
    assert!(report.all_reaped());
    assert_eq!(launcher.count.load(Ordering::Acquire), 1);
}

#[test]
fn a_launched_process_that_exits_is_reaped_and_relaunched() {
    let launcher = Arc::new(FakeLauncher::default());
    let pool = pool(&launcher, prompt(false));
    pool.send_to(0, "one").unwrap();
    let first = Arc::clone(&launcher.launched.lock()[0]);
    first.signal_group(Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(20);
    while launcher.count.load(Ordering::Acquire) < 2 {
        assert!(Instant::now() < deadline, "no relaunch after the fake exit");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(first.exit(), Some(ExitInfo::Signal(Signal::SIGKILL as i32)));
    assert_eq!(pool.send_to(0, "two").unwrap().text, "echo: two\n");
    pool.shutdown();
}

#[test]
fn await_read_asks_the_launched_process_not_proc() {
    let launcher = Arc::new(FakeLauncher::default());
    launcher.reading.store(true, Ordering::Release);
    let pool = pool(&launcher, prompt(true));
    launcher.reading.store(false, Ordering::Release);
    let ticket = pool.submit_to(0, "wait").unwrap();
    // The prompt is out, but the fake says the tool is not reading stdin: no answer yet.
    assert!(ticket.wait_timeout(Duration::from_millis(200)).is_none());
    launcher.reading.store(true, Ordering::Release);
    let answer = ticket.wait().unwrap();
    assert_eq!(answer.text, "echo: wait\n");
    pool.shutdown();
}

#[test]
fn cancel_interrupts_the_tool_through_the_launcher() {
    let launcher = Arc::new(FakeLauncher::default());
    let pool = pool(&launcher, prompt(true));
    // Never "reading": the answer never completes until cancelled.
    let ticket = pool.submit_to(0, "forever").unwrap();
    assert!(ticket.wait_timeout(Duration::from_millis(50)).is_none());
    ticket.cancel();
    assert!(matches!(ticket.wait(), Err(Error::Cancelled { .. })));
    let first = Arc::clone(&launcher.launched.lock()[0]);
    assert_eq!(first.signals().first(), Some(&Signal::SIGINT));
    pool.shutdown();
}
