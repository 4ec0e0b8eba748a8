//! The supervisor's end of a link to a tool on another host: the frames of `super::wire` on
//! the `ssh` client's stdin and stdout, decoded and encoded by the instance's I/O thread.
//!
//! The far side starts with either a [`HELLO`](super::wire::HELLO) frame (an `aim relay`
//! runs there) or the line [`NO_RELAY`] (no `aim` there: the tool runs under plain `ssh -T`,
//! its output passes through as it is). Input is held until the first bytes say which.
//!
//! The I/O thread pings a relay every [`PING_EVERY`] and the relay answers. When the relay
//! said in its `HELLO` that it answers pings, a link that brings nothing for
//! [`SILENCE_LIMIT`] counts as lost ([`Link::silent_for`]): the I/O thread then ends the
//! local `ssh`, before OpenSSH's own keepalives would (a frozen host, a dropped route, a
//! stopped `sshd`). A relay too old to answer pings is left to OpenSSH's keepalives.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use parking_lot::Mutex;

use super::relay::PING_EVERY;
use super::wire::{self, Decoder};
use crate::spec::Stream;
use crate::state::ExitInfo;

/// How long a relay that answers pings may stay silent before its link counts as lost
/// (four pings unanswered).
pub(crate) const SILENCE_LIMIT: std::time::Duration = std::time::Duration::from_secs(8);

/// What the far side prints first when it has no relay.
pub(crate) const NO_RELAY: &[u8] = b"AIM-NO-RELAY\n";

/// Which kind of far side a link has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Nothing heard yet.
    Unknown = 0,
    /// An `aim relay`.
    Relay = 1,
    /// Plain `ssh -T`: output passes through, no control messages.
    Plain = 2,
}

/// What the I/O thread's link and the launched process share.
#[derive(Debug)]
pub(crate) struct LinkShared {
    /// The host's name as given (`--host`).
    pub host: String,
    mode: AtomicU8,
    /// 0 busy, 1 blocked reading stdin, 2 cannot be known.
    reading: AtomicU8,
    remote_exit: Mutex<Option<ExitInfo>>,
    /// Control frames (signals) waiting for the I/O thread to write them.
    control: Mutex<Vec<u8>>,
}

impl LinkShared {
    pub(crate) fn new(host: String) -> Self {
        LinkShared {
            host,
            mode: AtomicU8::new(Mode::Unknown as u8),
            reading: AtomicU8::new(0),
            remote_exit: Mutex::new(None),
            control: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Acquire) {
            1 => Mode::Relay,
            2 => Mode::Plain,
            _ => Mode::Unknown,
        }
    }

    /// The tool's exit as the relay reported it.
    pub(crate) fn remote_exit(&self) -> Option<ExitInfo> {
        *self.remote_exit.lock()
    }

