//! Reading the child's output into the protocol's conversation and the stderr ring, and writing prompts
//! without blocking.

use super::*;

impl IoThread {
    pub(super) fn read_stream(&mut self, stream: Stream) {
        if stream == Stream::Stdout && self.linked() {
            self.read_linked();
            return;
        }
        let mut total = 0;
        loop {
            let Some(child) = &mut self.child else { return };
            let fd = match stream {
                Stream::Stdout => child.io.stdout.as_ref(),
                Stream::Stderr => child.io.stderr.as_ref(),
            };
            let Some(fd) = fd else { return };
            match nix::unistd::read(fd, &mut self.scratch) {
                Ok(0) => {
                    self.on_eof(stream);
                    return;
                }
                Ok(n) => {
                    let was_busy = matches!(
                        self.child.as_ref().map(|c| &c.phase),
                        Some(Phase::Busy { .. })
                    );
                    let chunk = std::mem::take(&mut self.scratch);
                    let wrote = self.on_output(stream, &chunk[..n]);
                    self.scratch = chunk;
                    total += n;
                    let answered = was_busy
                        && matches!(self.child.as_ref().map(|c| &c.phase), Some(Phase::Idle));
                    // Once an answer is complete, start the next prompt before reading more;
                    // once the protocol wrote to the tool (the next init line), what the tool
                    // says to it is read in the next poll round, both streams together.
                    if total >= READ_BUDGET || answered || wrote {
                        return;
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                // A PTY master reports EIO once the child side is closed.
                Err(Errno::EIO) if child.io.pty => {
                    self.on_eof(stream);
                    return;
                }
                Err(e) => {
                    log::warn!("{}[{}]: read failed: {e}", self.cfg.spec.name, self.index());
                    self.on_eof(stream);
                    return;
                }
            }
        }
    }

    /// Whether the child is on another host, behind a framed link.
    pub(super) fn linked(&self) -> bool {
        self.child.as_ref().is_some_and(|c| c.io.link.is_some())
    }

    /// Reads the link's frames and feeds the tool's output they carry to the conversation,
    /// in order, like `read_stream` does for a local tool's pipes.
    fn read_linked(&mut self) {
        let mut total = 0;
        loop {
            let next = self
                .child
                .as_mut()
                .and_then(|c| c.io.link.as_mut())
                .and_then(|l| l.ready.pop_front());
            if let Some((stream, bytes)) = next {
                let was_busy = matches!(
                    self.child.as_ref().map(|c| &c.phase),
                    Some(Phase::Busy { .. })
                );
                self.on_output(stream, &bytes);
                total += bytes.len();
                let answered =
                    was_busy && matches!(self.child.as_ref().map(|c| &c.phase), Some(Phase::Idle));
                if total >= READ_BUDGET || answered {
                    return;
                }
                continue;
            }
            match self.read_link_once() {
                Ok(true) => {}
                Ok(false) => return,
                Err(()) => {
                    self.on_eof(Stream::Stdout);
                    return;
                }
            }
        }
    }

    /// One read(2) of the link, decoded into its queue. `Ok(false)`: nothing to read now;
    /// `Err`: the link ended or broke (the reason is in the stderr tail).
    fn read_link_once(&mut self) -> std::result::Result<bool, ()> {
        let Some(child) = &mut self.child else {
            return Ok(false);
        };
        let (Some(fd), Some(link)) = (child.io.stdout.as_ref(), child.io.link.as_mut()) else {
            return Ok(false);
        };
        loop {
            match nix::unistd::read(fd, &mut self.scratch) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    return match link.decode(&self.scratch[..n]) {
                        Ok(()) => Ok(true),
                        Err(reason) => {
                            log::warn!(
                                "{}[{}]: {reason}",
                                self.cfg.spec.name,
                                self.cfg.shared.index
                            );
                            self.note_stderr(&reason);
                            Err(())
                        }
                    };
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(false),
                Err(e) => {
                    log::warn!("{}[{}]: read failed: {e}", self.cfg.spec.name, self.index());
                    return Err(());
                }
            }
        }
    }

    /// `read_available` for a linked child: the decoded output of `stream` (and for stderr,
    /// what the `ssh` client itself wrote).
    fn read_available_linked(&mut self, stream: Stream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut read = 0;
        while read < 64 * 1024 {
            match self.read_link_once() {
                Ok(true) => read += 1,
                _ => break,
            }
        }
        let Some(child) = &mut self.child else {
            return got;
        };
        if let Some(link) = child.io.link.as_mut() {
            let mut kept = std::collections::VecDeque::new();
            for (s, bytes) in link.ready.drain(..) {
                if s == stream {
                    got.extend_from_slice(&bytes);
                } else {
                    kept.push_back((s, bytes));
                }
            }
            link.ready = kept;
        }
        if stream == Stream::Stderr {
            if let Some(fd) = child.io.stderr.as_ref() {
                let mut buf = [0u8; 4096];
                while got.len() < 64 * 1024 {
                    match nix::unistd::read(fd, &mut buf) {
                        Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                        Err(Errno::EINTR) => continue,
                        _ => break,
                    }
                }
            }
            if !got.is_empty() {
                let mut line = std::mem::take(&mut child.stderr_line);
                self.push_stderr(&mut line, &got);
                if let Some(child) = &mut self.child {
                    child.stderr_line = line;
                }
            }
        }
        got
    }

    /// Reads what `stream` has available now (up to 64 KiB), without blocking.
    pub(super) fn read_available(&mut self, stream: Stream) -> Vec<u8> {
        if self.linked() {
            return self.read_available_linked(stream);
        }
        let mut got = Vec::new();
        let Some(child) = &mut self.child else {
            return got;
        };
        let fd = match stream {
            Stream::Stdout => child.io.stdout.as_ref(),
            Stream::Stderr => child.io.stderr.as_ref(),
        };
        let Some(fd) = fd else { return got };
        let mut buf = [0u8; 4096];
        while got.len() < 64 * 1024 {
            match nix::unistd::read(fd, &mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                _ => break,
            }
        }
        if stream == Stream::Stderr && !got.is_empty() {
            let mut line = std::mem::take(&mut child.stderr_line);
            self.push_stderr(&mut line, &got);
            if let Some(child) = &mut self.child {
                child.stderr_line = line;
            }
        }
        got
    }

    pub(super) fn drain_stderr(&mut self, child: &mut Running) {
        if let Some(link) = child.io.link.as_mut() {
            let stderr: Vec<Vec<u8>> = link
                .ready
                .drain(..)
                .filter(|(s, _)| *s == Stream::Stderr)
                .map(|(_, b)| b)
                .collect();
            for bytes in stderr {
                self.push_stderr(&mut child.stderr_line, &bytes);
                keep_turn_stderr(&mut child.turn_stderr, &bytes);
            }
        }
        let Some(fd) = child.io.stderr.take() else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match nix::unistd::read(&fd, &mut buf) {
                Ok(n) if n > 0 => {
                    left = left.saturating_sub(n);
                    self.push_stderr(&mut child.stderr_line, &buf[..n]);
                    keep_turn_stderr(&mut child.turn_stderr, &buf[..n]);
                }
                _ => break,
            }
        }
        if !child.stderr_line.is_empty() {
            let line = std::mem::take(&mut child.stderr_line);
            self.push_stderr_line(&line);
        }
    }

