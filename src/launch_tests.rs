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
        launcher: Some(Arc::clone(launcher) as Arc<dyn Launcher>),
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

/// Waits up to 20 s for `cond`, naming `what` if it never holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The fake process instance `index` runs now.
fn process_of(
    core: &PoolCore,
    launcher: &FakeLauncher,
    index: usize,
) -> Arc<crate::launch::fake::FakeProcess> {
    let current = core
        .instance(index)
        .unwrap()
        .shared
        .info
        .lock()
        .process
        .clone();
    let current = current.expect("a process");
    let launched = launcher.launched.lock();
    let found = launched
        .iter()
        .find(|p| std::ptr::addr_eq(Arc::as_ptr(p), Arc::as_ptr(&current)))
        .cloned();
    found.expect("launched by the fake")
}

#[test]
fn a_host_down_holds_its_instances_until_a_check_passes() {
    use crate::host_state::HostState;
    use crate::state::{ExitCause, InstanceState};
    let launcher = Arc::new(FakeLauncher::default());
    let spec = ToolSpec::new("fake", "/nonexistent/fake-tool").framing(prompt(false));
    let options = PoolOptions {
        launcher: Some(Arc::clone(&launcher) as Arc<dyn Launcher>),
        hosts: crate::hosts::HostsConfig::new(vec!["h0".into(), "h1".into()]),
        supervision: crate::SupervisionConfig::default().backoff(
            crate::BackoffConfig::default()
                .base(Duration::from_millis(5))
                .max(Duration::from_millis(20))
                .jitter(crate::Jitter::None),
        ),
        ..PoolOptions::default()
    };
    let core = PoolCore::launch(spec, 4, options, None).unwrap();
    let pool = ToolProcessPool::from_core(Arc::clone(&core));
    assert_eq!(launcher.count.load(Ordering::Acquire), 4);
    let on_h1 = |i: usize| core.instance(i).unwrap().shared.candidate(8);

    // h1 unreachable: instance 1's link ends, the check fails, the host is down. The check
    // takes a few polls: instance 1's restart comes due while the host is suspect, and waits.
    launcher.check_polls.store(5, Ordering::Release);
    launcher.host_down.store(true, Ordering::Release);
    process_of(&core, &launcher, 1).lose_link();
    wait_for("h1 down", || core.hosts[1].state() == HostState::Down);
    assert_eq!(core.hosts[0].state(), HostState::Up);
    // Instance 3, still running there, is stopped; neither is launched again meanwhile.
    wait_for("instance 3 stopped for its host", || {
        core.instance(3).unwrap().shared.state() == InstanceState::Restarting
    });
    let checks = launcher.checks.load(Ordering::Acquire);
    wait_for("three more checks on backoff", || {
        launcher.checks.load(Ordering::Acquire) >= checks + 3
    });
    assert_eq!(launcher.count.load(Ordering::Acquire), 4);
    for i in [1, 3] {
        assert_eq!(on_h1(i).circuit, crate::CircuitState::Open);
        assert!(!on_h1(i).is_available());
    }
    assert_eq!(pool.send_to(0, "still").unwrap().text, "echo: still\n");
    assert_eq!(pool.send_to(2, "still").unwrap().text, "echo: still\n");

    // A check passes: the host is up and both its instances start again at once.
    launcher.host_down.store(false, Ordering::Release);
    wait_for("h1 up with its instances", || {
        core.hosts[1].state() == HostState::Up
            && [1, 3]
                .iter()
                .all(|&i| core.instance(i).unwrap().shared.state() == InstanceState::Ready)
    });
    assert_eq!(launcher.count.load(Ordering::Acquire), 6);
    assert_eq!(pool.send_to(3, "back").unwrap().text, "echo: back\n");
    let restarts = core
        .instance(3)
        .unwrap()
        .shared
        .metrics(Instant::now())
        .restarts;
    assert_eq!(restarts[ExitCause::HostDown.as_str()], 1, "{restarts:?}");
    let status = core.hosts[1].status(vec![1, 3]);
    assert_eq!(status.transitions["suspect"], 1);
    assert_eq!(status.transitions["down"], 1);
    assert_eq!(status.transitions["up"], 1);
    assert!(
        status.checks["failed"] >= 4 && status.checks["ok"] == 1,
        "{status:?}"
    );
    pool.shutdown();
}

#[test]
fn a_lost_link_on_a_reachable_host_leaves_it_up() {
    let launcher = Arc::new(FakeLauncher::default());
    let spec = ToolSpec::new("fake", "/nonexistent/fake-tool").framing(prompt(false));
    let options = PoolOptions {
        launcher: Some(Arc::clone(&launcher) as Arc<dyn Launcher>),
        hosts: crate::hosts::HostsConfig::new(vec!["h0".into()]),
        ..PoolOptions::default()
    };
    let core = PoolCore::launch(spec, 2, options, None).unwrap();
    let pool = ToolProcessPool::from_core(Arc::clone(&core));
    process_of(&core, &launcher, 0).lose_link();
    wait_for("the check", || {
        core.hosts[0].status(vec![]).checks["ok"] == 1
    });
    wait_for("instance 0 back", || {
        launcher.count.load(Ordering::Acquire) == 3
            && core.instance(0).unwrap().shared.state() == crate::state::InstanceState::Ready
    });
    let status = core.hosts[0].status(vec![0, 1]);
    assert!(status.is_up());
    assert_eq!(status.transitions["suspect"], 1);
    assert_eq!(status.transitions["down"], 0);
    assert_eq!(pool.send_to(1, "fine").unwrap().text, "echo: fine\n");
    pool.shutdown();
}
