//! The relay: the far side of an instance on another host (`aim relay -- TOOL ARGS`, started
//! through `ssh` the way rsync and mosh start theirs).
//!
//! It starts the tool with the local launcher (its own process group, the relay's guardian
//! watching it), forwards the tool's stdout and stderr and the supervisor's input as frames
//! (`super::wire`) over its own stdin and stdout, carries signals and "the tool is blocked
//! reading its stdin" on the same link, reports the exit status, answers the supervisor's
//! pings (so the supervisor notices a silent link, see `super::link`), and kills the tool's
//! whole group as soon as the link ends: end of file or an error on its stdin, a broken
//! stdout, or no frame from the supervisor for [`LINK_SILENCE`] (it pings every
//! [`PING_EVERY`]).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::wire::{self, Decoder};
use super::{Launched, Launcher, LocalLauncher};
use crate::process::poll_timeout;
use crate::spec::ToolSpec;

/// How often the supervisor pings the relay.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(2);
/// How long the relay waits without hearing from the supervisor before it ends the tool
/// (five pings missed).
pub(crate) const LINK_SILENCE: Duration = Duration::from_secs(10);
/// How long the tool gets after SIGTERM, once the link is gone, before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// Longest pause between "is it reading stdin?" checks while the tool is busy.
const CHECK_MAX: Duration = Duration::from_millis(50);
/// Output held for a slow link before the relay stops reading the tool.
const OUT_CAP: usize = 1 << 20;

/// What `aim relay` was asked to start.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RelayArgs {
    pub cwd: Option<String>,
    /// Create `cwd` when it is missing.
    pub create_cwd: bool,
    /// Start the tool from an empty environment.
    pub env_clear: bool,
    /// Variables removed from the tool's environment.
    pub env_remove: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run the tool on a PTY of this size (`None`: pipes).
    pub pty: Option<crate::spec::PtySize>,
    pub program: String,
    pub args: Vec<String>,
}

impl RelayArgs {
    /// Parses `[--cwd DIR [--create-cwd]] [--pty ROWSxCOLS] [--env-clear]
    /// [--env-remove KEY]... [--env KEY=VALUE]... -- PROGRAM [ARGS...]`.
    ///
    /// # Errors
    /// The problem, in words.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut parsed = RelayArgs::default();
        let mut it = args.iter();
        loop {
            match it.next().map(String::as_str) {
                Some("--cwd") => {
                    parsed.cwd = Some(it.next().ok_or("--cwd needs a directory")?.clone())
                }
                Some("--create-cwd") => parsed.create_cwd = true,
                Some("--env-clear") => parsed.env_clear = true,
                Some("--pty") => {
                    let size = it.next().ok_or("--pty needs ROWSxCOLS")?;
                    let (rows, cols) = size
                        .split_once('x')
                        .and_then(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)))
                        .ok_or("--pty needs ROWSxCOLS")?;
                    parsed.pty = Some(crate::spec::PtySize { rows, cols });
                }
                Some("--env-remove") => parsed
                    .env_remove
                    .push(it.next().ok_or("--env-remove needs a name")?.clone()),
                Some("--env") => {
                    let pair = it.next().ok_or("--env needs KEY=VALUE")?;
                    let (k, v) = pair.split_once('=').ok_or("--env needs KEY=VALUE")?;
                    parsed.env.push((k.to_string(), v.to_string()));
                }
                Some("--") => break,
                Some(other) => return Err(format!("unknown relay option {other:?}")),
                None => {
                    return Err(
                        "usage: aim relay [--cwd DIR [--create-cwd]] [--pty ROWSxCOLS] \
                         [--env-clear] [--env-remove K]... [--env K=V]... -- PROGRAM [ARGS...]"
                            .into(),
                    )
                }
            }
        }
        parsed.program = it.next().ok_or("no program after --")?.clone();
        parsed.args = it.cloned().collect();
        Ok(parsed)
    }

    /// These arguments as the `aim relay` command line (without `aim relay`).
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(cwd) = &self.cwd {
            out.extend(["--cwd".to_string(), cwd.clone()]);
        }
        if self.create_cwd {
            out.push("--create-cwd".into());
        }
        if let Some(size) = self.pty {
            out.extend(["--pty".to_string(), format!("{}x{}", size.rows, size.cols)]);
        }
        if self.env_clear {
            out.push("--env-clear".into());
        }
        for k in &self.env_remove {
            out.extend(["--env-remove".to_string(), k.clone()]);
        }
        for (k, v) in &self.env {
            out.extend(["--env".to_string(), format!("{k}={v}")]);
        }
        out.push("--".into());
        out.push(self.program.clone());
        out.extend(self.args.iter().cloned());
        out
    }
}

