//! SIGINT and SIGTERM, handled on a dedicated thread: the handler only writes the signal's
//! number to a pipe (`write` is async-signal-safe), and a thread reads the pipe and hands
//! each signal to the command over a channel.
//!
//! Signal masks are left alone: tools are spawned with `posix_spawn`, which hands them the
//! spawning thread's mask, and a tool must see SIGINT and SIGTERM as usual.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use crossbeam_channel::Receiver;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The write end of the pipe, for the handler (-1 until installed).
static PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(signal: nix::libc::c_int) {
    let fd = PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY-relevant: only write(2), which is async-signal-safe; errno is restored so
        // the interrupted code sees its own.
        let saved = nix::errno::Errno::last_raw();
        #[allow(unsafe_code)]
        // SAFETY: writes one byte from a valid stack buffer to a descriptor we own.
        unsafe {
            nix::libc::write(fd, &byte as *const u8 as *const nix::libc::c_void, 1);
        }
        nix::errno::Errno::set_raw(saved);
    }
}

/// Installs the handlers for SIGINT and SIGTERM; each signal arrives on the channel.
pub fn install() -> Result<Receiver<Signal>, String> {
    let (read, write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| format!("cannot create the signal pipe: {e}"))?;
    // The read end blocks; the write end must not (a full pipe drops the extra signal).
    let flags = nix::fcntl::fcntl(&read, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
    let _ = nix::fcntl::fcntl(
        &read,
        nix::fcntl::FcntlArg::F_SETFL(
            nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK,
        ),
    );
    PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(write); // lives as long as the process
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only calls async-signal-safe functions (write, errno access).
        #[allow(unsafe_code)]
        unsafe { nix::sys::signal::sigaction(signal, &action) }
            .map_err(|e| format!("cannot handle {signal}: {e}"))?;
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("aim-signals".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            loop {
                match nix::unistd::read(&read, &mut byte) {
                    Ok(1) => {
                        if let Ok(signal) = Signal::try_from(i32::from(byte[0])) {
                            if tx.send(signal).is_err() {
                                return;
                            }
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    _ => return,
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(rx)
}

/// The conventional exit code for a run ended by `signal` (128 + its number).
pub fn exit_code(signal: Signal) -> u8 {
    128u8.saturating_add(signal as u8)
}
