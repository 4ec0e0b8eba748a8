//! The local launcher: a tool spawned as our child in its own process group, signalled as a
//! group, and reaped exactly once.
//!
//! Rules this module keeps:
//! - Each child leads a new process group (a new session with a PTY), registered with the
//!   guardian (`crate::guardian`), which kills the group if this process dies by any means;
//!   a PTY child also gets `PR_SET_PDEATHSIG`. Pipe children are spawned with `posix_spawn`
//!   (no code runs between fork and exec), so launching does not copy our page tables.
//! - A tool starts with SIGINT, SIGQUIT, SIGTERM and SIGHUP at their defaults even when this
//!   process ignores them (a background job, `nohup`): then, and only then, a pipe child is
//!   forked with a reset between fork and exec.
//! - We only ever wait for our own pids (`waitpid(pid, WNOHANG)`), never `waitpid(-1)`, and
//!   install no `SIGCHLD` handler: a library must not steal other code's children.
//! - A pid is reaped once, under a lock, and never waited for again, so a recycled pid can
//!   never be mistaken for ours. Before the group leader is reaped, whatever is left of its
//!   group is killed, so no grandchild is orphaned.
//! - On Linux, a pidfd makes the exit observable with `poll(2)`, even while a grandchild keeps
//!   the pipes open.

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, OutputFlags, SetArg};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use parking_lot::Mutex;

use super::{ChildIo, Launch, Launched, Launcher};
use crate::error::{Error, Result};
use crate::process::{fd_limit_reason, set_nonblocking};
use crate::spec::{ToolSpec, Transport};
use crate::state::ExitInfo;

/// Starts tools as children of this process (pipes or a PTY, as the spec says).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LocalLauncher;

impl Launcher for LocalLauncher {
    fn launch(&self, spec: &ToolSpec, instance: usize) -> Result<Launch> {
        let (process, io) = spawn(spec, instance)?;
        Ok(Launch {
            process: std::sync::Arc::new(process),
            io,
        })
    }
}

/// A running (or exited, not yet reaped) child: the pid and the once-only reaping guard.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    pid: Pid,
    exit: Mutex<Option<ExitInfo>>,
}

impl ChildProcess {
    /// A child `pid` of this process that leads its own process group, registered with the
    /// guardian.
    pub(crate) fn adopt(pid: i32) -> Self {
        ChildProcess {
            pid: Pid::from_raw(pid),
            exit: Mutex::new(None),
        }
    }
}

impl ChildProcess {
    /// Waits up to `timeout` for the child to exit and reaps it; SIGKILLs its group and
    /// reaps it if it is still there then (at most 5 s more).
    pub(crate) fn wait_gone(&self, timeout: std::time::Duration) {
        use nix::poll::{poll, PollFd, PollFlags};
        use std::os::fd::AsFd;
        let pidfd = pidfd_open(self.pid);
        for (limit, kill) in [(timeout, false), (std::time::Duration::from_secs(5), true)] {
            if kill {
                self.signal_group(Signal::SIGKILL);
            }
            let deadline = std::time::Instant::now() + limit;
            while self.try_reap().is_none() {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                let wait = crate::process::poll_timeout(
                    deadline.min(now + std::time::Duration::from_millis(50)),
                    now,
                );
                match &pidfd {
                    Some(fd) => {
                        let _ = poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], wait);
                    }
                    None => {
                        let _ = poll(&mut [], wait);
                    }
                }
            }
            if self.exit.lock().is_some() {
                return;
            }
        }
    }
}

impl Launched for ChildProcess {
    /// The child's pid (also its process group id).
    fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The exit status, if the child has been reaped.
    fn exit(&self) -> Option<ExitInfo> {
        *self.exit.lock()
    }

