//! The guardian: a small process that kills every tool process group this process started
//! when this process dies, by any means (SIGKILL included).
//!
//! `PR_SET_PDEATHSIG` reaches only a direct child (the kernel clears it across `fork`), so a
//! tool's own children (shells, MCP servers, language servers) would outlive a killed
//! supervisor. The guardian closes that gap: it is forked once, holds the read end of a pipe
//! whose write end only this process holds, and keeps the process-group ids it is told about.
//! When the pipe reports end of file (this process is gone), it sends SIGKILL to every group
//! and exits.
//!
//! After the fork the guardian makes only async-signal-safe system calls (`read`, `kill`,
//! `dup2`, `close`, `open`, `setpgid`, `_exit`) and never allocates: it uses a table
//! allocated before the fork. So forking it from a multithreaded program is safe.
//!
//! What still escapes: a grandchild that leaves its process group (`setsid`, `setpgid`), and
//! a tool started in the instant between its spawn and its registration if the supervisor is
//! killed in that instant. Contain such tools with a cgroup (`cgroup.kill`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::libc;
use parking_lot::Mutex;

/// The most process groups the guardian tracks (about 8 bytes each, allocated at its start).
const CAPACITY: usize = 1 << 16;
/// Messages on the pipe: `[op, pgid]` as native-endian `i32`s (8 bytes: atomic on a pipe).
const WATCH: i32 = 1;
const UNWATCH: i32 = 2;

/// Starts this process's guardian now, if it is not running yet, and returns its pid (an
/// `i32`, like every pid in this crate; `None`
/// if it could not be started: then tools are still killed when their instance stops, and a
/// PTY tool when its I/O thread dies, but not the groups of pipe tools if we are killed).
///
/// It starts by itself at the first spawn; call this first thing in `main` to fork it while
/// the program is still small, and so that its one descriptor (the pipe it watches) exists
/// before any baseline you take.
///
/// ```
/// let pid = aim::start_guardian().expect("the guardian runs");
/// assert_eq!(aim::start_guardian(), Some(pid));
/// ```
pub fn start_guardian() -> Option<i32> {
    Guardian::global().pipe.lock().as_ref().map(|(_, pid)| *pid)
}

/// This process's guardian.
#[derive(Debug)]
pub(crate) struct Guardian {
    /// The write end; `None` when the guardian could not be started (then only
    /// `PR_SET_PDEATHSIG` and stop-time group kills protect us). Replaced if it dies.
    pipe: Mutex<Option<(OwnedFd, i32)>>,
    /// The groups registered, to hand to a replacement guardian.
    groups: Mutex<Vec<i32>>,
}

static GUARDIAN: OnceLock<Guardian> = OnceLock::new();

impl Guardian {
    /// The process-wide guardian, started on first use.
    pub(crate) fn global() -> &'static Guardian {
        GUARDIAN.get_or_init(|| {
            let guardian = Guardian {
                pipe: Mutex::new(None),
                groups: Mutex::new(Vec::new()),
            };
            *guardian.pipe.lock() = start(&[]);
            guardian
        })
    }

    /// Kill process group `pgid` if this process dies.
    pub(crate) fn watch(&self, pgid: i32) {
        self.groups.lock().push(pgid);
        self.send(WATCH, pgid);
    }

    /// Process group `pgid` is gone: forget it (its id may be reused).
    pub(crate) fn unwatch(&self, pgid: i32) {
        {
            let mut groups = self.groups.lock();
            if let Some(i) = groups.iter().position(|&g| g == pgid) {
                groups.swap_remove(i);
            }
        }
        self.send(UNWATCH, pgid);
    }

    fn send(&self, op: i32, pgid: i32) {
        let mut pipe = self.pipe.lock();
        let message = encode(op, pgid);
        let sent = pipe.as_ref().is_some_and(|(fd, _)| write_all(fd, &message));
        if sent {
            return;
        }
        // The guardian is gone (killed?): reap it and start another with every group.
        if let Some((_, pid)) = pipe.take() {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            log::warn!("the guardian process (pid {pid}) is gone; starting another");
        }
        let groups = self.groups.lock().clone();
        *pipe = start(&groups);
    }
}