/// Runs `aim relay [--cwd DIR [--create-cwd]] [--pty ROWSxCOLS] [--env-clear]
/// [--env-remove KEY]... [--env KEY=VALUE]... -- PROGRAM [ARGS...]`: the far side of an
/// instance on another host, which the supervisor starts through `ssh` (see
/// `ClusterBuilder::hosts`). It speaks aim's framed protocol on this process's stdin and
/// stdout, starts the program in its own process group, and kills that group when the link
/// ends (end of input, a broken pipe, or 10 s without a keepalive). Blocks until the
/// program exits or the link ends; returns the process exit code: 0 after the program's
/// exit was reported, 1 when the link ended first, 2 for bad arguments.
pub fn run_relay(args: &[String]) -> i32 {
    let parsed = match RelayArgs::parse(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("aim relay: {e}");
            return 2;
        }
    };
    let mut spec = ToolSpec::new("relay", parsed.program.clone()).args(parsed.args.clone());
    if let Some(size) = parsed.pty {
        spec = spec.transport(crate::spec::Transport::Pty).pty_size(size);
    }
    if parsed.env_clear {
        spec = spec.env_clear();
    }
    for k in &parsed.env_remove {
        spec = spec.env_remove(k.clone());
    }
    for (k, v) in &parsed.env {
        spec = spec.env(k.clone(), v.clone());
    }
    if let Some(cwd) = &parsed.cwd {
        spec = spec.cwd(cwd.clone());
        spec.create_cwd = parsed.create_cwd;
    }
    let link_in = std::io::stdin().as_fd().try_clone_to_owned();
    let link_out = std::io::stdout().as_fd().try_clone_to_owned();
    let (Ok(link_in), Ok(link_out)) = (link_in, link_out) else {
        eprintln!("aim relay: cannot use stdin/stdout");
        return 1;
    };
    for fd in [&link_in, &link_out] {
        let _ = crate::process::set_nonblocking(fd);
    }
    let mut relay = Relay {
        link_in: Some(link_in),
        link_out,
        to_link: Vec::new(),
        decoder: Decoder::default(),
        heard: Instant::now(),
    };
    let launched = match LocalLauncher.launch(&spec, 0) {
        Ok(launched) => launched,
        Err(e) => {
            wire::encode(wire::FAILED, e.to_string().as_bytes(), &mut relay.to_link);
            relay.flush(Instant::now() + Duration::from_secs(5));
            return 0;
        }
    };
    relay.run(launched)
}

struct Relay {
    link_in: Option<OwnedFd>,
    link_out: OwnedFd,
    to_link: Vec<u8>,
    decoder: Decoder,
    heard: Instant,
}

/// What the supervisor asked for in one batch of frames.
#[derive(Default)]
struct Asked {
    input: Vec<u8>,
    close_input: bool,
    signals: Vec<(Signal, bool)>,
    /// A ping asked for an answer.
    pong: bool,
}

