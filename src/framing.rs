//! When is an answer complete: incremental matchers over the tool's output.
//!
//! Every matcher looks only at the bytes it has not seen yet (plus a window of a marker's
//! length), so the work stays linear in the output size however the output is chunked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::spec::{Framing, Stream};

/// What a matcher is looking for.
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    /// Output on `stream` ends with `marker`, and has stayed so for `settle`.
    EndsWith {
        marker: Vec<u8>,
        stream: Stream,
        settle: std::time::Duration,
    },
    /// A line on stdout.
    Line,
    /// A line on stdout that contains `nonce`. `echoes` are the sentinel command's lines that
    /// carry the nonce: a tool may print them back (sqlite3 after `.echo on`, before or after
    /// the answer's own output, or after an answer without a final newline on its line);
    /// wherever such a read-back ends a line it is cut out of the answer, so it neither ends
    /// the answer nor stays in it.
    Nonce {
        nonce: Vec<u8>,
        echoes: Vec<Vec<u8>>,
    },
    /// A JSON line on stdout whose `field` is the string `value`.
    JsonField { field: String, value: String },
    /// `quiet` without output.
    Idle { quiet: std::time::Duration },
    /// `text` appears anywhere on `stream` (readiness only).
    Contains { text: Vec<u8>, stream: Stream },
    /// `inner` (an `EndsWith`) once its marker has appeared `count` times on its stream,
    /// the last at the very end.
    Counted { inner: Box<Rule>, count: usize },
    /// Numbered prompts on `stream`: `nonce`, a decimal number N and `>` (a main prompt) or
    /// `.` (a continuation prompt). Complete at the first main prompt whose N is above
    /// `after`; every numbered prompt is left out of the answer.
    Numbered {
        nonce: Vec<u8>,
        stream: Stream,
        after: u64,
    },
}

/// The longest prompt number read (digits after the nonce).
const MAX_NUMBER_DIGITS: usize = 19;

impl Rule {
    /// The rule for an answer under `framing`; `nonce` is used by sentinel framing.
    pub(crate) fn for_answer(framing: &Framing, nonce: &str) -> Rule {
        match framing {
            Framing::Prompt {
                marker,
                stream,
                settle,
                ..
            } => Rule::EndsWith {
                marker: marker.as_bytes().to_vec(),
                stream: *stream,
                settle: *settle,
            },
            Framing::Line => Rule::Line,
            Framing::Sentinel { command } => Rule::Nonce {
                nonce: nonce.as_bytes().to_vec(),
                echoes: command
                    .replace("{nonce}", nonce)
                    .lines()
                    .filter(|line| line.contains(nonce))
                    .map(|line| line.as_bytes().to_vec())
                    .collect(),
            },
            Framing::JsonLines { field, value } => Rule::JsonField {
                field: field.clone(),
                value: value.clone(),
            },
            Framing::Idle { quiet } => Rule::Idle { quiet: *quiet },
            Framing::NumberedPrompt { stream, .. } => Rule::Numbered {
                nonce: nonce.as_bytes().to_vec(),
                stream: *stream,
                after: 0,
            },
        }
    }

    /// This rule, needing `count` markers instead of one (prompt framing at startup: the
    /// first prompt and one for each init line).
    pub(crate) fn counting(self, count: usize) -> Rule {
        match self {
            Rule::EndsWith { .. } if count > 1 => Rule::Counted {
                inner: Box::new(self),
                count,
            },
            other => other,
        }
    }
}

/// The matcher's verdict after new output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Not complete yet.
    Pending,
    /// Complete.
    Complete,
    /// More output than the cap allows.
    TooLarge,
}

/// An answer's bytes, split by stream, with framing artefacts (the trailing prompt, the
/// sentinel line) removed.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The number of the main prompt that ended the answer (numbered prompts).
    pub prompt_number: Option<u64>,
    /// The sentinel command's lines that carry the nonce (sentinel framing).
    sentinel_lines: Vec<Vec<u8>>,
}

impl Collected {
    /// Cuts the sentinel command out of stderr: an error quoting the statement quotes the
    /// sentinel aim added to it (sqlite3: `SELECT 1 + ;-- __aim_...__`), which is not the
    /// tool's answer. Call once all of the answer's stderr is in.
    pub(crate) fn strip_sentinel_from_stderr(&mut self) {
        for line in &self.sentinel_lines {
            if find(&self.stderr, line).is_some() {
                self.stderr = without_all(&self.stderr, line);
            }
        }
    }
}

/// A numbered prompt found in the output: where it is and what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumberedPrompt {
    start: usize,
    end: usize,
    number: u64,
    main: bool,
}

