//! A launcher whose "tool" is a thread of this process, for in-memory tests of the I/O
//! thread, the monitor and the pool: no process is started, and the test decides what the
//! tool answers, when it exits and whether it reads its stdin.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::signal::Signal;
use parking_lot::Mutex;

use super::{ChildIo, HostCheck, Launch, Launched, Launcher};
use crate::error::{Error, Result};
use crate::process::set_nonblocking;
use crate::spec::ToolSpec;
use crate::state::ExitInfo;

/// Starts [`FakeProcess`]es: each answers a line `X` with `echo: X\n> ` (after a first `> `).
#[derive(Debug, Default)]
pub(crate) struct FakeLauncher {
    /// Every process launched, in order.
    pub launched: Mutex<Vec<Arc<FakeProcess>>>,
    /// What `reading_stdin` answers for every process.
    pub reading: Arc<AtomicBool>,
    /// Launches so far.
    pub count: AtomicUsize,
    /// Host checks fail while set (they pass at once otherwise).
    pub host_down: Arc<AtomicBool>,
    /// Host checks so far.
    pub checks: AtomicUsize,
    /// How many polls a host check stays unanswered.
    pub check_polls: AtomicUsize,
}

/// A host check whose answer comes after some polls.
#[derive(Debug)]
struct FakeCheck {
    up: bool,
    polls_left: usize,
}

impl HostCheck for FakeCheck {
    fn poll(&mut self) -> Option<bool> {
        if self.polls_left > 0 {
            self.polls_left -= 1;
            return None;
        }
        Some(self.up)
    }
}

/// A fake tool: a thread reading the stdin pipe and writing the stdout pipe. Its "pidfd" is
/// an eventfd written when it "exits" (on any signal, or at end of input).
#[derive(Debug)]
pub(crate) struct FakeProcess {
    exit: Mutex<Option<ExitInfo>>,
    exited: Mutex<Option<ExitInfo>>,
    signals: Mutex<Vec<Signal>>,
    doorbell: OwnedFd,
    reading: Arc<AtomicBool>,
    lost: AtomicBool,
}

impl FakeProcess {
    /// Ends it as a lost link to its host would (`ssh` exits 255, no exit from the far side).
    pub(crate) fn lose_link(&self) {
        self.lost.store(true, Ordering::Release);
        self.end(ExitInfo::Code(255));
    }

    fn end(&self, info: ExitInfo) {
        let mut exited = self.exited.lock();
        if exited.is_none() {
            *exited = Some(info);
            let _ = nix::unistd::write(&self.doorbell, &1u64.to_ne_bytes());
        }
    }

    /// The signals it was sent, in order.
    pub(crate) fn signals(&self) -> Vec<Signal> {
        self.signals.lock().clone()
    }
}

impl Launched for FakeProcess {
    fn pid(&self) -> i32 {
        // No process: a pid that is never ours.
        i32::MAX
    }

    fn exit(&self) -> Option<ExitInfo> {
        *self.exit.lock()
    }

    fn try_reap(&self) -> Option<ExitInfo> {
        let mut exit = self.exit.lock();
        if exit.is_none() {
            *exit = *self.exited.lock();
        }
        *exit
    }

    fn signal_group(&self, signal: Signal) {
        self.signals.lock().push(signal);
        self.end(ExitInfo::Signal(signal as i32));
    }

    fn signal_tool(&self, signal: Signal) {
        self.signal_group(signal);
    }

    fn reading_stdin(&self) -> Option<bool> {
        Some(self.reading.load(Ordering::Acquire))
    }

    fn link_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire) && self.exit().is_some()
    }
}

impl Launcher for FakeLauncher {
    fn launch(&self, _spec: &ToolSpec, _instance: usize) -> Result<Launch> {
        let io_err = |e: nix::errno::Errno| Error::io("fake launcher", e.into());
        let (stdin_read, stdin_write) = nix::unistd::pipe().map_err(io_err)?;
        let (stdout_read, stdout_write) = nix::unistd::pipe().map_err(io_err)?;
        let (stderr_read, stderr_write) = nix::unistd::pipe().map_err(io_err)?;
        let doorbell = nix::sys::eventfd::EventFd::from_flags(
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )
        .map_err(io_err)?;
        let watch = doorbell
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("fake launcher", e))?;
        let process = Arc::new(FakeProcess {
            exit: Mutex::new(None),
            exited: Mutex::new(None),
            signals: Mutex::new(Vec::new()),
            doorbell: OwnedFd::from(doorbell),
            reading: Arc::clone(&self.reading),
            lost: AtomicBool::new(false),
        });
        for fd in [&stdin_write, &stdout_read, &stderr_read] {
            set_nonblocking(fd)?;
        }
        let tool = Arc::clone(&process);
        std::thread::spawn(move || {
            let _stderr = stderr_write;
            let mut out = std::fs::File::from(stdout_write);
            let _ = out.write_all(b"> ");
            for line in BufReader::new(std::fs::File::from(stdin_read)).lines() {
                let Ok(line) = line else { break };
                if tool.exited.lock().is_some()
                    || out
                        .write_all(format!("echo: {line}\n> ").as_bytes())
                        .is_err()
                {
                    break;
                }
            }
            tool.end(ExitInfo::Code(0));
        });
        self.count.fetch_add(1, Ordering::AcqRel);
        self.launched.lock().push(Arc::clone(&process));
        if self.host_down.load(Ordering::Acquire) {
            process.lose_link();
        }
        Ok(Launch {
            process,
            io: ChildIo {
                stdin: Some(stdin_write),
                stdout: Some(stdout_read),
                stderr: Some(stderr_read),
                pidfd: Some(watch),
                pty: false,
                link: None,
            },
        })
    }

    fn check_host(&self, _host: usize) -> Option<Result<Box<dyn HostCheck>>> {
        self.checks.fetch_add(1, Ordering::AcqRel);
        let up = !self.host_down.load(Ordering::Acquire);
        Some(Ok(Box::new(FakeCheck {
            up,
            polls_left: self.check_polls.load(Ordering::Acquire),
        })))
    }
}
