//! Launching: how an instance's process is started, signalled, watched and reaped.
//!
//! A [`Launcher`] starts a tool for an instance and hands back a [`Launched`] process (the
//! handle to signal, reap, and ask "is the tool blocked reading its stdin?") and its
//! [`ChildIo`] (the non-blocking descriptors the I/O thread polls). The I/O thread owns what
//! was launched; it never touches a raw pid, and protocols ask the launched process (through
//! [`StdinProbe`](crate::stdin_wait::StdinProbe)) rather than reading `/proc` themselves.
//!
//! Shipped: [`LocalLauncher`] (a child of this process, in its own process group) and
//! [`SshLauncher`] (a tool on another host, behind `ssh` and an `aim relay` there, see
//! `relay` and `link`).

mod link;
mod local;
pub(crate) mod relay;
mod ssh;
mod wire;

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::sys::signal::Signal;

use crate::error::Result;
use crate::spec::ToolSpec;
use crate::state::ExitInfo;

pub(crate) use link::Link;
pub(crate) use local::LocalLauncher;
pub(crate) use ssh::SshLauncher;

/// Starts tool processes. Shared by the instances of a pool; object safe.
pub(crate) trait Launcher: Send + Sync + fmt::Debug {
    /// Starts `spec` (already expanded for its instance) as instance `instance`.
    ///
    /// # Errors
    /// [`Error::Spawn`](crate::Error::Spawn) when the program cannot be started;
    /// [`Error::Io`](crate::Error::Io) when pipes or a PTY cannot be created.
    fn launch(&self, spec: &ToolSpec, instance: usize) -> Result<Launch>;

    /// Starts a check that host `host` (an index into the cluster's hosts) answers, without
    /// waiting for it. `None`: this launcher has no hosts.
    ///
    /// # Errors
    /// [`Error::Spawn`](crate::Error::Spawn) when the check cannot be started (a failed check).
    fn check_host(&self, host: usize) -> Option<Result<Box<dyn HostCheck>>> {
        let _ = host;
        None
    }
}

/// A running check that a host answers (see [`Launcher::check_host`]). Dropping it kills
/// and reaps what is left of it.
pub(crate) trait HostCheck: Send + fmt::Debug {
    /// `Some(true)`: passed; `Some(false)`: failed; `None`: still running. Never blocks.
    fn poll(&mut self) -> Option<bool>;
}

/// What a launch hands back.
#[derive(Debug)]
pub(crate) struct Launch {
    /// The process to signal, watch and reap.
    pub process: Arc<dyn Launched>,
    /// Its streams, for the I/O thread.
    pub io: ChildIo,
}

/// A launched process (running, or exited and not yet reaped), watched by its instance's I/O
/// thread and the monitor. Every method is safe from any thread and never blocks.
pub(crate) trait Launched: Send + Sync + fmt::Debug {
    /// The id of the local process that was started (the tool itself, or the program that
    /// carries it elsewhere); its process group has the same id.
    fn pid(&self) -> i32;

    /// The exit status, once reaped.
    fn exit(&self) -> Option<ExitInfo>;

    /// Reaps the process if it has exited, without blocking: the first caller that sees the
    /// exit reaps (killing what is left of its group first); later callers get the recorded
    /// status. `None` while it runs.
    fn try_reap(&self) -> Option<ExitInfo>;

    /// Sends `signal` to the tool's whole process group (nothing once reaped).
    fn signal_group(&self, signal: Signal);

    /// Sends `signal` to the tool alone, not its group (SIGINT to cancel a turn).
    fn signal_tool(&self, signal: Signal);

    /// Whether the tool is blocked reading its stdin (`None`: cannot be known).
    fn reading_stdin(&self) -> Option<bool>;

    /// The host the tool runs on (`None`: this machine).
    fn host(&self) -> Option<&str> {
        None
    }

    /// Whether it ended because its link to another host was lost: the carrying process
    /// (`ssh`) exited and the far side never reported the tool's exit. False while it runs,
    /// and always for local processes.
    fn link_lost(&self) -> bool {
        false
    }
}

/// The parent's ends of a launched process's streams, all non-blocking.
#[derive(Debug)]
pub(crate) struct ChildIo {
    /// Where prompts are written (a pipe, or the PTY master).
    pub stdin: Option<OwnedFd>,
    /// Where answers are read (a pipe, or the PTY master).
    pub stdout: Option<OwnedFd>,
    /// The stderr pipe.
    pub stderr: Option<OwnedFd>,
    /// Readable once the process exits (Linux 5.3+); `None` where pidfds are unavailable
    /// (then the I/O thread calls [`Launched::try_reap`] every 100 ms).
    pub pidfd: Option<OwnedFd>,
    /// Whether stdout is a PTY master (it reports `EIO` instead of EOF).
    pub pty: bool,
    /// For a tool on another host: the framed link its stdin and stdout carry (`None`:
    /// the descriptors are the tool's own streams).
    pub link: Option<Box<Link>>,
}

#[cfg(test)]
pub(crate) mod fake;