/// Collects output for one answer (or one startup) and says when it is complete.
#[derive(Debug)]
pub(crate) struct Framer {
    rule: Rule,
    limit: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Where the current (unfinished) stdout line starts, for the nonce and JSON rules.
    scanned: usize,
    /// How far stdout has been searched for a newline.
    searched: usize,
    /// Where the answer's body ends in stdout, once complete.
    body_end: Option<usize>,
    /// How many bytes at the end of the marker stream belong to the marker.
    marker_tail: usize,
    /// When the settle or idle timer fires.
    timer: Option<Instant>,
    complete: bool,
    /// Counted markers: how many were seen, and how far the marker stream was searched.
    markers_seen: usize,
    marker_searched: usize,
    /// Numbered prompts: every one found so far, how far the stream was searched, and how
    /// many continuation prompts at or above `after` were not yet reported.
    prompts: Vec<NumberedPrompt>,
    continuations: usize,
    prompt_number: Option<u64>,
}

impl Framer {
    /// A framer for `rule` that refuses more than `limit` bytes, started at `now`.
    pub(crate) fn new(rule: Rule, limit: usize, now: Instant) -> Self {
        let timer = match &rule {
            Rule::Idle { quiet } => Some(now + *quiet),
            _ => None,
        };
        Framer {
            rule,
            limit,
            stdout: Vec::new(),
            stderr: Vec::new(),
            scanned: 0,
            searched: 0,
            body_end: None,
            marker_tail: 0,
            timer,
            complete: false,
            markers_seen: 0,
            marker_searched: 0,
            prompts: Vec::new(),
            continuations: 0,
            prompt_number: None,
        }
    }

    /// The rule this framer applies.
    pub(crate) fn rule(&self) -> &Rule {
        &self.rule
    }