impl Relay {
    fn run(&mut self, launched: super::Launch) -> i32 {
        let super::Launch { process, io } = launched;
        let mut tool_in = io.stdin;
        let mut tool_out = io.stdout;
        let mut tool_err = io.stderr;
        let pidfd = io.pidfd;
        let mut hello = (process.pid() as u32).to_be_bytes().to_vec();
        hello.push(wire::HELLO_ANSWERS_PINGS);
        wire::encode(wire::HELLO, &hello, &mut self.to_link);
        let mut input: Vec<u8> = Vec::new();
        let mut close_input = false;
        // When to look next whether the tool reads stdin, and the pause after that.
        let mut check: Option<(Instant, Duration)> = None;
        let mut reported = false;
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now.saturating_duration_since(self.heard) >= LINK_SILENCE {
                eprintln!(
                    "aim relay: nothing from the supervisor for {LINK_SILENCE:?}; ending the tool"
                );
                return end_tool(&*process, pidfd.as_ref());
            }
            let mut deadline = self.heard + LINK_SILENCE;
            if let Some((at, _)) = check {
                deadline = deadline.min(at);
            }
            if pidfd.is_none() {
                // No pidfd: look for the exit now and then.
                deadline = deadline.min(now + Duration::from_millis(100));
            }
            let room = self.to_link.len() < OUT_CAP;
            let (mut r_in, mut r_out, mut r_err, mut w_tool, mut w_link, mut r_pid) =
                (None, None, None, None, None, None);
            {
                let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(6);
                if let Some(fd) = &self.link_in {
                    add(&mut fds, fd.as_fd(), PollFlags::POLLIN, &mut r_in);
                }
                if room {
                    if let Some(fd) = &tool_out {
                        add(&mut fds, fd.as_fd(), PollFlags::POLLIN, &mut r_out);
                    }
                    if let Some(fd) = &tool_err {
                        add(&mut fds, fd.as_fd(), PollFlags::POLLIN, &mut r_err);
                    }
                }
                if let Some(fd) = &tool_in {
                    if !input.is_empty() {
                        add(&mut fds, fd.as_fd(), PollFlags::POLLOUT, &mut w_tool);
                    }
                }
                if !self.to_link.is_empty() {
                    add(
                        &mut fds,
                        self.link_out.as_fd(),
                        PollFlags::POLLOUT,
                        &mut w_link,
                    );
                }
                if let Some(fd) = &pidfd {
                    add(&mut fds, fd.as_fd(), PollFlags::POLLIN, &mut r_pid);
                }
                match poll(&mut fds, poll_timeout(deadline, now)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("aim relay: poll failed: {e}");
                        return end_tool(&*process, pidfd.as_ref());
                    }
                }
                let fired = |slot: Option<usize>| {
                    slot.and_then(|i| fds[i].revents())
                        .is_some_and(|r| !r.is_empty())
                };
                (r_in, r_out, r_err, w_tool, w_link, r_pid) = (
                    fired(r_in).then_some(0),
                    fired(r_out).then_some(0),
                    fired(r_err).then_some(0),
                    fired(w_tool).then_some(0),
                    fired(w_link).then_some(0),
                    fired(r_pid).then_some(0),
                );
            }
            if w_link.is_some() && !self.write_link() {
                return end_tool(&*process, pidfd.as_ref());
            }
            if r_in.is_some() {
                match self.read_link(&mut scratch) {
                    Some(asked) => {
                        if !asked.input.is_empty() {
                            reported = false;
                        }
                        input.extend_from_slice(&asked.input);
                        close_input |= asked.close_input;
                        if asked.pong {
                            wire::encode(wire::PONG, b"", &mut self.to_link);
                        }
                        for (signal, group) in asked.signals {
                            if group {
                                process.signal_group(signal);
                            } else {
                                process.signal_tool(signal);
                            }
                        }
                    }
                    None => return end_tool(&*process, pidfd.as_ref()),
                }
            }
            if w_tool.is_some() || (!input.is_empty() && tool_in.is_some()) {
                write_tool(&mut tool_in, &mut input);
            }
            if close_input && input.is_empty() {
                tool_in = None;
            }
            let mut output = false;
            for (slot, fd, kind) in [
                (r_out, &mut tool_out, wire::STDOUT),
                (r_err, &mut tool_err, wire::STDERR),
            ] {
                if slot.is_some() {
                    output |= self.forward(fd, kind, &mut scratch);
                }
            }
            if output {
                reported = false;
                check = Some((Instant::now(), Duration::from_millis(1)));
            }
            let exited = r_pid.is_some() || pidfd.is_none();
            if exited {
                if let Some(exit) = process.try_reap() {
                    for (fd, kind) in [(&mut tool_out, wire::STDOUT), (&mut tool_err, wire::STDERR)]
                    {
                        while self.forward(fd, kind, &mut scratch) {}
                    }
                    wire::encode(wire::EXIT, &wire::exit_payload(exit), &mut self.to_link);
                    self.flush(Instant::now() + Duration::from_secs(5));
                    return 0;
                }
            }
            let now = Instant::now();
            if let Some((at, pause)) = check {
                if now >= at && !reported {
                    match process.reading_stdin() {
                        Some(true) => {
                            wire::encode(wire::READING, b"", &mut self.to_link);
                            reported = true;
                            check = None;
                        }
                        Some(false) => check = Some((now + pause, (pause * 2).min(CHECK_MAX))),
                        None => {
                            wire::encode(wire::READING, b"?", &mut self.to_link);
                            reported = true;
                            check = None;
                        }
                    }
                }
            }
            if reported {
                check = None;
            }
        }
    }

    /// Reads frames from the supervisor; `None` when the link ended.
    fn read_link(&mut self, scratch: &mut [u8]) -> Option<Asked> {
        let fd = self.link_in.as_ref()?;
        let mut asked = Asked::default();
        loop {
            match nix::unistd::read(fd, scratch) {
                Ok(0) => return None,
                Ok(n) => {
                    self.heard = Instant::now();
                    let fed = self
                        .decoder
                        .feed(&scratch[..n], |kind, payload| match kind {
                            wire::INPUT => asked.input.extend_from_slice(payload),
                            wire::CLOSE_INPUT => asked.close_input = true,
                            wire::PING => asked.pong |= !payload.is_empty(),
                            wire::SIGNAL => {
                                let signal = payload
                                    .first()
                                    .and_then(|&s| Signal::try_from(i32::from(s)).ok());
                                if let Some(signal) = signal {
                                    asked.signals.push((signal, payload.get(1) == Some(&1)));
                                }
                            }
                            _ => {}
                        });
                    if let Err(garbled) = fed {
                        eprintln!("aim relay: not a supervisor on stdin: {:?}", garbled.0);
                        return None;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Some(asked),
                Err(_) => return None,
            }
        }
    }

    /// Reads what `fd` has and frames it; false at end of file or when nothing was there.
    fn forward(&mut self, fd: &mut Option<OwnedFd>, kind: u8, scratch: &mut [u8]) -> bool {
        let Some(f) = fd.as_ref() else { return false };
        match nix::unistd::read(f, scratch) {
            Ok(0) => {
                *fd = None;
                false
            }
            Ok(n) => {
                wire::encode(kind, &scratch[..n], &mut self.to_link);
                true
            }
            Err(Errno::EAGAIN | Errno::EINTR) => false,
            Err(_) => {
                *fd = None;
                false
            }
        }
    }

    /// Writes what the link takes now; false when it is broken.
    fn write_link(&mut self) -> bool {
        while !self.to_link.is_empty() {
            match nix::unistd::write(&self.link_out, &self.to_link) {
                Ok(n) => {
                    self.to_link.drain(..n);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return true,
                Err(_) => return false,
            }
        }
        true
    }

    /// Writes everything still owed to the supervisor, until `deadline`.
    fn flush(&mut self, deadline: Instant) {
        while !self.to_link.is_empty() && Instant::now() < deadline {
            if !self.write_link() {
                return;
            }
            if self.to_link.is_empty() {
                return;
            }
            let mut fds = [PollFd::new(self.link_out.as_fd(), PollFlags::POLLOUT)];
            let _ = poll(&mut fds, poll_timeout(deadline, Instant::now()));
        }
    }
}

/// Adds `fd` to a poll set, remembering its position in `slot`.
fn add<'a>(
    fds: &mut Vec<PollFd<'a>>,
    fd: BorrowedFd<'a>,
    flags: PollFlags,
    slot: &mut Option<usize>,
) {
    *slot = Some(fds.len());
    fds.push(PollFd::new(fd, flags));
}

/// Writes what the tool's stdin takes now; drops the input if the tool closed it.
fn write_tool(tool_in: &mut Option<OwnedFd>, input: &mut Vec<u8>) {
    let Some(fd) = tool_in.as_ref() else {
        input.clear();
        return;
    };
    while !input.is_empty() {
        match nix::unistd::write(fd, input) {
            Ok(n) => {
                input.drain(..n);
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return,
            Err(_) => {
                *tool_in = None;
                input.clear();
                return;
            }
        }
    }
}

/// The link is gone: SIGTERM to the tool's group, SIGKILL after [`TERM_GRACE`], reap.
fn end_tool(process: &dyn Launched, pidfd: Option<&OwnedFd>) -> i32 {
    process.signal_group(Signal::SIGTERM);
    let deadline = Instant::now() + TERM_GRACE;
    while process.try_reap().is_none() && Instant::now() < deadline {
        match pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, poll_timeout(deadline, Instant::now()));
            }
            None => {
                let mut none: [PollFd<'_>; 0] = [];
                let _ = poll(&mut none, PollTimeout::from(10u8));
            }
        }
    }
    process.signal_group(Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process.try_reap().is_none() && Instant::now() < deadline {
        if let Some(fd) = pidfd {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, poll_timeout(deadline, Instant::now()));
        } else {
            let mut none: [PollFd<'_>; 0] = [];
            let _ = poll(&mut none, PollTimeout::from(10u8));
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_arguments_round_trip() {
        let args = RelayArgs {
            cwd: Some("/tmp/x y".into()),
            create_cwd: true,
            env_clear: true,
            env_remove: vec!["HOME".into(), "B".into()],
            pty: Some(crate::spec::PtySize {
                rows: 30,
                cols: 120,
            }),
            env: vec![("A".into(), "1=2".into())],
            program: "python3".into(),
            args: vec!["-i".into(), "--".into()],
        };
        assert_eq!(RelayArgs::parse(&args.to_args()).unwrap(), args);
        assert!(RelayArgs::parse(&["python3".into()]).is_err());
        assert!(RelayArgs::parse(&["--env-remove".into()]).is_err());
        assert!(
            RelayArgs::parse(&["--pty".into(), "80".into(), "--".into(), "sh".into()]).is_err()
        );
        assert!(RelayArgs::parse(&["--".into()]).is_err());
    }
}