    /// Whether the tool is blocked reading its stdin, as the relay last said.
    pub(crate) fn reading_stdin(&self) -> Option<bool> {
        if self.mode() != Mode::Relay {
            return None;
        }
        match self.reading.load(Ordering::Acquire) {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// Queues a signal for the relay (the I/O thread writes it on its next round).
    pub(crate) fn queue_signal(&self, signal: Signal, group: bool) {
        let mut control = self.control.lock();
        wire::encode(
            wire::SIGNAL,
            &[signal as i32 as u8, u8::from(group)],
            &mut control,
        );
    }

    /// Whether control frames wait to be written.
    pub(crate) fn has_control(&self) -> bool {
        !self.control.lock().is_empty()
    }
}

/// The I/O thread's side of a link.
#[derive(Debug)]
pub(crate) struct Link {
    pub shared: Arc<LinkShared>,
    decoder: Decoder,
    /// The first bytes, until they say which far side this is.
    head: Vec<u8>,
    /// Input not yet framed (while the far side is unknown).
    held: Vec<u8>,
    /// Bytes for the `ssh` client's stdin.
    wire: Vec<u8>,
    /// Close the tool's stdin once everything before is out.
    close_input: bool,
    /// The close was asked for already.
    closed: bool,
    /// Output decoded and not yet given to the conversation, in order.
    pub ready: VecDeque<(Stream, Vec<u8>)>,
    next_ping: Instant,
    /// When the far side last sent anything.
    heard: Instant,
    /// The relay answers pings (its `HELLO` said so), so its silence means something.
    answers: bool,
    /// The link was found silent already.
    lost: bool,
}

impl Link {
    pub(crate) fn new(shared: Arc<LinkShared>) -> Self {
        Link {
            shared,
            decoder: Decoder::default(),
            head: Vec::new(),
            held: Vec::new(),
            wire: Vec::new(),
            close_input: false,
            closed: false,
            ready: VecDeque::new(),
            next_ping: Instant::now() + PING_EVERY,
            heard: Instant::now(),
            answers: false,
            lost: false,
        }
    }

    /// When the link next needs the I/O thread: a keepalive due, or the end of the silence
    /// a relay that answers pings is allowed.
    pub(crate) fn next_timer(&self) -> Instant {
        match self.answers && !self.lost {
            true => self.next_ping.min(self.heard + SILENCE_LIMIT),
            false => self.next_ping,
        }
    }

    /// Queues a keepalive if one is due at `now`.
    pub(crate) fn ping_if_due(&mut self, now: Instant) {
        if now >= self.next_ping {
            self.next_ping = now + PING_EVERY;
            if self.shared.mode() == Mode::Relay {
                wire::encode(wire::PING, wire::PING_ASKS, &mut self.wire);
            }
        }
    }

    /// How long the far side has been silent, once that is [`SILENCE_LIMIT`] or more for a
    /// relay that answers pings; said once per link (`None` afterwards). Call it after
    /// reading what the link has, so a late but present answer counts.
    pub(crate) fn silent_for(&mut self, now: Instant) -> Option<std::time::Duration> {
        if !self.silence_due(now) {
            return None;
        }
        self.lost = true;
        Some(now.saturating_duration_since(self.heard))
    }

    /// Whether [`Link::silent_for`] would say the link is lost at `now`.
    pub(crate) fn silence_due(&self, now: Instant) -> bool {
        self.answers && !self.lost && now.saturating_duration_since(self.heard) >= SILENCE_LIMIT
    }

    /// Decodes bytes read from the `ssh` client's stdout into [`Link::ready`].
    ///
    /// # Errors
    /// What the far side said that is not the protocol (the link is then unusable).
    pub(crate) fn decode(&mut self, raw: &[u8]) -> Result<(), String> {
        if !raw.is_empty() {
            self.heard = Instant::now();
        }
        if self.shared.mode() == Mode::Unknown {
            self.head.extend_from_slice(raw);
            if !self.identify()? {
                return Ok(());
            }
            let head = std::mem::take(&mut self.head);
            return self.decode_known(&head);
        }
        self.decode_known(raw)
    }

    /// Looks at the first bytes: `Ok(true)` once the far side is known (the marker of a
    /// plain far side removed), `Ok(false)` while more bytes are needed.
    fn identify(&mut self) -> Result<bool, String> {
        let shown =
            |head: &[u8]| String::from_utf8_lossy(&head[..head.len().min(120)]).into_owned();
        if self.head.first() == Some(&wire::HELLO) {
            self.set_mode(Mode::Relay);
            return Ok(true);
        }
        if self.head.len() < NO_RELAY.len() {
            return if NO_RELAY.starts_with(&self.head) {
                Ok(false)
            } else {
                Err(format!(
                    "the far side is not an aim relay: {:?}",
                    shown(&self.head)
                ))
            };
        }
        if !self.head.starts_with(NO_RELAY) {
            return Err(format!(
                "the far side is neither an aim relay nor a plain shell: {:?}",
                shown(&self.head)
            ));
        }
        log::warn!(
            "{}: no aim relay there; running the tool under plain `ssh -T`: cancel, \
             await_read and cleanup of the far side when the link ends are not available \
             (install aim there or pass --remote-aim)",
            self.shared.host
        );
        self.set_mode(Mode::Plain);
        self.head.drain(..NO_RELAY.len());
        Ok(true)
    }

    fn decode_known(&mut self, raw: &[u8]) -> Result<(), String> {
        match self.shared.mode() {
            Mode::Plain => {
                if !raw.is_empty() {
                    self.ready.push_back((Stream::Stdout, raw.to_vec()));
                }
                Ok(())
            }
            _ => {
                let shared = Arc::clone(&self.shared);
                let ready = &mut self.ready;
                let answers = &mut self.answers;
                self.decoder
                    .feed(raw, |kind, payload| match kind {
                        wire::HELLO => {
                            let pid = payload
                                .get(..4)
                                .and_then(|b| b.try_into().ok())
                                .map_or(0, u32::from_be_bytes);
                            *answers = payload
                                .get(4)
                                .is_some_and(|flags| flags & wire::HELLO_ANSWERS_PINGS != 0);
                            log::debug!(
                                "{}: the tool runs there as pid {pid}; the relay answers pings: {}",
                                shared.host,
                                *answers
                            );
                        }
                        wire::STDOUT | wire::STDERR => {
                            shared.reading.store(0, Ordering::Release);
                            let stream = if kind == wire::STDOUT {
                                Stream::Stdout
                            } else {
                                Stream::Stderr
                            };
                            ready.push_back((stream, payload.to_vec()));
                        }
                        wire::READING => {
                            let value = if payload.is_empty() { 1 } else { 2 };
                            shared.reading.store(value, Ordering::Release);
                        }
                        wire::EXIT => *shared.remote_exit.lock() = Some(wire::parse_exit(payload)),
                        wire::PONG => {}
                        wire::FAILED => {
                            let mut line = b"aim relay: ".to_vec();
                            line.extend_from_slice(payload);
                            line.push(b'\n');
                            ready.push_back((Stream::Stderr, line));
                        }
                        _ => {}
                    })
                    .map_err(|g| format!("garbled frame from the relay: {:?}", g.0))
            }
        }
    }

    fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::Release);
    }