    /// When [`Framer::tick`] should next be called, if a timer is armed.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.complete {
            None
        } else {
            self.timer
        }
    }

    /// Total bytes collected so far.
    fn len(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }

    /// Feeds output that arrived at `now` on `stream`.
    pub(crate) fn feed(&mut self, stream: Stream, bytes: &[u8], now: Instant) -> Progress {
        if bytes.is_empty() {
            return self.progress();
        }
        if self.complete {
            // Output after the end of an answer: keep it out of this answer.
            self.marker_tail = 0;
            return Progress::Complete;
        }
        if self.len() + bytes.len() > self.limit {
            return Progress::TooLarge;
        }
        match stream {
            Stream::Stdout => self.stdout.extend_from_slice(bytes),
            Stream::Stderr => self.stderr.extend_from_slice(bytes),
        }
        match &self.rule {
            Rule::EndsWith {
                marker,
                stream: marker_stream,
                settle,
            } => {
                let buf = match marker_stream {
                    Stream::Stdout => &self.stdout,
                    Stream::Stderr => &self.stderr,
                };
                // Any output, on either stream, restarts the settle period.
                if buf.ends_with(marker) {
                    if settle.is_zero() {
                        self.marker_tail = marker.len();
                        self.complete = true;
                    } else {
                        self.timer = Some(now + *settle);
                    }
                } else {
                    self.timer = None;
                }
            }
            Rule::Idle { quiet } => self.timer = Some(now + *quiet),
            Rule::Line if stream == Stream::Stdout => {
                if let Some(pos) = find_byte(&self.stdout[self.scanned..], b'\n') {
                    self.finish_at(self.scanned + pos + 1, self.scanned + pos);
                } else {
                    self.scanned = self.stdout.len();
                }
            }
            Rule::Nonce { .. } | Rule::JsonField { .. } if stream == Stream::Stdout => {
                self.scan_lines();
            }
            Rule::Counted { inner, count } => {
                if let Rule::EndsWith {
                    marker,
                    stream: marker_stream,
                    settle,
                } = inner.as_ref()
                {
                    let buf = match marker_stream {
                        Stream::Stdout => &self.stdout,
                        Stream::Stderr => &self.stderr,
                    };
                    let mut from = self.marker_searched;
                    while let Some(at) = find(&buf[from..], marker) {
                        self.markers_seen += 1;
                        from += at + marker.len();
                    }
                    self.marker_searched = from.max(buf.len().saturating_sub(marker.len() - 1));
                    if self.markers_seen >= *count && buf.ends_with(marker) {
                        if settle.is_zero() {
                            self.marker_tail = marker.len();
                            self.complete = true;
                        } else {
                            self.timer = Some(now + *settle);
                        }
                    } else {
                        self.timer = None;
                    }
                }
            }
            Rule::Numbered {
                nonce,
                stream: marker_stream,
                after,
            } if *marker_stream == stream => {
                let buf = match marker_stream {
                    Stream::Stdout => &mut self.stdout,
                    Stream::Stderr => &mut self.stderr,
                };
                let before = self.prompts.len();
                self.marker_searched =
                    scan_numbered(buf, self.marker_searched, nonce, &mut self.prompts);
                let mut end = None;
                for (i, prompt) in self.prompts.iter().enumerate().skip(before) {
                    if prompt.main && prompt.number > *after {
                        end = Some((i, *prompt));
                        break;
                    }
                    if !prompt.main && prompt.number >= *after {
                        self.continuations += 1;
                    }
                }
                if let Some((i, prompt)) = end {
                    let trailing = buf.len() - prompt.end;
                    buf.truncate(prompt.end);
                    self.prompts.truncate(i + 1);
                    self.prompt_number = Some(prompt.number);
                    self.complete = true;
                    if trailing > 0 {
                        log::debug!(
                            "{trailing} bytes of output arrived after the end of an answer"
                        );
                    }
                }
            }
            Rule::Contains { text, stream: s } if *s == stream => {
                let buf = match s {
                    Stream::Stdout => &self.stdout,
                    Stream::Stderr => &self.stderr,
                };
                let from = buf.len().saturating_sub(bytes.len() + text.len() - 1);
                if find(&buf[from..], text).is_some() {
                    self.complete = true;
                }
            }
            _ => {}
        }
        self.progress()
    }

    /// Fires the settle or idle timer if it is due.
    pub(crate) fn tick(&mut self, now: Instant) -> Progress {
        if let Some(at) = self.timer {
            if now >= at && !self.complete {
                if let Some(marker) = self.marker() {
                    self.marker_tail = marker.len();
                }
                self.complete = true;
            }
        }
        self.progress()
    }

    /// The fixed prompt marker of a prompt rule.
    fn marker(&self) -> Option<&[u8]> {
        match &self.rule {
            Rule::EndsWith { marker, .. } => Some(marker),
            Rule::Counted { inner, .. } => match inner.as_ref() {
                Rule::EndsWith { marker, .. } => Some(marker),
                _ => None,
            },
            _ => None,
        }
    }

    /// Continuation prompts (numbered prompts) seen since the last call: the tool waits for
    /// the rest of a statement.
    pub(crate) fn take_continuations(&mut self) -> usize {
        std::mem::take(&mut self.continuations)
    }

    /// The stdout collected so far that is surely part of the answer (no marker, sentinel
    /// or unfinished UTF-8 character that later bytes may complete), for streaming.
    pub(crate) fn settled_stdout(&self) -> &[u8] {
        let end = match &self.rule {
            Rule::EndsWith {
                marker,
                stream: Stream::Stdout,
                ..
            } => self.stdout.len() - held_back(&self.stdout, marker),
            Rule::EndsWith { .. } => self.stdout.len(),
            Rule::Numbered {
                stream: Stream::Stderr,
                ..
            } => self.stdout.len(),
            Rule::Nonce { .. } => self.body_end.unwrap_or(self.scanned),
            Rule::JsonField { .. } | Rule::Idle { .. } => self.stdout.len(),
            // Decided only at the end.
            Rule::Line | Rule::Counted { .. } | Rule::Numbered { .. } | Rule::Contains { .. } => 0,
        };
        let end = end.min(self.stdout.len());
        &self.stdout[..utf8_complete(&self.stdout[..end])]
    }

    /// The number of the main prompt that completed this framer (numbered prompts).
    pub(crate) fn prompt_number(&self) -> Option<u64> {
        self.prompt_number
    }

    /// The stdout collected so far, as it is (for a partial answer).
    pub(crate) fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    fn progress(&self) -> Progress {
        if self.complete {
            Progress::Complete
        } else {
            Progress::Pending
        }
    }

    /// Scans complete stdout lines not yet scanned, for the nonce and JSON rules.
    fn scan_lines(&mut self) {
        loop {
            let from = self.scanned.max(self.searched);
            let Some(pos) = find_byte(&self.stdout[from..], b'\n') else {
                self.searched = self.stdout.len();
                return;
            };
            let start = self.scanned;
            let end = from + pos;
            let line = &self.stdout[start..end];
            if let Rule::Nonce { echoes, .. } = &self.rule {
                if let Some(echo) = echoes.iter().find(|echo| line.ends_with(echo)) {
                    // A read-back of the sentinel command: cut it and its newline out. Bytes
                    // before it on its line (an answer without a final newline) stay, and
                    // their line goes on.
                    let cut = end - echo.len();
                    self.stdout.drain(cut..=end);
                    self.searched = cut;
                    continue;
                }
            }
            // Where the answer's body ends on a hit line.
            let hit = match &self.rule {
                // The sentinel is not part of the answer; bytes before it on its line are (an
                // answer without a final newline: bc `print "abc"`).
                Rule::Nonce { nonce, .. } => find(line, nonce).map(|at| start + at),
                // The final JSON event is part of the answer.
                Rule::JsonField { field, value } => {
                    json_field_is(line, field, value).then_some(end + 1)
                }
                _ => None,
            };
            self.scanned = end + 1;
            if let Some(body_end) = hit {
                self.finish_at(end + 1, body_end);
                return;
            }
        }
    }

    /// Marks the answer complete: stdout ends at `consumed`, its body at `body_end`.
    fn finish_at(&mut self, consumed: usize, body_end: usize) {
        let trailing = self.stdout.len() - consumed;
        self.stdout.truncate(consumed);
        self.body_end = Some(body_end);
        self.marker_tail = 0;
        self.complete = true;
        self.scanned = consumed;
        if trailing > 0 {
            log::debug!("{trailing} bytes of output arrived after the end of an answer");
        }
    }

    /// Undoes a completion that turned out to be early (the marker was part of the answer):
    /// collecting goes on.
    pub(crate) fn reopen(&mut self) {
        self.complete = false;
        self.marker_tail = 0;
        self.timer = None;
    }

    /// Takes the collected answer.
    pub(crate) fn into_collected(mut self) -> Collected {
        if let Some(end) = self.body_end {
            self.stdout.truncate(end);
            if matches!(self.rule, Rule::Line) && self.stdout.last() == Some(&b'\r') {
                self.stdout.pop();
            }
        }
        let marker_stream = match &self.rule {
            Rule::EndsWith { stream, .. } => Some(*stream),
            Rule::Counted { inner, .. } => match inner.as_ref() {
                Rule::EndsWith { stream, .. } => Some(*stream),
                _ => None,
            },
            _ => None,
        };
        if let Some(stream) = marker_stream {
            let buf = match stream {
                Stream::Stdout => &mut self.stdout,
                Stream::Stderr => &mut self.stderr,
            };
            let keep = buf.len().saturating_sub(self.marker_tail);
            buf.truncate(keep);
        }
        if let Rule::Numbered { stream, .. } = &self.rule {
            let buf = match stream {
                Stream::Stdout => &mut self.stdout,
                Stream::Stderr => &mut self.stderr,
            };
            *buf = without_prompts(buf, &self.prompts);
        }
        let sentinel_lines = match self.rule {
            Rule::Nonce { echoes, .. } => echoes,
            _ => Vec::new(),
        };
        Collected {
            stdout: self.stdout,
            stderr: self.stderr,
            prompt_number: self.prompt_number,
            sentinel_lines,
        }
    }
}

