//! The relay's framed protocol: what the supervisor and `aim relay` (the far side) say to
//! each other over the one `ssh` connection.
//!
//! A frame is a kind byte, a big-endian `u32` payload length, and the payload (at most
//! [`MAX_PAYLOAD`] bytes). Toward the relay (its stdin): [`INPUT`] bytes for the tool's
//! stdin, [`CLOSE_INPUT`], [`SIGNAL`] (`[signal number, 1 for the group / 0 for the tool]`),
//! [`PING`] (a non-empty payload asks for a [`PONG`]). Toward the supervisor (the relay's
//! stdout): [`HELLO`] (the tool's pid on the far side, big-endian `u32`, then a flags byte:
//! [`HELLO_ANSWERS_PINGS`]; a relay without the byte predates it), [`STDOUT`] and
//! [`STDERR`] bytes, [`READING`] (the tool is blocked reading its stdin, with nothing
//! written since the last output frame), [`EXIT`] (`[0, code]` or `[1, signal]`, the value
//! a big-endian `i32`), [`FAILED`] (the tool could not be started: the reason in UTF-8),
//! [`PONG`] (the answer to a ping that asked for one). A relay that predates [`PONG`]
//! ignores the payload of a ping, so it never sends a frame its supervisor cannot read.

/// Supervisor to relay: bytes for the tool's stdin.
pub(crate) const INPUT: u8 = b'I';
/// Supervisor to relay: close the tool's stdin.
pub(crate) const CLOSE_INPUT: u8 = b'C';
/// Supervisor to relay: send a signal.
pub(crate) const SIGNAL: u8 = b'S';
/// Supervisor to relay: the link is alive (a non-empty payload: answer with [`PONG`]).
pub(crate) const PING: u8 = b'P';
/// What the supervisor's pings carry: "answer me".
pub(crate) const PING_ASKS: &[u8] = b"?";
/// Relay to supervisor: the tool started; its pid and flags.
pub(crate) const HELLO: u8 = b'H';
/// A [`HELLO`] flag: this relay answers pings that ask, with [`PONG`].
pub(crate) const HELLO_ANSWERS_PINGS: u8 = 1;
/// Relay to supervisor: the tool's stdout.
pub(crate) const STDOUT: u8 = b'O';
/// Relay to supervisor: the tool's stderr.
pub(crate) const STDERR: u8 = b'E';
/// Relay to supervisor: the tool is blocked reading its stdin.
pub(crate) const READING: u8 = b'R';
/// Relay to supervisor: the tool exited.
pub(crate) const EXIT: u8 = b'X';
/// Relay to supervisor: the tool could not be started.
pub(crate) const FAILED: u8 = b'F';
/// Relay to supervisor: the answer to a [`PING`] that asked for one.
pub(crate) const PONG: u8 = b'Q';

/// The largest payload a frame carries (bigger writes are split).
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024;
const HEADER: usize = 5;

/// Appends a frame of `kind` carrying `payload` (split into several frames when longer
/// than [`MAX_PAYLOAD`]; an empty payload makes one empty frame).
pub(crate) fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
    if chunks.peek().is_none() {
        out.push(kind);
        out.extend_from_slice(&0u32.to_be_bytes());
        return;
    }
    for chunk in chunks {
        out.push(kind);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// An exit status as an [`EXIT`] payload.
pub(crate) fn exit_payload(exit: crate::state::ExitInfo) -> Vec<u8> {
    use crate::state::ExitInfo;
    let (kind, value) = match exit {
        ExitInfo::Code(code) => (0u8, code),
        ExitInfo::Signal(signal) => (1u8, signal),
        ExitInfo::Unknown => (2u8, 0),
    };
    let mut out = vec![kind];
    out.extend_from_slice(&value.to_be_bytes());
    out
}

/// An [`EXIT`] payload as an exit status (`Unknown` when malformed).
pub(crate) fn parse_exit(payload: &[u8]) -> crate::state::ExitInfo {
    use crate::state::ExitInfo;
    let value = payload
        .get(1..5)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_be_bytes);
    match (payload.first(), value) {
        (Some(0), Some(code)) => ExitInfo::Code(code),
        (Some(1), Some(signal)) => ExitInfo::Signal(signal),
        _ => ExitInfo::Unknown,
    }
}

/// Splits a byte stream into frames, whatever the read boundaries.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    buf: Vec<u8>,
}

/// A frame that does not follow the protocol: the far side is not a relay (or is broken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Garbled(pub String);

impl Decoder {
    /// Feeds `bytes` and hands each complete frame to `frame(kind, payload)`.
    ///
    /// # Errors
    /// [`Garbled`] for an unknown kind or an oversized length; the decoder is then useless.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        mut frame: impl FnMut(u8, &[u8]),
    ) -> Result<(), Garbled> {
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        while self.buf.len() - pos >= HEADER {
            let kind = self.buf[pos];
            let len = u32::from_be_bytes(self.buf[pos + 1..pos + 5].try_into().unwrap_or([0; 4]))
                as usize;
            if !b"ICSPHOERXFQ".contains(&kind) || len > MAX_PAYLOAD {
                let head = String::from_utf8_lossy(&self.buf[pos..self.buf.len().min(pos + 80)])
                    .into_owned();
                self.buf.clear();
                return Err(Garbled(head));
            }
            if self.buf.len() - pos - HEADER < len {
                break;
            }
            frame(kind, &self.buf[pos + HEADER..pos + HEADER + len]);
            pos += HEADER + len;
        }
        self.buf.drain(..pos);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ExitInfo;

    fn frames(decoder: &mut Decoder, bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        decoder
            .feed(bytes, |k, p| got.push((k, p.to_vec())))
            .unwrap();
        got
    }

    #[test]
    fn frames_survive_any_read_boundary() {
        let mut wire = Vec::new();
        encode(STDOUT, b"hello", &mut wire);
        encode(READING, b"", &mut wire);
        encode(EXIT, &exit_payload(ExitInfo::Signal(9)), &mut wire);
        for split in 0..=wire.len() {
            let mut decoder = Decoder::default();
            let mut got = frames(&mut decoder, &wire[..split]);
            got.extend(frames(&mut decoder, &wire[split..]));
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0], (STDOUT, b"hello".to_vec()));
            assert_eq!(got[1], (READING, Vec::new()));
            assert_eq!(parse_exit(&got[2].1), ExitInfo::Signal(9));
        }
    }

    #[test]
    fn long_payloads_are_split() {
        let mut wire = Vec::new();
        encode(INPUT, &vec![7u8; MAX_PAYLOAD * 2 + 1], &mut wire);
        let got = frames(&mut Decoder::default(), &wire);
        assert_eq!(
            got.iter().map(|(_, p)| p.len()).collect::<Vec<_>>(),
            [MAX_PAYLOAD, MAX_PAYLOAD, 1]
        );
    }

    #[test]
    fn output_that_is_not_a_relay_is_garbled() {
        let err = Decoder::default()
            .feed(b"sh: 1: aim: not found\n", |_, _| {})
            .unwrap_err();
        assert!(err.0.contains("not found"), "{err:?}");
        assert_eq!(
            parse_exit(&exit_payload(ExitInfo::Code(3))),
            ExitInfo::Code(3)
        );
        assert_eq!(parse_exit(b"?"), ExitInfo::Unknown);
    }
}
