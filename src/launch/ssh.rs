//! The ssh launcher: instances on other hosts, through the system `ssh` client (the user's
//! own config and keys), with an `aim relay` on the far side.
//!
//! Instance `i` runs on host `i % hosts`. Each host has a control connection
//! (`ssh -M -N`, a child of ours in its own process group, watched by the guardian) per
//! [`SESSIONS_PER_CONNECTION`] instances on it, which their `ssh` reuses through its
//! `ControlPath`: a launch waits until that connection listens, so a restart costs a
//! channel, not a handshake, and `-n 16` on one host makes 2 connections, not 17. A silent link ends within 15 s: with a relay, the I/O thread's pings go
//! unanswered for 8 s (`super::link`); without one (and for the control connection),
//! OpenSSH's keepalives (`ServerAliveInterval=3`, `ServerAliveCountMax=3`) end it about 12 s
//! after the host last sent anything. The remote command runs `aim relay` when it is there
//! and the tool under plain `ssh -T` (with a warning) when it is not (`super::link`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;
use parking_lot::Mutex;

use super::link::{Link, LinkShared, Mode, NO_RELAY};
use super::local::{spawn, ChildProcess};
use super::relay::RelayArgs;
use super::{HostCheck, Launch, Launched, Launcher};
use crate::error::{Error, Result};
use crate::hosts::HostsConfig;
use crate::spec::{ToolSpec, Transport};
use crate::state::ExitInfo;

/// Seconds between OpenSSH keepalives on a host's link; [`ALIVE_COUNT`] unanswered ones
/// are allowed, the next ends it.
const ALIVE_INTERVAL: u32 = 3;
/// Keepalives that may go unanswered.
const ALIVE_COUNT: u32 = 3;

/// Starts instances on hosts over `ssh`.
#[derive(Debug)]
pub(crate) struct SshLauncher {
    config: HostsConfig,
    hosts: Vec<SshHost>,
}

/// One host: its name as given and its control connections, one per
/// [`SESSIONS_PER_CONNECTION`] instances on it (made as they are needed).
#[derive(Debug)]
struct SshHost {
    dest: String,
    /// The control sockets' paths start with this; connection `k` adds `-k.ssh`.
    socket_prefix: String,
    connections: Mutex<Vec<Arc<Connection>>>,
}

/// Instances sharing one control connection. sshd refuses more sessions on one connection
/// than its `MaxSessions` (10 unless configured); two are left for a host check and a
/// restarted instance whose old channel is still closing.
const SESSIONS_PER_CONNECTION: usize = 8;

impl SshHost {
    /// Control connection `k` of this host.
    fn connection(&self, k: usize) -> Arc<Connection> {
        let mut all = self.connections.lock();
        while all.len() <= k {
            let socket = PathBuf::from(format!("{}-{}.ssh", self.socket_prefix, all.len()));
            all.push(Arc::new(Connection {
                socket,
                master: Mutex::new(None),
            }));
        }
        Arc::clone(&all[k])
    }
}

/// One control connection to a host: its socket and its `ssh -M -N`, when started.
#[derive(Debug)]
struct Connection {
    socket: PathBuf,
    master: Mutex<Option<Master>>,
}

/// A host's control connection: its `ssh -M -N` and, until it is ready, its streams (the
/// pidfd to wait on, stderr to quote if it fails).
#[derive(Debug)]
struct Master {
    process: ChildProcess,
    io: Option<super::ChildIo>,
}

/// How long a new control connection may take to listen on its socket.
const MASTER_READY: std::time::Duration = std::time::Duration::from_secs(15);