    /// A stream ended. Stdout, or a stream the protocol reads answers from
    /// (`Conversation::reads`), means the tool can no longer answer: it gets a moment to
    /// exit (it may be exiting), then it is stopped; an answer in flight fails with the exit.
    pub(super) fn on_eof(&mut self, stream: Stream) {
        let Some(child) = &mut self.child else { return };
        let needed = match stream {
            Stream::Stderr => {
                child.io.stderr = None;
                // Linked: this is the local `ssh` client's own stderr, not the tool's.
                child.conversation.reads(Stream::Stderr) && child.io.link.is_none()
            }
            Stream::Stdout => {
                child.io.stdout = None;
                if child.io.pty {
                    child.io.stdin = None;
                }
                true
            }
        };
        if needed && !matches!(child.phase, Phase::Stopping { .. }) {
            log::debug!(
                "{}[{}]: pid {} closed its {}",
                self.cfg.spec.name,
                self.cfg.shared.index,
                child.process.pid(),
                stream_name(stream)
            );
            child.closed = Some(stream);
            self.begin_stop(ExitCause::Crashed, StopStep::AwaitExit);
        }
    }

    /// Hands output to the conversation; true when the conversation wrote to the tool.
    pub(super) fn on_output(&mut self, stream: Stream, raw: &[u8]) -> bool {
        let now = Instant::now();
        self.heard_at = Some(now);
        let Some(child) = &mut self.child else {
            return false;
        };
        let mut stripped = Vec::new();
        let bytes = match &mut child.strip {
            Some((out, err)) => {
                let s = if stream == Stream::Stdout { out } else { err };
                s.strip_into(raw, &mut stripped);
                &stripped[..]
            }
            None => raw,
        };
        if stream == Stream::Stderr {
            let mut line = std::mem::take(&mut child.stderr_line);
            self.push_stderr(&mut line, bytes);
            let Some(child) = &mut self.child else {
                return false;
            };
            child.stderr_line = line;
        }
        let Some(child) = &mut self.child else {
            return false;
        };
        let Running {
            phase,
            conversation,
            out,
            turn_stderr,
            streamed,
            ..
        } = child;
        let pending_input = out.len();
        let (step, starting) = match phase {
            Phase::Starting { .. } => (conversation.starting(stream, bytes, now, out), true),
            Phase::Busy { job, .. } => {
                if stream == Stream::Stderr {
                    keep_turn_stderr(turn_stderr, bytes);
                }
                let step = conversation.answering(stream, bytes, now, out);
                if let Some(chunks) = &job.stream {
                    let raw = if stream == Stream::Stdout { bytes } else { &[] };
                    if let Some(delta) = conversation.take_delta(raw) {
                        // Unbounded: the I/O thread never waits for a slow reader.
                        streamed.push_str(&delta);
                        let _ = chunks.send(delta);
                    }
                }
                (step, false)
            }
            Phase::Idle => {
                let verdict = conversation.between(stream, bytes, false);
                let len = bytes.len();
                match verdict {
                    Between::Absorbed | Between::Stray => self.on_stray(stream, len, false),
                    Between::Late => {
                        self.on_stray(stream, len, true);
                        self.begin_stop(ExitCause::Protocol, StopStep::Term);
                    }
                }
                return false;
            }
            Phase::Stopping { .. } => return false,
        };
        let wrote = out.len() > pending_input;
        if wrote {
            // The protocol answered the tool (a handshake step, a declined request).
            self.write_pending();
        }
        if starting {
            self.on_startup_step(step, now);
            return wrote;
        }
        self.on_answer_step(step, now);
        wrote
    }