    /// Reaps the child if it has exited, without blocking. Safe to call from any thread, any
    /// number of times: the first caller that sees the exit reaps; later callers get the
    /// recorded status. Kills what is left of the child's process group first.
    fn try_reap(&self) -> Option<ExitInfo> {
        let mut exit = self.exit.lock();
        if exit.is_some() {
            return *exit;
        }
        // Peek without reaping: while the leader is an unreaped zombie its pid (and group id)
        // cannot be reused, so killing the group here can only hit our own processes.
        let peek = waitid(
            Id::Pid(self.pid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        );
        match peek {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => {
                let _ = killpg(self.pid, Signal::SIGKILL);
                // Forget the group while the zombie still pins its id: the guardian can then
                // never hold an id that was reused.
                crate::guardian::Guardian::global().unwatch(self.pid.as_raw());
            }
            Err(Errno::ECHILD) => {
                crate::guardian::Guardian::global().unwatch(self.pid.as_raw());
                *exit = Some(ExitInfo::Unknown);
                return *exit;
            }
            Err(_) => {}
        }
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => *exit = Some(ExitInfo::Code(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => *exit = Some(ExitInfo::Signal(sig as i32)),
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => *exit = Some(ExitInfo::Unknown),
                Err(e) => log::warn!("waitpid({}) failed: {e}", self.pid),
            }
            return *exit;
        }
    }

    /// Sends `signal` to the child's whole process group (nothing if it was reaped).
    fn signal_group(&self, signal: Signal) {
        let exit = self.exit.lock();
        if exit.is_none() {
            if let Err(e) = killpg(self.pid, signal) {
                if e != Errno::ESRCH {
                    log::debug!("killpg({}, {signal}) failed: {e}", self.pid);
                }
            }
        }
    }

    /// Sends `signal` to the child alone (nothing if it was reaped).
    fn signal_tool(&self, signal: Signal) {
        let exit = self.exit.lock();
        if exit.is_none() {
            let _ = nix::sys::signal::kill(self.pid, signal);
        }
    }

    /// From `/proc/PID/syscall` of the child.
    fn reading_stdin(&self) -> Option<bool> {
        crate::stdin_wait::blocked_reading_stdin(self.pid.as_raw())
    }
}

/// Starts `spec` (already expanded for its instance).
///
/// # Errors
/// [`Error::Spawn`] when the program cannot be executed; [`Error::Io`] when pipes or a PTY
/// cannot be created.
pub(super) fn spawn(spec: &ToolSpec, instance: usize) -> Result<(ChildProcess, ChildIo)> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args);
    if spec.env.clear {
        cmd.env_clear();
    }
    for key in &spec.env.remove {
        cmd.env_remove(key);
    }
    cmd.envs(&spec.env.set);
    if let Some(dir) = spec.cwd_path() {
        if spec.create_cwd && !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Spawn {
                tool: spec.name.clone(),
                instance,
                program: spec.program.clone(),
                reason: format!(
                    "cannot create working directory {}: {source}",
                    dir.display()
                ),
                source,
            })?;
        }
        cmd.current_dir(dir);
    }
    let parent = std::process::id();
    let use_pty = spec.transport == Transport::Pty;

    let mut pty_master = None;
    if use_pty {
        let (master, slave) = open_pty()?;
        configure_pty(&slave)?;
        set_pty_size(&slave, spec.pty_size)?;
        let slave_in = slave
            .try_clone()
            .map_err(|e| Error::io("cannot duplicate the PTY slave", e))?;
        cmd.stdin(Stdio::from(slave_in));
        cmd.stdout(Stdio::from(slave));
        pty_master = Some(master);
    } else {
        cmd.stdin(Stdio::piped());
        cmd.stdout(Stdio::piped());
        cmd.process_group(0);
    }
    cmd.stderr(Stdio::piped());
    // The guardian kills the child's group if we die. Pipes need no code between fork and
    // exec, so std spawns with posix_spawn (vfork: no copy of our page tables, launch time
    // linear in the instance count); a PTY needs setsid and its controlling terminal there.
    let guardian = crate::guardian::Guardian::global();
    let ignored = IgnoredStopSignals::here();
    if use_pty {
        install_child_setup(&mut cmd, parent, ignored);
    } else if ignored.any() {
        // Rare (we run as a background job or under nohup): resetting needs code between
        // fork and exec, so this spawn forks instead of using posix_spawn.
        install_default_dispositions(&mut cmd, ignored);
    }
    // posix_spawn hands the child this thread's signal mask: a tool must see SIGPIPE.
    let unblocked = (!use_pty).then(SigpipeUnblocked::new);

    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        tool: spec.name.clone(),
        instance,
        program: spec.program.clone(),
        reason: spawn_failure_reason(spec, &source),
        source,
    })?;
    drop(unblocked);
    // From here on the child is ours to reap; std's handle is only a bag of pipes.
    let pid = Pid::from_raw(child.id() as i32);
    // It leads its own process group (process_group(0), or setsid for a PTY).
    guardian.watch(pid.as_raw());
    let process = ChildProcess::adopt(pid.as_raw());
    let stderr = child.stderr.take().map(OwnedFd::from);
    let (stdin, stdout) = match pty_master {
        Some(master) => {
            let writer = master
                .try_clone()
                .map_err(|e| Error::io("cannot duplicate the PTY master", e))?;
            (Some(writer), Some(master))
        }
        None => (
            child.stdin.take().map(OwnedFd::from),
            child.stdout.take().map(OwnedFd::from),
        ),
    };
    drop(child);
    for fd in [&stdin, &stdout, &stderr].into_iter().flatten() {
        set_nonblocking(fd)?;
    }
    let io = ChildIo {
        stdin,
        stdout,
        stderr,
        pidfd: pidfd_open(pid),
        pty: use_pty,
        link: None,
    };
    Ok((process, io))
}