/// Finds numbered prompts (`nonce`, digits, `>` or `.`) in `buf` from `from`; returns where
/// to search from next time (a prompt cut off at the end of `buf` is looked at again).
fn scan_numbered(
    buf: &[u8],
    mut from: usize,
    nonce: &[u8],
    found: &mut Vec<NumberedPrompt>,
) -> usize {
    loop {
        let Some(at) = find(&buf[from..], nonce) else {
            return from.max(buf.len().saturating_sub(nonce.len().saturating_sub(1)));
        };
        let start = from + at;
        let digits = start + nonce.len();
        let mut i = digits;
        while i < buf.len() && buf[i].is_ascii_digit() && i - digits < MAX_NUMBER_DIGITS {
            i += 1;
        }
        if i == buf.len() {
            // The rest of the prompt has not arrived yet.
            return start;
        }
        let number = std::str::from_utf8(&buf[digits..i])
            .ok()
            .and_then(|d| d.parse::<u64>().ok());
        match (number, buf[i]) {
            (Some(number), kind @ (b'>' | b'.')) => {
                found.push(NumberedPrompt {
                    start,
                    end: i + 1,
                    number,
                    main: kind == b'>',
                });
                from = i + 1;
            }
            _ => from = start + 1,
        }
    }
}

/// `buf` without the numbered prompts in it.
fn without_prompts(buf: &[u8], prompts: &[NumberedPrompt]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut at = 0;
    for prompt in prompts {
        if prompt.start >= at && prompt.end <= buf.len() {
            out.extend_from_slice(&buf[at..prompt.start]);
            at = prompt.end;
        }
    }
    out.extend_from_slice(&buf[at.min(buf.len())..]);
    out
}

/// `buf` without any occurrence of `part` (not empty).
fn without_all(buf: &[u8], part: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut at = 0;
    while let Some(off) = find(&buf[at..], part) {
        out.extend_from_slice(&buf[at..at + off]);
        at += off + part.len();
    }
    out.extend_from_slice(&buf[at..]);
    out
}

