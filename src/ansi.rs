//! A streaming ANSI escape-sequence stripper: state carries across chunks, so a sequence
//! split between two reads is still removed, and each byte is looked at once.

/// Where the stripper is inside an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// Inside `ESC [` ... final byte.
    Csi,
    /// Inside `ESC ]` (or P, X, ^, _) ... BEL or `ESC \`.
    String,
    /// After ESC inside a string sequence (a possible `ESC \`).
    StringEscape,
}

/// Removes ANSI escape sequences (CSI, OSC and other string sequences, two-byte escapes)
/// from a byte stream.
#[derive(Debug, Default)]
pub(crate) struct AnsiStripper {
    state: State,
}

impl AnsiStripper {
    /// Appends `input` with escape sequences removed to `out`.
    pub(crate) fn strip_into(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.state = match (self.state, b) {
                (State::Text, 0x1b) => State::Escape,
                (State::Text, _) => {
                    out.push(b);
                    State::Text
                }
                (State::Escape, b'[') => State::Csi,
                (State::Escape, b']' | b'P' | b'X' | b'^' | b'_') => State::String,
                (State::Escape, _) => State::Text,
                (State::Csi, 0x40..=0x7e) => State::Text,
                (State::Csi, _) => State::Csi,
                (State::String, 0x07) => State::Text,
                (State::String, 0x1b) => State::StringEscape,
                (State::String, _) => State::String,
                (State::StringEscape, b'\\') => State::Text,
                (State::StringEscape, _) => State::String,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = AnsiStripper::default();
        let mut out = Vec::new();
        for c in chunks {
            s.strip_into(c, &mut out);
        }
        out
    }

    #[test]
    fn removes_colours_titles_and_cursor_moves() {
        assert_eq!(strip(&[b"\x1b[1;32mgreen\x1b[0m"]), b"green");
        assert_eq!(strip(&[b"\x1b]0;title\x07text"]), b"text");
        assert_eq!(strip(&[b"\x1b]8;;http://x\x1b\\link"]), b"link");
        assert_eq!(strip(&[b"a\x1b7b\x1b[2Kc"]), b"abc");
    }

    #[test]
    fn handles_sequences_split_across_chunks() {
        assert_eq!(strip(&[b"x\x1b", b"[3", b"1mred\x1b[", b"0m"]), b"xred");
    }

    #[test]
    fn keeps_invalid_utf8_and_nul() {
        assert_eq!(strip(&[b"\xff\x00ok"]), b"\xff\x00ok");
    }
}