    /// Queues `bytes` for the tool's stdin.
    pub(crate) fn input(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.shared.reading.store(0, Ordering::Release);
        self.held.extend_from_slice(bytes);
        self.frame_held();
    }

    /// Closes the tool's stdin once everything queued before is written.
    pub(crate) fn close_input(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.close_input = true;
        self.frame_held();
    }

    fn frame_held(&mut self) {
        match self.shared.mode() {
            Mode::Unknown => {}
            Mode::Plain => self.wire.append(&mut self.held),
            Mode::Relay => {
                wire::encode(wire::INPUT, &std::mem::take(&mut self.held), &mut self.wire);
                if self.close_input {
                    wire::encode(wire::CLOSE_INPUT, b"", &mut self.wire);
                    self.close_input = false;
                }
            }
        }
        if self.held.is_empty() && self.shared.mode() == Mode::Relay {
            let mut control = self.shared.control.lock();
            self.wire.append(&mut control);
        }
    }

    /// Whether bytes wait to be written to the `ssh` client.
    pub(crate) fn wants_write(&self) -> bool {
        let known = self.shared.mode() != Mode::Unknown;
        !self.wire.is_empty()
            || (known && (!self.held.is_empty() || self.close_input))
            || (self.shared.mode() == Mode::Relay && self.shared.has_control())
    }