/// How many bytes at the end of `buf` may be the start of `marker` (all of it included).
fn held_back(buf: &[u8], marker: &[u8]) -> usize {
    (1..=marker.len().min(buf.len()))
        .rev()
        .find(|&k| buf.ends_with(&marker[..k]))
        .unwrap_or(0)
}

/// The length of `bytes` without a last UTF-8 character that more bytes may still complete.
pub(crate) fn utf8_complete(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(4) {
        let b = bytes[n - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if back < need { n - back } else { n };
    }
    n
}

fn json_field_is(line: &[u8], field: &str, value: &str) -> bool {
    let trimmed = trim_ascii(line);
    if trimmed.first() != Some(&b'{') {
        return false;
    }
    match serde_json::from_slice::<serde_json::Value>(trimmed) {
        Ok(v) => v.get(field).and_then(|f| f.as_str()) == Some(value),
        Err(_) => false,
    }
}

fn trim_ascii(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// Finds `needle` in `haystack` (both short in practice: a window and a marker).
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    if needle.len() > haystack.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        match find_byte(&haystack[i..=haystack.len() - needle.len()], first) {
            Some(off) => {
                let at = i + off;
                if &haystack[at..at + needle.len()] == needle {
                    return Some(at);
                }
                i = at + 1;
            }
            None => return None,
        }
    }
    None
}