    /// Acts on what the conversation says during an answer.
    pub(super) fn on_answer_step(&mut self, step: Step, now: Instant) {
        match step {
            Step::Pending => {}
            Step::Interrupt => self.send_sigint(now),
            Step::Done => self.finish_busy(now),
            Step::TooLarge => {
                let err = Error::ResponseTooLarge {
                    instance: self.cfg.shared.index,
                    limit: self.cfg.spec.max_response_bytes,
                    prompt: None,
                };
                self.abort_busy(err, ExitCause::TooLarge);
            }
            Step::Failed(reason) => {
                let err = Error::ToolReported {
                    instance: self.cfg.shared.index,
                    message: reason,
                    prompt: None,
                };
                self.abort_busy(err, ExitCause::Protocol);
            }
        }
    }

    pub(super) fn push_stderr(&self, line: &mut Vec<u8>, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    if line.len() < MAX_STDERR_LINE {
                        let take = pos.min(MAX_STDERR_LINE - line.len());
                        line.extend_from_slice(&rest[..take]);
                    }
                    let done = std::mem::take(line);
                    self.push_stderr_line(&done);
                    rest = &rest[pos + 1..];
                }
                None => {
                    let take = rest.len().min(MAX_STDERR_LINE.saturating_sub(line.len()));
                    line.extend_from_slice(&rest[..take]);
                    rest = &[];
                }
            }
        }
    }

    /// A line of aim's own about the process (why it is stopped): in its stderr tail, and in
    /// the stderr of the answer in flight, which a died error carries.
    pub(super) fn note_stderr(&mut self, line: &str) {
        self.push_stderr_line(line.as_bytes());
        if let Some(child) = &mut self.child {
            keep_turn_stderr(&mut child.turn_stderr, format!("{line}\n").as_bytes());
        }
    }

    pub(super) fn push_stderr_line(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        log::debug!(
            "{}[{}] stderr: {text}",
            self.cfg.spec.name,
            self.cfg.shared.index
        );
        let cap = self.cfg.spec.stderr_lines;
        if cap == 0 {
            return;
        }
        let mut info = self.cfg.shared.info.lock();
        if info.stderr_tail.len() >= cap {
            info.stderr_tail.pop_front();
        }
        info.stderr_tail.push_back(text.to_string());
    }

    pub(super) fn write_pending(&mut self) {
        if self.linked() {
            self.write_linked();
            return;
        }
        let Some(child) = &mut self.child else { return };
        loop {
            if child.out_pos >= child.out.len() {
                child.out.clear();
                child.out_pos = 0;
                if let Phase::Stopping {
                    step: StopStep::Quit,
                    ..
                } = child.phase
                {
                    // The quit command is out: end of input reinforces it.
                    child.io.stdin = None;
                }
                return;
            }
            let Some(fd) = &child.io.stdin else { return };
            match nix::unistd::write(fd, &child.out[child.out_pos..]) {
                Ok(n) => child.out_pos += n,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    // EPIPE: the child stopped reading (it is exiting, or closed stdin).
                    log::debug!(
                        "{}[{}]: write failed: {e}",
                        self.cfg.spec.name,
                        self.cfg.shared.index
                    );
                    child.io.stdin = None;
                    child.out.clear();
                    child.out_pos = 0;
                    if !matches!(child.phase, Phase::Stopping { .. }) {
                        self.begin_stop(ExitCause::Crashed, StopStep::AwaitExit);
                    }
                    return;
                }
            }
        }
    }

    /// `write_pending` for a linked child: the prompt goes out framed, with any signals the
    /// launched process queued and, when quitting, the end of the tool's input.
    fn write_linked(&mut self) {
        let Some(child) = &mut self.child else { return };
        let Some(link) = child.io.link.as_mut() else {
            return;
        };
        if child.out_pos < child.out.len() {
            link.input(&child.out[child.out_pos..]);
        }
        child.out.clear();
        child.out_pos = 0;
        if let Phase::Stopping {
            step: StopStep::Quit,
            ..
        } = child.phase
        {
            link.close_input();
        }
        let Some(fd) = &child.io.stdin else { return };
        match link.flush(fd) {
            Ok(true) => child.io.stdin = None,
            Ok(false) => {}
            Err(e) => {
                log::debug!(
                    "{}[{}]: write to the link failed: {e}",
                    self.cfg.spec.name,
                    self.cfg.shared.index
                );
                child.io.stdin = None;
                if !matches!(child.phase, Phase::Stopping { .. }) {
                    self.begin_stop(ExitCause::Crashed, StopStep::AwaitExit);
                }
            }
        }
    }
}

/// A stream's name, as in messages.
pub(super) fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

/// Adds `bytes` to the stderr of the answer in flight, up to its cap.
fn keep_turn_stderr(turn_stderr: &mut Vec<u8>, bytes: &[u8]) {
    let take = bytes
        .len()
        .min(TURN_STDERR_CAP.saturating_sub(turn_stderr.len()));
    turn_stderr.extend_from_slice(&bytes[..take]);
}

/// The last `keep` non-empty lines of an answer's stderr, without lines that carry an
/// end-of-answer nonce (a tool quoting aim's sentinel).
pub(super) fn turn_stderr_lines(turn_stderr: &[u8], keep: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(turn_stderr);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty() && !l.contains("__aim_"))
        .collect();
    let skip = lines.len().saturating_sub(keep);
    lines[skip..].iter().map(|l| l.to_string()).collect()
}