/// What `ssh` wrote on stderr so far (non-blocking), trimmed, on one line.
fn read_stderr(io: &mut super::ChildIo) -> String {
    use std::io::Read;
    let Some(fd) = io.stderr.take() else {
        return String::new();
    };
    let mut text = Vec::new();
    let _ = std::fs::File::from(fd).read_to_end(&mut text);
    String::from_utf8_lossy(&text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl SshLauncher {
    /// A launcher for `config.hosts` (at least one).
    pub(crate) fn new(config: HostsConfig) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let hosts = config
            .hosts
            .iter()
            .map(|dest| SshHost {
                dest: dest.clone(),
                socket_prefix: std::env::temp_dir()
                    .join(format!(
                        "aim-{}-{}",
                        std::process::id(),
                        NEXT.fetch_add(1, Ordering::Relaxed)
                    ))
                    .display()
                    .to_string(),
                connections: Mutex::new(Vec::new()),
            })
            .collect();
        SshLauncher { config, hosts }
    }

    /// `ssh` options every connection through control socket `socket` uses.
    fn common_args(&self, socket: &std::path::Path) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(file) = &self.config.ssh_config {
            args.push("-F".to_string());
            args.push(file.display().to_string());
        }
        for option in [
            "BatchMode=yes".to_string(),
            format!("ServerAliveInterval={ALIVE_INTERVAL}"),
            format!("ServerAliveCountMax={ALIVE_COUNT}"),
            format!("ControlPath={}", socket.display()),
        ] {
            args.push("-o".into());
            args.push(option);
        }
        args
    }

    /// Starts `host`'s control connection unless one runs; returns at once. Its `ssh` runs
    /// with `ConnectTimeout` [`CONNECT_TIMEOUT`], and any file left at its `ControlPath`
    /// (a killed run's socket) is removed first: `ssh` would refuse to listen there.
    fn start_master(&self, host: &SshHost, conn: &Connection, master: &mut Option<Master>) {
        if master
            .as_ref()
            .is_some_and(|m| m.process.try_reap().is_none())
        {
            return;
        }
        let _ = std::fs::remove_file(&conn.socket);
        let mut args = vec!["-M".to_string(), "-N".into(), "-T".into()];
        args.extend(self.common_args(&conn.socket));
        args.extend([
            "-o".into(),
            "ControlPersist=no".into(),
            "-o".into(),
            format!("ConnectTimeout={CONNECT_TIMEOUT}"),
            "--".into(),
        ]);
        args.push(host.dest.clone());
        let spec = ToolSpec::new("ssh-master", self.config.ssh_program.clone()).args(args);
        *master = match spawn(&spec, 0) {
            Ok((process, io)) => {
                log::debug!("{}: control connection pid {}", host.dest, process.pid());
                Some(Master {
                    process,
                    io: Some(io),
                })
            }
            Err(e) => {
                log::warn!("{}: cannot start the control connection: {e}", host.dest);
                None
            }
        };
    }

    /// Starts `host`'s control connection unless one runs, and waits (up to
    /// [`MASTER_READY`]) until it listens on its socket, so that the instance's `ssh` opens
    /// a channel on it instead of a connection of its own. Concurrent launches on one host
    /// wait for the same connection (the host's lock is held meanwhile).
    ///
    /// # Errors
    /// [`Error::Spawn`] (program `ssh`, the host and `ssh`'s own last words in the reason)
    /// when the control connection cannot start, ends before it is ready, or is not ready
    /// in time (then it is killed).
    fn ready_master(
        &self,
        host: &SshHost,
        conn: &Connection,
        spec: &ToolSpec,
        instance: usize,
    ) -> Result<()> {
        use nix::poll::{poll, PollFd, PollFlags};
        use std::os::fd::AsFd;
        let mut master = conn.master.lock();
        self.start_master(host, conn, &mut master);
        let fail = |reason: String| Error::Spawn {
            tool: spec.name.clone(),
            instance,
            program: self.config.ssh_program.clone(),
            reason: format!("the control connection to {}: {reason}", host.dest),
            source: std::io::Error::other(reason),
        };
        let Some(m) = master.as_mut() else {
            return Err(fail("ssh could not be started".into()));
        };
        let deadline = Instant::now() + MASTER_READY;
        loop {
            // OpenSSH binds and listens on a temporary name, then links it to the
            // `ControlPath`: once the path is there, the connection takes channels.
            if conn.socket.exists() {
                m.io = None;
                return Ok(());
            }
            if let Some(exit) = m.process.try_reap() {
                let words = m.io.as_mut().map(read_stderr).unwrap_or_default();
                *master = None;
                return Err(fail(format!(
                    "ssh ended ({exit:?}) before it was ready: {words}"
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                let words = m.io.as_mut().map(read_stderr).unwrap_or_default();
                m.process.signal_group(Signal::SIGKILL);
                m.process.wait_gone(std::time::Duration::from_secs(1));
                *master = None;
                return Err(fail(format!(
                    "not ready within {} s: {words}",
                    MASTER_READY.as_secs()
                )));
            }
            // The socket's appearance has no event to wait on; its exit does (the pidfd).
            let step = crate::process::poll_timeout(
                deadline.min(now + std::time::Duration::from_millis(10)),
                now,
            );
            match m.io.as_ref().and_then(|io| io.pidfd.as_ref()) {
                Some(fd) => {
                    let _ = poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], step);
                }
                None => {
                    let _ = poll(&mut [], step);
                }
            }
        }
    }

    /// The command line the far side's shell runs: the relay when there is one, the tool
    /// itself after [`NO_RELAY`] when there is not.
    fn remote_command(&self, spec: &ToolSpec) -> String {
        let relay = RelayArgs {
            cwd: spec.cwd.clone(),
            create_cwd: spec.create_cwd,
            env_clear: spec.env.clear,
            env_remove: spec.env.remove.clone(),
            pty: (spec.transport == Transport::Pty).then_some(spec.pty_size),
            env: spec
                .env
                .set
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            program: spec.program.clone(),
            args: spec.args.clone(),
        };
        let aim = quote(&self.config.remote_aim);
        let relay_line: Vec<String> = relay.to_args().iter().map(|a| quote(a)).collect();
        let mut plain = Vec::new();
        if spec.transport == Transport::Pty {
            // Plain `ssh -T` has no terminal to give; say so where the instance's stderr
            // tail shows it.
            plain.push(format!(
                "echo {} >&2; exit 126;",
                quote(&format!(
                    "aim: a PTY on this host needs aim there ({} not found)",
                    self.config.remote_aim
                ))
            ));
        }
        if let Some(cwd) = &spec.cwd {
            if spec.create_cwd {
                plain.push(format!("mkdir -p {};", quote(cwd)));
            }
            plain.push(format!("cd {} || exit 126;", quote(cwd)));
        }
        plain.push("exec env".to_string());
        if spec.env.clear {
            plain.push("-i".into());
        }
        for k in &spec.env.remove {
            plain.push(format!("-u {}", quote(k)));
        }
        for (k, v) in &spec.env.set {
            plain.push(quote(&format!("{k}={v}")));
        }
        plain.push(quote(&spec.program));
        plain.extend(spec.args.iter().map(|a| quote(a)));
        format!(
            "if command -v {aim} >/dev/null 2>&1; then exec {aim} relay {}; fi; printf '{}'; {}",
            relay_line.join(" "),
            String::from_utf8_lossy(NO_RELAY).replace('\n', "\\n"),
            plain.join(" ")
        )
    }
}

impl Launcher for SshLauncher {
    fn launch(&self, spec: &ToolSpec, instance: usize) -> Result<Launch> {
        let host = &self.hosts[instance % self.hosts.len()];
        let conn = host.connection(instance / self.hosts.len() / SESSIONS_PER_CONNECTION);
        self.ready_master(host, &conn, spec, instance)?;
        let mut args = vec!["-T".to_string()];
        args.extend(self.common_args(&conn.socket));
        args.extend(["-o".into(), "ControlMaster=no".into(), "--".into()]);
        args.push(host.dest.clone());
        args.push(self.remote_command(spec));
        let ssh = ToolSpec::new(spec.name.clone(), self.config.ssh_program.clone()).args(args);
        let (process, mut io) = spawn(&ssh, instance)?;
        let shared = Arc::new(LinkShared::new(host.dest.clone()));
        io.link = Some(Box::new(Link::new(Arc::clone(&shared))));
        Ok(Launch {
            process: Arc::new(RemoteProcess {
                ssh: process,
                link: shared,
                started: Instant::now(),
            }),
            io,
        })
    }

    fn check_host(&self, host: usize) -> Option<Result<Box<dyn HostCheck>>> {
        let host = self.hosts.get(host)?;
        // A host that was down lost its control connection: start a new one for the
        // instances that follow a passed check (without waiting for it: this check makes
        // its own connection when the control connection is not listening yet).
        let conn = host.connection(0);
        self.start_master(host, &conn, &mut conn.master.lock());
        let mut args = vec!["-T".to_string(), "-n".into()];
        args.extend(self.common_args(&conn.socket));
        args.extend([
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            format!("ConnectTimeout={CONNECT_TIMEOUT}"),
            "--".into(),
            host.dest.clone(),
            "true".into(),
        ]);
        let spec = ToolSpec::new("ssh-check", self.config.ssh_program.clone()).args(args);
        Some(
            spawn(&spec, 0)
                .map(|(process, io)| Box::new(SshCheck { process, _io: io }) as Box<dyn HostCheck>),
        )
    }
}

/// Seconds a host check's `ssh` may take to connect (it goes through the control connection
/// when that one is up).
const CONNECT_TIMEOUT: u32 = 5;

/// `ssh HOST true`, through the host's control connection when it is up.
#[derive(Debug)]
struct SshCheck {
    process: ChildProcess,
    _io: super::ChildIo,
}

impl HostCheck for SshCheck {
    fn poll(&mut self) -> Option<bool> {
        self.process.try_reap().map(|e| e.success())
    }
}

impl Drop for SshCheck {
    fn drop(&mut self) {
        if self.process.try_reap().is_none() {
            self.process.signal_group(Signal::SIGKILL);
            self.process.wait_gone(std::time::Duration::from_secs(1));
        }
    }
}

impl Drop for SshLauncher {
    fn drop(&mut self) {
        for host in &self.hosts {
            for conn in host.connections.lock().iter() {
                if let Some(Master {
                    process: master, ..
                }) = conn.master.lock().take()
                {
                    master.signal_group(Signal::SIGTERM);
                    master.wait_gone(std::time::Duration::from_secs(2));
                }
                let _ = std::fs::remove_file(&conn.socket);
            }
        }
    }
}

/// A tool on another host: the local `ssh` client carrying it, and what the link learned.
#[derive(Debug)]
pub(crate) struct RemoteProcess {
    ssh: ChildProcess,
    link: Arc<LinkShared>,
    #[allow(dead_code)]
    started: Instant,
}

impl Launched for RemoteProcess {
    fn pid(&self) -> i32 {
        self.ssh.pid()
    }

    fn exit(&self) -> Option<ExitInfo> {
        self.ssh
            .exit()
            .map(|e| self.link.remote_exit().unwrap_or(e))
    }

    fn try_reap(&self) -> Option<ExitInfo> {
        self.ssh
            .try_reap()
            .map(|e| self.link.remote_exit().unwrap_or(e))
    }

    /// Through the relay; SIGKILL also ends the local `ssh` (the relay then kills the tool's
    /// group when it sees the link end). Without a relay, the local `ssh` gets the signal.
    fn signal_group(&self, signal: Signal) {
        if self.link.mode() == Mode::Relay && self.ssh.exit().is_none() {
            self.link.queue_signal(signal, true);
            if signal == Signal::SIGKILL {
                self.ssh.signal_group(signal);
            }
        } else {
            self.ssh.signal_group(signal);
        }
    }

    fn signal_tool(&self, signal: Signal) {
        if self.link.mode() == Mode::Relay {
            self.link.queue_signal(signal, false);
        } else {
            self.ssh.signal_tool(signal);
        }
    }

    fn reading_stdin(&self) -> Option<bool> {
        self.link.reading_stdin()
    }

    fn host(&self) -> Option<&str> {
        Some(&self.link.host)
    }

    fn link_lost(&self) -> bool {
        self.ssh.exit().is_some() && self.link.remote_exit().is_none()
    }
}

/// `s` quoted for a POSIX shell.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_remote_shell() {
        assert_eq!(quote("python3"), "python3");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn the_remote_command_prefers_the_relay() {
        let launcher = SshLauncher::new(HostsConfig::new(vec!["h1".into()]));
        let spec = ToolSpec::new("py", "python3").args(["-i", "-c", "x = 'a b'"]);
        let line = launcher.remote_command(&spec);
        assert!(line.starts_with("if command -v aim >/dev/null 2>&1; then exec aim relay -- python3 -i -c 'x = '\\''a b'\\'''; fi;"), "{line}");
        assert!(
            line.ends_with("exec env python3 -i -c 'x = '\\''a b'\\'''"),
            "{line}"
        );
    }

    #[test]
    fn the_environment_and_a_pty_travel_both_ways() {
        let launcher = SshLauncher::new(HostsConfig::new(vec!["h1".into()]));
        let spec = ToolSpec::new("t", "tool")
            .cwd("w d")
            .create_cwd(true)
            .env_clear()
            .env_remove("HOME")
            .env("A", "1")
            .transport(Transport::Pty);
        let line = launcher.remote_command(&spec);
        assert!(
            line.contains(
                "exec aim relay --cwd 'w d' --create-cwd --pty 24x80 --env-clear \
                 --env-remove HOME --env A=1 -- tool;"
            ),
            "{line}"
        );
        assert!(line.contains("needs aim there"), "{line}");
        assert!(
            line.ends_with("mkdir -p 'w d'; cd 'w d' || exit 126; exec env -i -u HOME A=1 tool"),
            "{line}"
        );
    }
}