/// A fresh, unguessable-enough marker for sentinel framing: unique per process and request.
pub(crate) fn fresh_nonce() -> String {
    static SEED: AtomicU64 = AtomicU64::new(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = SEED.load(Ordering::Relaxed);
    if seed == 0 {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        seed = splitmix64(t ^ (u64::from(std::process::id()) << 32)) | 1;
        SEED.store(seed, Ordering::Relaxed);
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("__aim_{:016x}__", splitmix64(seed.wrapping_add(n)))
}

/// SplitMix64: a tiny, well-mixed generator step, used for nonces and jitter.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn feed_all(framer: &mut Framer, chunks: &[(&str, Stream)]) -> Progress {
        let now = Instant::now();
        let mut p = Progress::Pending;
        for (chunk, stream) in chunks {
            p = framer.feed(*stream, chunk.as_bytes(), now);
        }
        p
    }

    fn prompt_rule(marker: &str, stream: Stream) -> Rule {
        Rule::EndsWith {
            marker: marker.as_bytes().to_vec(),
            stream,
            settle: Duration::ZERO,
        }
    }

    #[test]
    fn prompt_marker_completes_only_at_the_end() {
        let mut f = Framer::new(prompt_rule("> ", Stream::Stdout), 1 << 20, Instant::now());
        let p = feed_all(
            &mut f,
            &[
                ("line one\n> quoted", Stream::Stdout),
                ("\nmore\n", Stream::Stdout),
            ],
        );
        assert_eq!(p, Progress::Pending);
        assert_eq!(
            feed_all(&mut f, &[(">", Stream::Stdout), (" ", Stream::Stdout)]),
            Progress::Complete
        );
        let c = f.into_collected();
        assert_eq!(c.stdout, b"line one\n> quoted\nmore\n");
    }

    #[test]
    fn prompt_marker_on_stderr_keeps_stdout_as_body() {
        let mut f = Framer::new(prompt_rule(">>> ", Stream::Stderr), 1 << 20, Instant::now());
        let p = feed_all(
            &mut f,
            &[
                ("42\n", Stream::Stdout),
                ("Traceback\n>>> ", Stream::Stderr),
            ],
        );
        assert_eq!(p, Progress::Complete);
        let c = f.into_collected();
        assert_eq!(c.stdout, b"42\n");
        assert_eq!(c.stderr, b"Traceback\n");
    }

    #[test]
    fn settle_period_waits_for_quiet() {
        let t0 = Instant::now();
        let rule = Rule::EndsWith {
            marker: b"> ".to_vec(),
            stream: Stream::Stdout,
            settle: Duration::from_millis(100),
        };
        let mut f = Framer::new(rule, 1 << 20, t0);
        assert_eq!(f.feed(Stream::Stdout, b"a\n> ", t0), Progress::Pending);
        let due = f.deadline().unwrap();
        assert_eq!(f.tick(t0 + Duration::from_millis(50)), Progress::Pending);
        // More output restarts the period and moves the marker away from the end.
        assert_eq!(
            f.feed(Stream::Stdout, b"quote\n", t0 + Duration::from_millis(60)),
            Progress::Pending
        );
        assert_eq!(f.deadline(), None);
        assert_eq!(
            f.feed(Stream::Stdout, b"> ", t0 + Duration::from_millis(70)),
            Progress::Pending
        );
        assert!(f.deadline().unwrap() > due);
        assert_eq!(f.tick(t0 + Duration::from_millis(171)), Progress::Complete);
        assert_eq!(f.into_collected().stdout, b"a\n> quote\n");
    }

    #[test]
    fn line_rule_takes_one_line() {
        let mut f = Framer::new(Rule::Line, 1 << 20, Instant::now());
        assert_eq!(
            feed_all(&mut f, &[("hel", Stream::Stdout)]),
            Progress::Pending
        );
        assert_eq!(
            feed_all(&mut f, &[("lo\r\nnext", Stream::Stdout)]),
            Progress::Complete
        );
        assert_eq!(f.into_collected().stdout, b"hello");
    }

    #[test]
    fn nonce_rule_finds_a_nonce_split_across_chunks() {
        let nonce = fresh_nonce();
        let mut f = Framer::new(
            Rule::Nonce {
                nonce: nonce.as_bytes().to_vec(),
                echoes: Vec::new(),
            },
            1 << 20,
            Instant::now(),
        );
        let (a, b) = nonce.split_at(7);
        let p = feed_all(
            &mut f,
            &[
                ("4\n", Stream::Stdout),
                (a, Stream::Stdout),
                (b, Stream::Stdout),
            ],
        );
        assert_eq!(
            p,
            Progress::Pending,
            "the sentinel line is not complete yet"
        );
        assert_eq!(
            feed_all(&mut f, &[("\n", Stream::Stdout)]),
            Progress::Complete
        );
        assert_eq!(f.into_collected().stdout, b"4\n");
    }

    #[test]
    fn stale_nonces_never_end_a_new_answer() {
        let old = fresh_nonce();
        let new = fresh_nonce();
        assert_ne!(old, new);
        let mut f = Framer::new(
            Rule::Nonce {
                nonce: new.as_bytes().to_vec(),
                echoes: Vec::new(),
            },
            1 << 20,
            Instant::now(),
        );
        let stale = format!("{old}\n");
        assert_eq!(
            feed_all(&mut f, &[(&stale, Stream::Stdout)]),
            Progress::Pending
        );
    }

    #[test]
    fn json_rule_ends_at_matching_event() {
        let rule = Rule::JsonField {
            field: "type".into(),
            value: "result".into(),
        };
        let mut f = Framer::new(rule, 1 << 20, Instant::now());
        let p = feed_all(
            &mut f,
            &[
                (
                    "{\"type\":\"assistant\",\"text\":\"type result\"}\nnot json\n",
                    Stream::Stdout,
                ),
                ("{\"type\":\"res", Stream::Stdout),
            ],
        );
        assert_eq!(p, Progress::Pending);
        assert_eq!(
            feed_all(&mut f, &[("ult\"}\n", Stream::Stdout)]),
            Progress::Complete
        );
        let out = String::from_utf8(f.into_collected().stdout).unwrap();
        assert!(out.ends_with("{\"type\":\"result\"}\n"));
        assert!(out.starts_with("{\"type\":\"assistant\""));
    }

    #[test]
    fn idle_rule_completes_after_quiet() {
        let t0 = Instant::now();
        let mut f = Framer::new(
            Rule::Idle {
                quiet: Duration::from_millis(10),
            },
            1 << 20,
            t0,
        );
        f.feed(Stream::Stdout, b"x", t0 + Duration::from_millis(5));
        assert_eq!(f.tick(t0 + Duration::from_millis(12)), Progress::Pending);
        assert_eq!(f.tick(t0 + Duration::from_millis(15)), Progress::Complete);
    }

    #[test]
    fn contains_rule_sees_text_across_chunks() {
        let mut f = Framer::new(
            Rule::Contains {
                text: b"READY".to_vec(),
                stream: Stream::Stderr,
            },
            1 << 20,
            Instant::now(),
        );
        assert_eq!(
            feed_all(
                &mut f,
                &[("..RE", Stream::Stderr), ("READY", Stream::Stdout)]
            ),
            Progress::Pending
        );
        assert_eq!(
            feed_all(&mut f, &[("ADY..", Stream::Stderr)]),
            Progress::Complete
        );
    }

    #[test]
    fn output_over_the_limit_is_refused() {
        let mut f = Framer::new(Rule::Line, 8, Instant::now());
        assert_eq!(
            feed_all(&mut f, &[("12345", Stream::Stdout)]),
            Progress::Pending
        );
        assert_eq!(
            feed_all(&mut f, &[("6789", Stream::Stdout)]),
            Progress::TooLarge
        );
    }

    #[test]
    fn scanning_is_linear_in_output_size() {
        // 4 MiB in 1-byte chunks against an unmatched nonce: quadratic rescans would take
        // minutes; the incremental scan takes milliseconds. (A correctness check: it must not
        // match, and it must finish.)
        let mut f = Framer::new(
            Rule::Nonce {
                nonce: b"__never__".to_vec(),
                echoes: Vec::new(),
            },
            8 << 20,
            Instant::now(),
        );
        let now = Instant::now();
        for _ in 0..(4 << 20) {
            assert_eq!(f.feed(Stream::Stdout, b"a", now), Progress::Pending);
        }
        assert_eq!(f.len(), 4 << 20);
    }

    fn numbered(after: u64) -> Framer {
        let rule = Rule::Numbered {
            nonce: b"#S#".to_vec(),
            stream: Stream::Stderr,
            after,
        };
        Framer::new(rule, 1 << 20, Instant::now())
    }

    #[test]
    fn numbered_prompts_end_only_at_a_newer_main_prompt() {
        let mut f = numbered(4);
        // A forged plain prompt, a stale prompt and a prompt split across reads.
        let p = feed_all(
            &mut f,
            &[
                ("out\n", Stream::Stdout),
                (">>> #S#4>", Stream::Stderr),
                ("err\n#S", Stream::Stderr),
                ("#", Stream::Stderr),
                ("5", Stream::Stderr),
            ],
        );
        assert_eq!(p, Progress::Pending);
        assert_eq!(f.take_continuations(), 0);
        assert_eq!(
            feed_all(&mut f, &[(">late", Stream::Stderr)]),
            Progress::Complete
        );
        assert_eq!(f.prompt_number(), Some(5));
        let c = f.into_collected();
        assert_eq!(c.stdout, b"out\n");
        assert_eq!(
            c.stderr, b">>> err\n",
            "prompts and what followed are left out"
        );
    }

    #[test]
    fn numbered_continuation_prompts_are_reported() {
        let mut f = numbered(4);
        assert_eq!(
            feed_all(&mut f, &[("#S#3.#S#4.", Stream::Stderr)]),
            Progress::Pending
        );
        assert_eq!(f.take_continuations(), 1, "only the current statement's");
        assert_eq!(f.take_continuations(), 0);
        assert_eq!(
            feed_all(&mut f, &[("#S#4.#S#x>#S#5>", Stream::Stderr)]),
            Progress::Complete
        );
        assert_eq!(f.take_continuations(), 1);
        assert_eq!(f.into_collected().stderr, b"#S#x>");
    }

    #[test]
    fn counted_markers_wait_for_every_prompt() {
        let rule = prompt_rule("> ", Stream::Stdout).counting(3);
        let mut f = Framer::new(rule, 1 << 20, Instant::now());
        assert_eq!(
            feed_all(&mut f, &[("> ", Stream::Stdout)]),
            Progress::Pending
        );
        assert_eq!(
            feed_all(&mut f, &[("one\n>", Stream::Stdout), (" ", Stream::Stdout)]),
            Progress::Pending
        );
        assert_eq!(
            feed_all(&mut f, &[("two\n> ", Stream::Stdout)]),
            Progress::Complete
        );
    }

    #[test]
    fn settled_stdout_holds_back_markers_and_split_characters() {
        let mut f = Framer::new(prompt_rule("> ", Stream::Stdout), 1 << 20, Instant::now());
        f.feed(Stream::Stdout, b"caf\xc3", Instant::now());
        assert_eq!(f.settled_stdout(), b"caf");
        f.feed(Stream::Stdout, b"\xa9\n>", Instant::now());
        assert_eq!(f.settled_stdout(), "caf\u{e9}\n".as_bytes());
        let mut s = Framer::new(
            Rule::Nonce {
                nonce: b"__n__".to_vec(),
                echoes: Vec::new(),
            },
            1 << 20,
            Instant::now(),
        );
        s.feed(Stream::Stdout, b"1\n__n", Instant::now());
        assert_eq!(s.settled_stdout(), b"1\n");
    }

    #[test]
    fn utf8_complete_cuts_only_unfinished_characters() {
        assert_eq!(utf8_complete(b"abc"), 3);
        assert_eq!(utf8_complete("\u{e9}".as_bytes()), 2);
        assert_eq!(utf8_complete(b"a\xe2\x82"), 1);
        assert_eq!(utf8_complete(b"a\xf0\x9f\x98"), 1);
        assert_eq!(utf8_complete("a\u{1f600}".as_bytes()), 5);
        assert_eq!(utf8_complete(b"a\xff"), 2);
        assert_eq!(utf8_complete(b""), 0);
    }

    fn sqlite3_sentinel() -> Framing {
        Framing::Sentinel {
            command: ";-- {nonce}\n.print {nonce}".into(),
        }
    }

    #[test]
    fn an_echoed_sentinel_command_neither_ends_the_answer_nor_stays_in_it() {
        let mut f = Framer::new(
            Rule::for_answer(&sqlite3_sentinel(), "__n__"),
            1 << 20,
            Instant::now(),
        );
        // sqlite3 after `.echo on`: the statement, its output, then the sentinel read back.
        let p = feed_all(
            &mut f,
            &[("SELECT 1;\n1\n;-- __n__\n.print __n__\n", Stream::Stdout)],
        );
        assert_eq!(p, Progress::Pending);
        assert_eq!(f.settled_stdout(), b"SELECT 1;\n1\n");
        assert_eq!(
            feed_all(&mut f, &[("__n__\n", Stream::Stdout)]),
            Progress::Complete
        );
        assert_eq!(f.into_collected().stdout, b"SELECT 1;\n1\n");
    }

    #[test]
    fn a_read_back_before_the_answers_output_is_cut_out_of_it() {
        let mut f = Framer::new(
            Rule::for_answer(&sqlite3_sentinel(), "__n__"),
            1 << 20,
            Instant::now(),
        );
        // A statement without `;`: sqlite3 echoes it with the sentinel's first line, then
        // runs it; the read-back arrives in pieces.
        let p = feed_all(
            &mut f,
            &[
                ("SELECT 2\n;-- __", Stream::Stdout),
                ("n__\n2\n.print __n__", Stream::Stdout),
            ],
        );
        assert_eq!(p, Progress::Pending);
        assert_eq!(f.settled_stdout(), b"SELECT 2\n2\n");
        assert_eq!(
            feed_all(&mut f, &[("\n__n__\n", Stream::Stdout)]),
            Progress::Complete
        );
        assert_eq!(f.into_collected().stdout, b"SELECT 2\n2\n");
    }

    #[test]
    fn errors_quoting_the_sentinel_leave_it_out() {
        let mut f = Framer::new(
            Rule::for_answer(&sqlite3_sentinel(), "__n__"),
            1 << 20,
            Instant::now(),
        );
        let p = feed_all(
            &mut f,
            &[
                ("  SELECT 1 + ;-- __n__\n", Stream::Stderr),
                ("__n__\n", Stream::Stdout),
            ],
        );
        assert_eq!(p, Progress::Complete);
        let mut collected = f.into_collected();
        collected.strip_sentinel_from_stderr();
        assert_eq!(collected.stderr, b"  SELECT 1 + \n");
    }

    #[test]
    fn answer_bytes_before_the_sentinel_on_its_line_end_the_answer() {
        let framing = Framing::Sentinel {
            command: "print \"{nonce}\\n\"".into(),
        };
        let mut f = Framer::new(Rule::for_answer(&framing, "__n__"), 1 << 20, Instant::now());
        // bc `print "abc"`: no newline, so the sentinel follows on the same line.
        assert_eq!(
            feed_all(
                &mut f,
                &[("x\nab", Stream::Stdout), ("c__n", Stream::Stdout)]
            ),
            Progress::Pending
        );
        assert_eq!(f.settled_stdout(), b"x\n");
        assert_eq!(
            feed_all(&mut f, &[("__\n", Stream::Stdout)]),
            Progress::Complete
        );
        assert_eq!(f.settled_stdout(), b"x\nabc");
        assert_eq!(f.into_collected().stdout, b"x\nabc");
    }

    #[test]
    fn an_echoed_sentinel_command_after_an_answer_without_newline_is_left_out() {
        let framing = sqlite3_sentinel();
        let mut f = Framer::new(Rule::for_answer(&framing, "__n__"), 1 << 20, Instant::now());
        // sqlite3 `.echo on`, `.mode ascii`: the echoed sentinel follows the row on its line.
        let out = "select 1;\n1\x1e;-- __n__\n.print __n__\n";
        assert_eq!(
            feed_all(&mut f, &[(out, Stream::Stdout)]),
            Progress::Pending
        );
        assert_eq!(f.settled_stdout(), b"select 1;\n");
        assert_eq!(
            feed_all(&mut f, &[("__n__\n", Stream::Stdout)]),
            Progress::Complete
        );
        assert_eq!(f.settled_stdout(), b"select 1;\n1\x1e");
        assert_eq!(f.into_collected().stdout, b"select 1;\n1\x1e");
        // Without echo, an answer that ends in `;` keeps it.
        let mut f = Framer::new(Rule::for_answer(&framing, "__n__"), 1 << 20, Instant::now());
        assert_eq!(
            feed_all(&mut f, &[("1;\n__n__\n", Stream::Stdout)]),
            Progress::Complete
        );
        assert_eq!(f.into_collected().stdout, b"1;\n");
    }

    #[test]
    fn find_works_on_edges() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"", b"a"), None);
        assert_eq!(find(b"aaa", b"aa"), Some(0));
    }
}
