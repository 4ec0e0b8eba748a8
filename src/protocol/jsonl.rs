//! Splitting a byte stream into JSON lines, for the JSON protocols.

/// Collects a stream's bytes and hands out complete lines; keeps the whole transcript.
#[derive(Debug, Default)]
pub(crate) struct JsonLines {
    /// Everything received this turn (the transcript).
    pub transcript: Vec<u8>,
    /// Where the unfinished last line starts in `transcript`.
    line_start: usize,
}

impl JsonLines {
    /// Starts a new turn's transcript.
    pub(crate) fn clear(&mut self) {
        self.transcript.clear();
        self.line_start = 0;
    }

    /// Appends `bytes` and calls `each` with every line that is now complete and parses as a
    /// JSON object (other lines stay in the transcript only). Stops early when `each`
    /// returns true; returns whether it did.
    pub(crate) fn push(
        &mut self,
        bytes: &[u8],
        mut each: impl FnMut(serde_json::Value) -> bool,
    ) -> bool {
        let scan_from = self.transcript.len();
        self.transcript.extend_from_slice(bytes);
        let mut from = scan_from;
        while let Some(pos) = self.transcript[from..].iter().position(|&b| b == b'\n') {
            let end = from + pos;
            let line = &self.transcript[self.line_start..end];
            self.line_start = end + 1;
            from = end + 1;
            let trimmed = line.trim_ascii();
            if trimmed.first() != Some(&b'{') {
                continue;
            }
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(trimmed) {
                if value.is_object() && each(value) {
                    return true;
                }
            }
        }
        false
    }

    /// Bytes received this turn.
    pub(crate) fn len(&self) -> usize {
        self.transcript.len()
    }
}

/// `value` at `path` as a string.
pub(crate) fn str_at<'a>(value: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(|v| v.as_str())
}

/// `value` at `path` as an unsigned integer.
pub(crate) fn u64_at(value: &serde_json::Value, path: &[&str]) -> Option<u64> {
    path.iter()
        .try_fold(value, |v, key| v.get(*key))
        .and_then(|v| v.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_complete_json_lines_across_chunks() {
        let mut lines = JsonLines::default();
        let mut seen = Vec::new();
        lines.push(b"{\"a\":1}\nnot json\n{\"b\"", |v| {
            seen.push(v);
            false
        });
        assert_eq!(seen.len(), 1);
        let stopped = lines.push(b":2}\n{\"c\":3}\n", |v| {
            seen.push(v);
            true
        });
        assert!(stopped);
        assert_eq!(seen[1]["b"], 2);
        assert_eq!(lines.len(), 33);
        assert_eq!(
            str_at(&serde_json::json!({"x": {"y": "z"}}), &["x", "y"]),
            Some("z")
        );
    }
}
