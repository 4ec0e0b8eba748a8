//! Facts about processes and descriptors that any launcher needs: the open-file budget of
//! a pool, poll timeouts for deadlines, and resident memory from `/proc`.

use std::os::fd::OwnedFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::PollTimeout;

use crate::error::{Error, Result};

/// For EMFILE/ENFILE, the open-file limit and what the pool needs, in words.
pub(crate) fn fd_limit_reason(errno: Option<i32>) -> Option<String> {
    let errno = errno?;
    if errno != Errno::EMFILE as i32 && errno != Errno::ENFILE as i32 {
        return None;
    }
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, hard)| format!("the limit (RLIMIT_NOFILE) is {soft}, hard limit {hard}"))
        .unwrap_or_else(|_| "the limit (RLIMIT_NOFILE) is unknown".to_string());
    Some(format!(
        "too many open files: {limit}; each instance needs about {FDS_PER_INSTANCE} \
         descriptors (raise it with `ulimit -n`)"
    ))
}

/// File descriptors one instance holds: three pipes (or a PTY), a pidfd and an eventfd.
pub(crate) const FDS_PER_INSTANCE: usize = 5;
/// More held while an instance's process is being spawned (the child's ends of its pipes);
/// instances start in parallel, so all of them may hold these at once.
const FDS_WHILE_SPAWNING: usize = 3;

/// Checks, before starting `count` more instances, that the open-file limit leaves room for
/// them (raising the soft limit up to the hard one when `raise`).
///
/// # Errors
/// [`Error::InvalidConfig`] (field `count`) naming the limit and the need.
pub(crate) fn ensure_fd_budget(count: usize, raise: bool) -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return Ok(());
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
    // A little room for the pipes of a spawn in progress and the guardian.
    let need = open + (count * (FDS_PER_INSTANCE + FDS_WHILE_SPAWNING)) as u64 + 16;
    if need <= soft {
        return Ok(());
    }
    if raise && need <= hard && setrlimit(Resource::RLIMIT_NOFILE, need.max(soft), hard).is_ok() {
        log::info!("raised the open-file limit from {soft} to {need} (hard limit {hard})");
        return Ok(());
    }
    Err(Error::config(
        "count",
        format!(
            "{count} more instances need about {need} open files ({FDS_PER_INSTANCE} each, \
             {FDS_WHILE_SPAWNING} more while starting; {open} open now), over the limit \
             (RLIMIT_NOFILE) of {soft} (hard limit {hard}); \
             raise it with `ulimit -n`{}",
            if need <= hard {
                ", or let aim raise it (raise_fd_limit, --raise-fd-limit)"
            } else {
                ""
            }
        ),
    ))
}

/// An [`Error::Io`] for a failed descriptor creation that names the open-file limit when
/// that is the cause.
pub(crate) fn fd_error(context: &str, errno: Errno) -> Error {
    match fd_limit_reason(Some(errno as i32)) {
        Some(reason) => Error::io(format!("{context}: {reason}"), errno.into()),
        None => Error::io(context, errno.into()),
    }
}

pub(crate) fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| Error::io("fcntl(F_GETFL)", e.into()))?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(|e| Error::io("fcntl(F_SETFL)", e.into()))?;
    Ok(())
}

/// A poll timeout for `deadline` seen from `now`, rounded up to whole milliseconds.
pub(crate) fn poll_timeout(deadline: Instant, now: Instant) -> PollTimeout {
    let left = deadline.saturating_duration_since(now);
    let mut ms = left.as_millis();
    if left.as_nanos() > ms * 1_000_000 {
        ms += 1;
    }
    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

/// Resident memory of process `pid`, in bytes (`VmRSS` from `/proc/PID/status`), plus that
/// of all its descendants when `descendants` is true. `None` when `pid` cannot be read
/// (gone, not positive, or not Linux). Pids are `i32` (`pid_t`) throughout the crate.
///
/// ```
/// let me = std::process::id() as i32;
/// let me = aim::resident_memory_bytes(me, false).unwrap();
/// assert!(me > 0);
/// ```
pub fn resident_memory_bytes(pid: i32, descendants: bool) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let own = vm_rss_bytes(pid)?;
    if !descendants {
        return Some(own);
    }
    let mut total = own;
    let mut stack = children_of(pid);
    let mut seen = 0usize;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 10_000 {
            break;
        }
        total += vm_rss_bytes(p).unwrap_or(0);
        stack.extend(children_of(p));
    }
    Some(total)
}

fn vm_rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| {
            std::fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}