fn encode(op: i32, pgid: i32) -> [u8; 8] {
    let mut message = [0u8; 8];
    message[..4].copy_from_slice(&op.to_ne_bytes());
    message[4..].copy_from_slice(&pgid.to_ne_bytes());
    message
}

fn write_all(fd: &OwnedFd, bytes: &[u8]) -> bool {
    loop {
        match nix::unistd::write(fd, bytes) {
            Ok(n) if n == bytes.len() => return true,
            Ok(_) => return false,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Forks a guardian that already knows `groups`; returns the pipe's write end and its pid.
#[allow(unsafe_code)]
fn start(groups: &[i32]) -> Option<(OwnedFd, i32)> {
    let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(pair) => pair,
        Err(e) => {
            log::warn!("cannot start the guardian process (pipe: {e}); tools may outlive us");
            return None;
        }
    };
    // Everything the child uses is allocated here, before the fork.
    let mut table: Vec<i32> = Vec::with_capacity(CAPACITY);
    table.extend(groups.iter().take(CAPACITY));
    let dev_null = c"/dev/null";
    let read_fd = read.as_raw_fd();
    let write_fd = write.as_raw_fd();
    // SAFETY: the child branch below makes only async-signal-safe system calls on memory
    // allocated before the fork (the table, the path), never allocates or takes a lock, and
    // ends in `_exit`; the parent branch is ordinary code.
    match unsafe { libc::fork() } {
        -1 => {
            log::warn!(
                "cannot start the guardian process ({}); tools may outlive us",
                std::io::Error::last_os_error()
            );
            None
        }
        0 => unsafe { guard(read_fd, write_fd, &mut table, dev_null.as_ptr()) },
        pid => {
            drop(read);
            log::debug!("guardian process started (pid {pid})");
            Some((write, pid))
        }
    }
}

/// The guardian's whole life, in the forked child.
///
/// # Safety
/// Only to be called in a freshly forked child: it closes every other descriptor.
#[allow(unsafe_code)]
unsafe fn guard(
    read_fd: i32,
    write_fd: i32,
    table: &mut Vec<i32>,
    dev_null: *const libc::c_char,
) -> ! {
    // Our own process group: a terminal's Ctrl-C to the supervisor's group spares us.
    libc::setpgid(0, 0);
    // Hold nothing of the supervisor's: its pipes to tools, its stdout (`aim run | head`).
    libc::close(write_fd);
    if read_fd != 3 {
        libc::dup2(read_fd, 3);
    }
    if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
        for fd in 4..4096 {
            libc::close(fd);
        }
    }
    let null = libc::open(dev_null, libc::O_RDWR);
    if null >= 0 {
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 && null != 3 {
            libc::close(null);
        }
    }
    // Signals a terminal or a shell might send the supervisor's session: not ours to obey.
    libc::signal(libc::SIGINT, libc::SIG_IGN);
    libc::signal(libc::SIGHUP, libc::SIG_IGN);
    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    libc::sigemptyset(empty.as_mut_ptr());
    libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());

    let mut message = [0u8; 8];
    let mut filled = 0usize;
    loop {
        let n = libc::read(
            3,
            message.as_mut_ptr().add(filled) as *mut libc::c_void,
            8 - filled,
        );
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break; // the supervisor is gone
        }
        filled += n as usize;
        if filled < 8 {
            continue;
        }
        filled = 0;
        let op = i32::from_ne_bytes([message[0], message[1], message[2], message[3]]);
        let pgid = i32::from_ne_bytes([message[4], message[5], message[6], message[7]]);
        if op == WATCH && table.len() < table.capacity() {
            table.push(pgid);
        } else if op == UNWATCH {
            if let Some(i) = table.iter().position(|&g| g == pgid) {
                table.swap_remove(i);
            }
        }
    }
    for &pgid in table.iter() {
        if pgid > 1 {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    libc::_exit(0)
}