    /// Writes what `fd` takes now. `Ok(true)` when the `ssh` client's stdin should now be
    /// closed (plain `ssh -T` and the input is over).
    ///
    /// # Errors
    /// The write error (`EPIPE`: the `ssh` client is gone).
    pub(crate) fn flush(&mut self, fd: &OwnedFd) -> Result<bool, Errno> {
        self.frame_held();
        let mut pos = 0;
        let result = loop {
            if pos >= self.wire.len() {
                break Ok(());
            }
            match nix::unistd::write(fd, &self.wire[pos..]) {
                Ok(n) => pos += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.wire.drain(..pos);
        result?;
        Ok(self.wire.is_empty() && self.close_input && self.shared.mode() == Mode::Plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link::new(Arc::new(LinkShared::new("h".into())))
    }

    #[test]
    fn a_relay_link_frames_input_and_decodes_output() {
        let mut link = link();
        link.input(b"1+1\n");
        assert!(
            link.wire.is_empty(),
            "input is held until the far side is known"
        );
        let mut far = Vec::new();
        wire::encode(wire::HELLO, &42u32.to_be_bytes(), &mut far);
        wire::encode(wire::STDOUT, b"2\n", &mut far);
        wire::encode(wire::READING, b"", &mut far);
        link.decode(&far[..3]).unwrap();
        link.decode(&far[3..]).unwrap();
        assert_eq!(link.shared.mode(), Mode::Relay);
        assert!(
            link.wants_write(),
            "held input goes out as soon as the far side is known"
        );
        assert_eq!(
            link.ready.pop_front(),
            Some((Stream::Stdout, b"2\n".to_vec()))
        );
        assert_eq!(link.shared.reading_stdin(), Some(true));
        link.frame_held();
        let mut sent = Vec::new();
        Decoder::default()
            .feed(&link.wire, |k, p| sent.push((k, p.to_vec())))
            .unwrap();
        assert_eq!(sent, [(wire::INPUT, b"1+1\n".to_vec())]);
        // Input sent: not reading any more until the relay says so again.
        link.input(b"x");
        assert_eq!(link.shared.reading_stdin(), Some(false));
    }

    #[test]
    fn without_a_relay_output_passes_through_and_nothing_is_known() {
        let mut link = link();
        link.input(b"print(1)\n");
        link.decode(b"AIM-NO-").unwrap();
        assert_eq!(link.shared.mode(), Mode::Unknown);
        link.decode(b"RELAY\n>>> ").unwrap();
        assert_eq!(link.shared.mode(), Mode::Plain);
        assert_eq!(
            link.ready.pop_front(),
            Some((Stream::Stdout, b">>> ".to_vec()))
        );
        link.frame_held();
        assert_eq!(link.wire, b"print(1)\n");
        assert_eq!(link.shared.reading_stdin(), None);
    }

    #[test]
    fn a_relay_that_answers_pings_is_lost_after_its_silence_limit() {
        let hello = |flags: &[u8]| {
            let mut far = Vec::new();
            let mut payload = 42u32.to_be_bytes().to_vec();
            payload.extend_from_slice(flags);
            wire::encode(wire::HELLO, &payload, &mut far);
            far
        };
        // A relay that predates pongs (a bare pid in its HELLO) is never taken for lost.
        let mut old = link();
        old.decode(&hello(&[])).unwrap();
        let start = Instant::now();
        assert_eq!(old.silent_for(start + SILENCE_LIMIT * 3), None);
        assert_eq!(old.next_timer(), old.next_ping);

        let mut link = link();
        link.decode(&hello(&[wire::HELLO_ANSWERS_PINGS])).unwrap();
        let heard = Instant::now();
        assert_eq!(link.next_timer(), link.next_ping.min(heard + SILENCE_LIMIT));
        link.ping_if_due(heard + PING_EVERY);
        let mut sent = Vec::new();
        Decoder::default()
            .feed(&link.wire, |k, p| sent.push((k, p.to_vec())))
            .unwrap();
        assert_eq!(sent, [(wire::PING, wire::PING_ASKS.to_vec())]);
        // An answer is heard: the silence starts again.
        let mut pong = Vec::new();
        wire::encode(wire::PONG, b"", &mut pong);
        link.decode(&pong).unwrap();
        assert!(link.ready.is_empty());
        let heard = Instant::now();
        assert_eq!(link.silent_for(heard + SILENCE_LIMIT / 2), None);
        assert!(!link.silence_due(heard + SILENCE_LIMIT / 2));
        let silent = link.silent_for(heard + SILENCE_LIMIT).unwrap();
        assert!(silent >= SILENCE_LIMIT, "{silent:?}");
        // Said once.
        assert_eq!(link.silent_for(heard + SILENCE_LIMIT * 2), None);
        assert_eq!(link.next_timer(), link.next_ping);
    }

    #[test]
    fn anything_else_is_an_error() {
        assert!(link().decode(b"Welcome to the host\n").is_err());
    }
}
