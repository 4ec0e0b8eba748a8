//! Running a short command (a hook, a git command) to completion within a deadline: its own
//! process group, stdout and stderr collected (the last 64 KiB of each), killed as a group
//! when the deadline passes, and always reaped. Waits in `poll(2)` on the pipes and a pidfd;
//! nothing sleeps.

use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The most output kept per stream.
const KEEP: usize = 64 * 1024;

/// How a command ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub(crate) fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exit code N" or "signal N", and the last stderr line, for error messages.
    pub(crate) fn describe(&self) -> String {
        let how = match (self.code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            (None, None) => "unknown status".into(),
        };
        let text = String::from_utf8_lossy(&self.stderr);
        match text.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!("{how}: {}", line.trim()),
            None => how,
        }
    }

    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `cmd` (stdin from `/dev/null`) until it exits or `timeout` passes; what is left of its
/// process group is killed either way. Blocks for at most `timeout` plus the kill.
///
/// # Errors
/// Why it could not start, or that it ran past `timeout` (with its last stderr line).
pub(crate) fn run(mut cmd: Command, timeout: Duration) -> Result<Finished, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let pid = Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + timeout;
    let mut out = child.stdout.take().map(OwnedFd::from);
    let mut err = child.stderr.take().map(OwnedFd::from);
    let pidfd = pidfd_open(pid);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut timed_out = false;
    loop {
        let exited = match &pidfd {
            Some(fd) => {
                let mut fds = Vec::with_capacity(3);
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                for stream in [&out, &err].into_iter().flatten() {
                    fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = u16::try_from(left.as_millis().min(60_000)).unwrap_or(60_000);
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(format!("poll failed: {e}")),
                }
                fds[0]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN))
            }
            // No pidfd (old kernels): the end of both pipes stands for the exit.
            None => {
                let mut fds: Vec<PollFd<'_>> = [&out, &err]
                    .into_iter()
                    .flatten()
                    .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                    .collect();
                if fds.is_empty() {
                    true
                } else {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = u16::try_from(left.as_millis().min(60_000)).unwrap_or(60_000);
                    let _ = poll(&mut fds, PollTimeout::from(ms));
                    false
                }
            }
        };
        read_some(&mut out, &mut stdout);
        read_some(&mut err, &mut stderr);
        if exited {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
    }
    // The leader is a zombie (exited) or alive (timed out): either way its pid, and so the
    // group id, cannot be reused until it is reaped below.
    let _ = killpg(pid, Signal::SIGKILL);
    let status = child.wait().map_err(|e| format!("cannot reap: {e}"))?;
    read_some(&mut out, &mut stdout);
    read_some(&mut err, &mut stderr);
    let finished = Finished {
        code: status.code(),
        signal: status.signal(),
        stdout,
        stderr,
    };
    if timed_out {
        return Err(format!(
            "ran past its timeout of {timeout:?} and was killed{}",
            match finished.describe().split_once(": ") {
                Some((_, line)) => format!(" (last stderr: {line})"),
                None => String::new(),
            }
        ));
    }
    Ok(finished)
}

/// Reads what `stream` holds now (without blocking), keeping the last [`KEEP`] bytes; closes
/// it at end of file.
fn read_some(stream: &mut Option<OwnedFd>, into: &mut Vec<u8>) {
    let Some(fd) = stream.as_ref() else { return };
    let _ = nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut file = std::fs::File::from(fd.try_clone().expect("dup of a pipe"));
    let mut buf = [0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => {
                *stream = None;
                break;
            }
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                if into.len() > KEEP {
                    into.drain(..into.len() - KEEP);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// A pidfd for `pid`, or `None` on kernels without `pidfd_open`.
#[allow(unsafe_code)]
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; we own the
    // descriptor only on success.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `sh -c command` in `dir`, with `env` added.
pub(crate) fn shell(command: &str, dir: &std::path::Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_output_and_exit_code() {
        let dir = std::env::temp_dir();
        let done = run(
            shell("echo out; echo err >&2; exit 3", &dir, &[]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(done.code, Some(3));
        assert_eq!(done.stdout_text(), "out\n");
        assert_eq!(done.describe(), "exit code 3: err");
    }

    #[test]
    fn kills_the_group_at_the_timeout() {
        let dir = std::env::temp_dir();
        let started = Instant::now();
        let err = run(
            shell("sleep 30 & echo $! > /dev/null; sleep 30", &dir, &[]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(err.contains("timeout"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn a_grandchild_holding_the_pipe_does_not_hold_us() {
        let dir = std::env::temp_dir();
        let done = run(
            shell("sleep 30 & echo started", &dir, &[]),
            Duration::from_secs(20),
        )
        .unwrap();
        assert!(done.success());
        assert_eq!(done.stdout_text(), "started\n");
    }
}