/// Says in words why `spec` could not be started: the OS error alone blames the program for a
/// missing working directory (both are ENOENT from `exec`) or one the user may not enter
/// (both are EACCES).
fn spawn_failure_reason(spec: &ToolSpec, error: &std::io::Error) -> String {
    if let Some(dir) = spec.cwd_path() {
        if !dir.is_dir() {
            let what = if dir.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return format!("working directory {} {what}", dir.display());
        }
        if error.kind() == std::io::ErrorKind::PermissionDenied
            && nix::unistd::access(&dir, nix::unistd::AccessFlags::X_OK).is_err()
        {
            return format!(
                "working directory {} cannot be entered (permission denied)",
                dir.display()
            );
        }
    }
    if let Some(limit) = fd_limit_reason(error.raw_os_error()) {
        return limit;
    }
    match error.kind() {
        std::io::ErrorKind::NotFound if spec.program.contains('/') => {
            format!("program not found: {} does not exist", spec.program)
        }
        std::io::ErrorKind::NotFound => "program not found on PATH".to_string(),
        std::io::ErrorKind::PermissionDenied => {
            "not executable (permission denied, or a directory)".to_string()
        }
        _ => error.to_string(),
    }
}

/// Opens a pseudo-terminal pair with both ends close-on-exec from the start: another I/O
/// thread may fork at any moment, and a child that inherited this slave would keep it open
/// after our child exits, so reading the master would never report the end.
fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let fail = |what: &str, e: Errno| Error::io(format!("cannot {what}"), e.into());
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| fail("open a pseudo-terminal", e))?;
    grantpt(&master).map_err(|e| fail("grant the pseudo-terminal", e))?;
    unlockpt(&master).map_err(|e| fail("unlock the pseudo-terminal", e))?;
    let name = ptsname_r(&master).map_err(|e| fail("name the pseudo-terminal", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail("open the pseudo-terminal's slave", e))?;
    let master = std::os::fd::AsFd::as_fd(&master)
        .try_clone_to_owned()
        .map_err(|e| Error::io("cannot duplicate the PTY master", e))?;
    Ok((master, slave))
}

/// Echo off (the prompt is not read back), canonical mode off (no 4 KiB line limit, no line
/// editing), output post-processing off (`\n` stays `\n`).
fn configure_pty(slave: &OwnedFd) -> Result<()> {
    let mut t = tcgetattr(slave).map_err(|e| Error::io("cannot read PTY settings", e.into()))?;
    t.local_flags.remove(
        LocalFlags::ECHO
            | LocalFlags::ECHOE
            | LocalFlags::ECHOK
            | LocalFlags::ECHONL
            | LocalFlags::ICANON
            | LocalFlags::IEXTEN,
    );
    t.output_flags.remove(OutputFlags::OPOST);
    t.control_chars[nix::libc::VMIN] = 1;
    t.control_chars[nix::libc::VTIME] = 0;
    tcsetattr(slave, SetArg::TCSANOW, &t)
        .map_err(|e| Error::io("cannot change PTY settings", e.into()))
}

/// Sets the terminal size the child sees (a new PTY is 0x0, which some programs refuse).
fn set_pty_size(slave: &OwnedFd, size: crate::spec::PtySize) -> Result<()> {
    use std::os::fd::AsRawFd;
    let ws = nix::libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points at a live
    // local for the whole call; the descriptor is an open terminal we own. nix has no safe
    // wrapper for this request.
    #[allow(unsafe_code)]
    let rc = unsafe { nix::libc::ioctl(slave.as_raw_fd(), nix::libc::TIOCSWINSZ, &ws) };
    Errno::result(rc)
        .map(drop)
        .map_err(|e| Error::io("cannot set the PTY size", e.into()))
}

/// While alive, SIGPIPE is not blocked on this thread (I/O threads block it for themselves),
/// so a child spawned meanwhile starts with an empty signal mask.
struct SigpipeUnblocked {
    was_blocked: bool,
}

impl SigpipeUnblocked {
    #[allow(unsafe_code)]
    fn new() -> Self {
        use nix::sys::signal::{SigSet, SigmaskHow};
        let mut current = SigSet::empty();
        let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut current));
        let was_blocked = current.contains(Signal::SIGPIPE);
        if was_blocked {
            // A SIGPIPE left pending by an earlier failed write would be delivered on
            // unblocking (fatal where it is not ignored): consume it first.
            let pipe = SigSet::from(Signal::SIGPIPE);
            let zero = nix::libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: sigtimedwait reads the set and the timeout, writes nothing (null info),
            // and returns at once with the zero timeout.
            while unsafe { nix::libc::sigtimedwait(pipe.as_ref(), std::ptr::null_mut(), &zero) }
                == nix::libc::SIGPIPE
            {}
            let _ = pipe.thread_unblock();
        }
        SigpipeUnblocked { was_blocked }
    }
}

