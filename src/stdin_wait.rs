//! "The tool is waiting for input": whether a process's main thread is blocked in `read(2)`
//! on its stdin, from `/proc/PID/syscall` (Linux), and [`StdinProbe`], the question as a
//! protocol asks it of whatever launched the tool (a local process answers from `/proc`, a
//! relay on another host from the far side's `/proc`).

use std::fmt;
use std::sync::Arc;

/// The `read` system call's number on this architecture.
#[cfg(target_arch = "x86_64")]
const SYS_READ: u64 = 0;
#[cfg(target_arch = "aarch64")]
const SYS_READ: u64 = 63;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYS_READ: u64 = u64::MAX;

/// Whether `pid`'s main thread is blocked reading file descriptor 0: `Some(true)` when it
/// waits for input, `Some(false)` when it is doing anything else (running, waiting on the
/// network, sleeping), `None` when this cannot be known (not Linux, no `/proc`, no permission:
/// reading `/proc/PID/syscall` needs the right to ptrace the process, which a parent has over
/// its children unless a security module forbids it).
///
/// ```
/// // This test process is not blocked reading its stdin right now.
/// let me = std::process::id() as i32;
/// assert_ne!(aim::protocol::blocked_reading_stdin(me), Some(true));
/// ```
pub fn blocked_reading_stdin(pid: i32) -> Option<bool> {
    if pid <= 0 || SYS_READ == u64::MAX {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    Some(parse(&text))
}

/// How a protocol asks "is the tool blocked reading its stdin?" of the launcher that started
/// the tool: `Some(true)` waiting for input, `Some(false)` doing anything else, `None` when it
/// cannot be known (then protocols fall back to a settle period). Cheap to clone; checking
/// never blocks.
///
/// ```
/// use aim::protocol::StdinProbe;
/// let me = std::process::id() as i32;
/// assert_ne!(StdinProbe::local(me).check(), Some(true));
/// assert_eq!(StdinProbe::unknown().check(), None);
/// assert_eq!(StdinProbe::new(|| Some(true)).check(), Some(true));
/// ```
#[derive(Clone)]
pub struct StdinProbe(Arc<dyn Fn() -> Option<bool> + Send + Sync>);

impl StdinProbe {
    /// Asks `check` each time.
    pub fn new(check: impl Fn() -> Option<bool> + Send + Sync + 'static) -> Self {
        StdinProbe(Arc::new(check))
    }

    /// Reads `/proc/PID/syscall` of local process `pid` ([`blocked_reading_stdin`]).
    pub fn local(pid: i32) -> Self {
        StdinProbe::new(move || blocked_reading_stdin(pid))
    }

    /// Always `None`: nothing can tell (a plain `ssh -T` without a relay).
    pub fn unknown() -> Self {
        StdinProbe::new(|| None)
    }

    /// Whether the tool is blocked reading its stdin right now (see the type's docs).
    pub fn check(&self) -> Option<bool> {
        (self.0)()
    }
}

impl fmt::Debug for StdinProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StdinProbe")
    }
}

/// `/proc/PID/syscall` reads `NR ARG1 ARG2 ...` (hex arguments) while blocked in a system
/// call, `running`, or `-1 ...` outside one.
fn parse(text: &str) -> bool {
    let mut fields = text.split_whitespace();
    let number = fields.next().and_then(|n| n.parse::<u64>().ok());
    let fd = fields
        .next()
        .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
    number == Some(SYS_READ) && fd == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn parses_the_syscall_line() {
        assert!(parse(
            "0 0x0 0x557a6d957250 0x2000 0x1c6 0x0 0x7f3a4894e6e8 0x7ffef68175f0 0x7f3a483162ec\n"
        ));
        // read(5, ...): a socket, not stdin.
        assert!(!parse(
            "0 0x5 0x557a6d957250 0x2000 0x0 0x0 0x0 0x7ffe 0x7f3a\n"
        ));
        // poll(...): waiting on the network.
        assert!(!parse(
            "7 0x7ffef6815ff8 0x1 0x927c0 0x0 0x0 0x0 0x7ffe 0x7f3a\n"
        ));
        assert!(!parse("running\n"));
        assert!(!parse("-1 0x7ffe 0x7f3a\n"));
    }

    #[test]
    fn a_child_waiting_on_its_stdin_is_seen_waiting() {
        use std::process::{Command, Stdio};
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut seen = None;
        for _ in 0..500 {
            seen = blocked_reading_stdin(pid);
            if seen != Some(false) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        drop(child.stdin.take());
        let _ = child.wait();
        assert_ne!(seen, Some(false), "cat never blocked reading stdin");
    }
}