impl Drop for SigpipeUnblocked {
    fn drop(&mut self) {
        if self.was_blocked {
            let _ = nix::sys::signal::SigSet::from(Signal::SIGPIPE).thread_block();
        }
    }
}

/// The stop signals (SIGINT, SIGQUIT, SIGTERM, SIGHUP) this process ignores. An ignored
/// disposition survives `exec`: a supervisor started as a background job of a
/// non-interactive shell (SIGINT, SIGQUIT) or under `nohup` (SIGHUP) would hand it to every
/// tool, and a tool that ignores SIGINT cannot be cancelled the tool's way.
#[derive(Clone, Copy)]
struct IgnoredStopSignals([Option<nix::libc::c_int>; 4]);

impl IgnoredStopSignals {
    const SIGNALS: [nix::libc::c_int; 4] = [
        nix::libc::SIGINT,
        nix::libc::SIGQUIT,
        nix::libc::SIGTERM,
        nix::libc::SIGHUP,
    ];

    /// Reads the current dispositions (one `sigaction` query each, nothing changed).
    #[allow(unsafe_code)]
    fn here() -> Self {
        let mut ignored = [None; 4];
        for (slot, signal) in ignored.iter_mut().zip(Self::SIGNALS) {
            let mut old = std::mem::MaybeUninit::<nix::libc::sigaction>::zeroed();
            // SAFETY: a null new action only reads the current one into `old`.
            let rc = unsafe { nix::libc::sigaction(signal, std::ptr::null(), old.as_mut_ptr()) };
            // SAFETY: on success sigaction filled `old`; it was zeroed before in any case.
            if rc == 0 && unsafe { old.assume_init() }.sa_sigaction == nix::libc::SIG_IGN {
                *slot = Some(signal);
            }
        }
        IgnoredStopSignals(ignored)
    }

    fn any(&self) -> bool {
        self.0.iter().any(Option::is_some)
    }

    /// Sets each ignored signal back to its default. Async-signal-safe (`signal` only), for
    /// use between fork and exec.
    #[allow(unsafe_code)]
    fn reset_in_child(&self) {
        for signal in self.0.into_iter().flatten() {
            // SAFETY: `signal` is async-signal-safe and installs no handler of ours.
            unsafe {
                nix::libc::signal(signal, nix::libc::SIG_DFL);
            }
        }
    }
}

/// Runs in a pipe child between fork and exec: the stop signals we ignore go back to their
/// defaults, and no signal is blocked.
#[allow(unsafe_code)]
fn install_default_dispositions(cmd: &mut Command, ignored: IgnoredStopSignals) {
    // SAFETY: the closure only makes async-signal-safe calls (signal, sigemptyset,
    // pthread_sigmask) on its own stack and allocates nothing, as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(move || {
            ignored.reset_in_child();
            let mut none = std::mem::MaybeUninit::<nix::libc::sigset_t>::uninit();
            nix::libc::sigemptyset(none.as_mut_ptr());
            nix::libc::pthread_sigmask(nix::libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Runs in a PTY child between fork and exec: parent-death signal, default dispositions for
/// the stop signals, a new session with the PTY as controlling terminal.
#[allow(unsafe_code)]
fn install_child_setup(cmd: &mut Command, parent: u32, ignored: IgnoredStopSignals) {
    // SAFETY: the closure only makes async-signal-safe calls (prctl, getppid, sigemptyset,
    // pthread_sigmask, setsid, ioctl) on its own stack and allocates nothing, as `pre_exec`
    // requires.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if nix::libc::getppid() as u32 != parent {
                nix::libc::_exit(1);
            }
            ignored.reset_in_child();
            // Start with no blocked signals: the spawning I/O thread blocks SIGPIPE for itself,
            // and a tool must see SIGPIPE, SIGTERM and SIGINT as usual.
            let mut none = std::mem::MaybeUninit::<nix::libc::sigset_t>::uninit();
            nix::libc::sigemptyset(none.as_mut_ptr());
            nix::libc::pthread_sigmask(nix::libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
            if nix::libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A pidfd for `pid`, or `None` on kernels without `pidfd_open` (then exits are found by
/// `waitpid` polling).
#[allow(unsafe_code)]
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1; we take
    // ownership of the descriptor only on success.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        log::debug!(
            "pidfd_open unavailable: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
