//! [`Framed`]: the spec's framing, input format and readiness as a protocol (REPLs, the demo
//! agent, any line-oriented tool).

use std::time::{Duration, Instant};

use super::{check_prompt, Answer, Between, Context, Conversation, Protocol, Step};
use crate::framing::{fresh_nonce, Framer, Progress, Rule};
use crate::spec::{Framing, Readiness, Stream, ToolSpec};

/// How long a SIGINT may wait after the previous one (the I/O thread spaces them).
const SIGINT_SPACING: Duration = Duration::from_secs(2);
/// Readiness output kept while waiting for the ready marker.
const STARTUP_WINDOW: usize = 1 << 20;
/// First and longest pause between checks that a tool is blocked reading its stdin.
const READ_CHECK_FIRST: Duration = Duration::from_millis(1);
const READ_CHECK_MAX: Duration = Duration::from_millis(50);

/// The spec's [`Framing`], [`InputFormat`](crate::InputFormat) and [`Readiness`]: the answer
/// is the output (minus the prompt marker or sentinel line); `text` is it as UTF-8.
#[derive(Debug, Clone)]
pub struct Framed {
    spec: ToolSpec,
}

impl Framed {
    /// The framed protocol of `spec`.
    pub fn new(spec: &ToolSpec) -> Self {
        Framed { spec: spec.clone() }
    }
}

impl Protocol for Framed {
    fn name(&self) -> &str {
        "framed"
    }

    fn prepare(&self, prompt: &str) -> Result<Vec<u8>, String> {
        check_prompt(prompt, self.spec.max_prompt_bytes)?;
        self.spec.render(prompt)
    }

    fn conversation(&self, context: &Context) -> Box<dyn Conversation> {
        let await_read = matches!(
            self.spec.framing,
            Framing::Prompt {
                await_read: true,
                ..
            }
        );
        Box::new(FramedConversation {
            spec: self.spec.clone(),
            stdin: context.stdin.clone(),
            framer: None,
            absorbed: Vec::new(),
            await_read,
            recheck: None,
            marker_after_text: None,
            secret: String::new(),
            last_prompt: 0,
            continuations_allowed: 0,
            block_ended: false,
            interrupted: false,
            interrupt_at: None,
            give_up_at: None,
            streamed: 0,
            init_written: 0,
            ready_text: None,
            sentinel_init: false,
        })
    }
}

#[derive(Debug)]
struct FramedConversation {
    spec: ToolSpec,
    stdin: crate::stdin_wait::StdinProbe,
    framer: Option<Framer>,
    /// Output of the other stream read right after the answer was complete.
    absorbed: Vec<(Stream, Vec<u8>)>,
    await_read: bool,
    /// While the marker is seen but the tool is not yet reading stdin: when to look again,
    /// and the pause after that. The framer stays complete meanwhile (it knows the marker
    /// to strip); new output reopens it.
    recheck: Option<(Instant, Duration)>,
    /// Prompt framing with a readiness text other than the marker: once the text has
    /// appeared, the tool is ready only when its prompt follows (a prompt printed after the
    /// text would otherwise end the first answer).
    marker_after_text: Option<Rule>,
    /// Numbered prompts: this process's secret, and the number of the last main prompt
    /// (the statement the next line is read as).
    secret: String,
    last_prompt: u64,
    /// This turn: continuation prompts its own lines account for, whether `end_block` was
    /// written, and whether the tool was interrupted over an unfinished statement.
    continuations_allowed: usize,
    block_ended: bool,
    interrupted: bool,
    /// An interrupt waiting for the tool to read its stdin: when to look again, and the
    /// pause after that.
    interrupt_at: Option<(Instant, Duration)>,
    /// When an unfinished statement the interrupt has not ended makes the turn fail (and the
    /// process be recycled): the stop grace plus the spacing a SIGINT may wait for.
    give_up_at: Option<Instant>,
    /// Bytes of the answer's stdout already handed out as streamed pieces.
    streamed: usize,
    /// Numbered prompts at startup: how many `init` lines were written (one at a time, each
    /// after the prompt it is read at, so a compound statement can be ended before the next
    /// line), and the readiness text still to appear, if any.
    init_written: usize,
    ready_text: Option<Framer>,
    /// Sentinel framing at startup: `init` lines go one at a time, each followed by a
    /// sentinel, and one the tool writes to stderr for fails the start.
    sentinel_init: bool,
}

impl FramedConversation {
    fn marker_stream(&self) -> Stream {
        match &self.spec.framing {
            Framing::Prompt { stream, .. } | Framing::NumberedPrompt { stream, .. } => *stream,
            _ => Stream::Stdout,
        }
    }

    /// The numbered-prompt rule for an answer (or the startup) read after prompt `after`.
    fn numbered_rule(&self, after: u64) -> Rule {
        Rule::Numbered {
            nonce: self.secret.as_bytes().to_vec(),
            stream: self.marker_stream(),
            after,
        }
    }

    /// The tool showed continuation prompts: end the block the tool's way once, then
    /// interrupt it.
    fn on_continuations(&mut self, count: usize, input: &mut Vec<u8>) -> Step {
        let unexpected = count.saturating_sub(self.continuations_allowed);
        self.continuations_allowed = self.continuations_allowed.saturating_sub(count);
        if unexpected == 0 || self.interrupted {
            return Step::Pending;
        }
        if self.end_block_once(input) {
            return Step::Pending;
        }
        self.interrupted = true;
        self.interrupt_when_reading(Instant::now())
    }

    /// Writes the framing's `end_block` line (python's empty line) unless it was written
    /// already for this statement; `false` when there is none to write.
    fn end_block_once(&mut self, input: &mut Vec<u8>) -> bool {
        let Framing::NumberedPrompt {
            end_block: Some(line),
            ..
        } = &self.spec.framing
        else {
            return false;
        };
        if self.block_ended {
            return false;
        }
        self.block_ended = true;
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
        true
    }

    /// The error of an unfinished statement the interrupt did not end in time.
    fn interrupt_ignored(&self) -> String {
        format!(
            "unfinished statement: {} still waited for the rest of it{}, and the interrupt \
             (SIGINT) did not end it within {:?}; the process was recycled, losing its state",
            self.spec.name,
            if self.block_ended {
                " after the block was ended"
            } else {
                ""
            },
            self.spec.stop_grace + SIGINT_SPACING,
        )
    }

    /// SIGINT once the tool waits in `read(0)`: a signal that lands before it gets there
    /// would only be noticed at its next input, which never comes.
    fn interrupt_when_reading(&mut self, now: Instant) -> Step {
        match self.stdin.check() {
            Some(false) => {
                let pause = self.interrupt_at.map_or(READ_CHECK_FIRST, |(_, p)| p);
                self.interrupt_at = Some((now + pause, (pause * 2).min(READ_CHECK_MAX)));
                Step::Pending
            }
            Some(true) | None => {
                self.interrupt_at = None;
                self.give_up_at = Some(now + self.spec.stop_grace + SIGINT_SPACING);
                Step::Interrupt
            }
        }
    }

    /// A complete framer may still be early under `await_read`: confirm that the tool waits
    /// for input, or reopen and look again soon.
    fn confirm(&mut self, progress: Progress, now: Instant) -> Step {
        match progress {
            Progress::Pending => Step::Pending,
            Progress::TooLarge => Step::TooLarge,
            Progress::Complete if !self.await_read => Step::Done,
            Progress::Complete => match self.stdin.check() {
                Some(false) => {
                    let pause = self.recheck.map_or(READ_CHECK_FIRST, |(_, p)| p);
                    self.recheck = Some((now + pause, (pause * 2).min(READ_CHECK_MAX)));
                    Step::Pending
                }
                // Waiting for input, or the check is unavailable (the settle period decided).
                Some(true) | None => {
                    self.recheck = None;
                    Step::Done
                }
            },
        }
    }
}

impl FramedConversation {
    /// Startup under numbered prompts: each prompt lets the next `init` line in; a line the
    /// tool still waits on is ended with `end_block` once, and fails the start if it is still
    /// unfinished then. Ready at the prompt after the last line (and the readiness text).
    fn starting_numbered(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Step {
        if let Some(text) = &mut self.ready_text {
            match text.feed(stream, bytes, now) {
                Progress::Complete => self.ready_text = None,
                Progress::TooLarge => {
                    // Keep only recent startup output; the text is still ahead.
                    let mut fresh = Framer::new(text.rule().clone(), STARTUP_WINDOW, now);
                    if fresh.feed(stream, bytes, now) == Progress::Complete {
                        self.ready_text = None;
                    } else {
                        *text = fresh;
                    }
                }
                Progress::Pending => {}
            }
        }
        let Some(f) = &mut self.framer else {
            return self.ready_once_text_seen();
        };
        match f.feed(stream, bytes, now) {
            Progress::Complete => {
                if let Some(number) = f.prompt_number() {
                    self.last_prompt = number;
                }
                match self.spec.init.get(self.init_written) {
                    Some(line) => {
                        input.extend_from_slice(line.as_bytes());
                        input.push(b'\n');
                        self.init_written += 1;
                        self.block_ended = false;
                        let limit = self.spec.max_response_bytes.max(STARTUP_WINDOW);
                        self.framer = Some(Framer::new(
                            self.numbered_rule(self.last_prompt),
                            limit,
                            now,
                        ));
                        Step::Pending
                    }
                    None => {
                        self.framer = None;
                        self.ready_once_text_seen()
                    }
                }
            }
            Progress::TooLarge => {
                // Keep only recent startup output; the prompt is still ahead.
                *f = Framer::new(f.rule().clone(), STARTUP_WINDOW, now);
                Step::Pending
            }
            Progress::Pending if f.take_continuations() > 0 => self.unfinished_init_line(input),
            Progress::Pending => Step::Pending,
        }
    }

    /// The tool waits for the rest of the init line just written: end the block its way once,
    /// then give up on the start.
    fn unfinished_init_line(&mut self, input: &mut Vec<u8>) -> Step {
        if self.end_block_once(input) {
            return Step::Pending;
        }
        let line = self
            .spec
            .init
            .get(self.init_written.wrapping_sub(1))
            .map_or("", String::as_str);
        Step::Failed(format!(
            "init line {} `{line}` is unfinished: {} still waited for the rest of it{}",
            self.init_written,
            self.spec.name,
            if self.block_ended {
                " after the block was ended"
            } else {
                ""
            },
        ))
    }

    /// Writes the next `init` line and a sentinel of its own.
    fn next_sentinel_init_line(&mut self, now: Instant, input: &mut Vec<u8>) {
        let line = &self.spec.init[self.init_written];
        input.extend_from_slice(line.as_bytes());
        input.push(b'\n');
        let nonce = fresh_nonce();
        push_sentinel(&self.spec.framing, &nonce, input);
        self.init_written += 1;
        let limit = self.spec.max_response_bytes.max(STARTUP_WINDOW);
        let rule = Rule::for_answer(&self.spec.framing, &nonce);
        self.framer = Some(Framer::new(rule, limit, now));
    }

    /// Startup under sentinel framing with `init` lines: each line's sentinel lets the next
    /// line in, unless the tool wrote to stderr for it (its complaint fails the start). Ready
    /// at the last line's sentinel.
    fn starting_sentinel(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Step {
        let Some(f) = &mut self.framer else {
            return Step::Done;
        };
        match f.feed(stream, bytes, now) {
            Progress::Pending => Step::Pending,
            Progress::TooLarge => {
                // Keep only recent startup output; the sentinel is still ahead.
                *f = Framer::new(f.rule().clone(), STARTUP_WINDOW, now);
                Step::Pending
            }
            Progress::Complete => {
                let Some(framer) = self.framer.take() else {
                    return Step::Done;
                };
                let mut collected = framer.into_collected();
                collected.strip_sentinel_from_stderr();
                let said = String::from_utf8_lossy(&collected.stderr);
                if !said.trim().is_empty() {
                    let n = self.init_written;
                    return Step::Failed(format!(
                        "init line {n} `{}` failed: {} said: {}",
                        self.spec.init[n - 1],
                        self.spec.name,
                        said.trim()
                    ));
                }
                if self.init_written < self.spec.init.len() {
                    self.next_sentinel_init_line(now, input);
                    return Step::Pending;
                }
                Step::Done
            }
        }
    }

    /// Every init line is answered: ready, unless the readiness text has yet to appear.
    fn ready_once_text_seen(&self) -> Step {
        if self.ready_text.is_some() {
            Step::Pending
        } else {
            Step::Done
        }
    }
}

impl Conversation for FramedConversation {
    fn open(&mut self, now: Instant, input: &mut Vec<u8>) -> Step {
        let init_lines = self.spec.init.len();
        let readiness = self.spec.effective_readiness();
        let limit = self.spec.max_response_bytes.max(STARTUP_WINDOW);
        if let Framing::NumberedPrompt { setup, .. } = &self.spec.framing {
            // Prompt 1 follows the setup line; each init line is one statement.
            self.secret = fresh_nonce();
            self.last_prompt = 1 + init_lines as u64;
            input.extend_from_slice(setup.replace("{nonce}", &self.secret).as_bytes());
            input.push(b'\n');
            if !matches!(readiness, Readiness::Immediate) {
                // Init lines go one at a time, each once its prompt is shown (`starting`).
                if let Readiness::Text { text, stream } = readiness {
                    let rule = Rule::Contains {
                        text: text.into_bytes(),
                        stream,
                    };
                    self.ready_text = Some(Framer::new(rule, STARTUP_WINDOW, now));
                }
                self.framer = Some(Framer::new(self.numbered_rule(0), limit, now));
                return Step::Pending;
            }
        }
        if matches!(self.spec.framing, Framing::Sentinel { .. })
            && matches!(readiness, Readiness::Auto)
            && init_lines > 0
        {
            self.sentinel_init = true;
            self.next_sentinel_init_line(now, input);
            return Step::Pending;
        }
        for line in &self.spec.init {
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
        }
        self.framer = match self.spec.effective_readiness() {
            Readiness::Immediate => None,
            Readiness::Text { text, stream } => {
                // Every line written yields one prompt: the first prompt, then one per init
                // line, so a prompt left over from an init line cannot end the first answer.
                let prompts = 1 + init_lines;
                let rule = match &self.spec.framing {
                    Framing::Prompt { marker, settle, .. } if *marker == text => Rule::EndsWith {
                        marker: text.into_bytes(),
                        stream,
                        settle: *settle,
                    }
                    .counting(prompts),
                    Framing::Prompt {
                        marker,
                        stream: marker_stream,
                        settle,
                        ..
                    } => {
                        self.marker_after_text = Some(
                            Rule::EndsWith {
                                marker: marker.clone().into_bytes(),
                                stream: *marker_stream,
                                settle: *settle,
                            }
                            .counting(prompts),
                        );
                        Rule::Contains {
                            text: text.into_bytes(),
                            stream,
                        }
                    }
                    _ => Rule::Contains {
                        text: text.into_bytes(),
                        stream,
                    },
                };
                Some(Framer::new(rule, limit, now))
            }
            Readiness::Auto => {
                // Sentinel framing: a sentinel round trip proves the tool reads and answers.
                let nonce = fresh_nonce();
                push_sentinel(&self.spec.framing, &nonce, input);
                Some(Framer::new(
                    Rule::for_answer(&self.spec.framing, &nonce),
                    limit,
                    now,
                ))
            }
        };
        if self.framer.is_none() {
            Step::Done
        } else {
            Step::Pending
        }
    }

    fn starting(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Step {
        if !self.secret.is_empty() {
            return self.starting_numbered(stream, bytes, now, input);
        }
        if self.sentinel_init {
            return self.starting_sentinel(stream, bytes, now, input);
        }
        let Some(f) = &mut self.framer else {
            return Step::Done;
        };
        match f.feed(stream, bytes, now) {
            Progress::Complete => match self.marker_after_text.take() {
                None => {
                    if let Some(number) = f.prompt_number() {
                        self.last_prompt = number;
                    }
                    Step::Done
                }
                Some(rule) => {
                    // The marker must end the output after the text. This chunk holds the
                    // text's end, and a marker only counts at the very end of the output,
                    // so feeding the whole chunk cannot match a marker printed before it.
                    let limit = self.spec.max_response_bytes.max(STARTUP_WINDOW);
                    let mut next = Framer::new(rule, limit, now);
                    let progress = next.feed(stream, bytes, now);
                    if let Some(number) = next.prompt_number() {
                        self.last_prompt = number;
                    }
                    *f = next;
                    match progress {
                        Progress::Complete => Step::Done,
                        _ => Step::Pending,
                    }
                }
            },
            Progress::TooLarge => {
                // Keep only recent startup output; the marker is still ahead.
                *f = Framer::new(f.rule().clone(), STARTUP_WINDOW, now);
                Step::Pending
            }
            Progress::Pending => Step::Pending,
        }
    }

    fn begin(&mut self, _prompt: &str, prepared: &[u8], now: Instant, input: &mut Vec<u8>) {
        let nonce = match self.spec.framing {
            Framing::Sentinel { .. } => fresh_nonce(),
            _ => String::new(),
        };
        input.extend_from_slice(prepared);
        push_sentinel(&self.spec.framing, &nonce, input);
        self.absorbed.clear();
        self.recheck = None;
        self.streamed = 0;
        self.block_ended = false;
        self.interrupted = false;
        self.interrupt_at = None;
        self.give_up_at = None;
        let lines = prepared.iter().filter(|&&b| b == b'\n').count();
        self.continuations_allowed = lines.saturating_sub(1);
        let rule = if self.secret.is_empty() {
            Rule::for_answer(&self.spec.framing, &nonce)
        } else {
            self.numbered_rule(self.last_prompt)
        };
        self.framer = Some(Framer::new(rule, self.spec.max_response_bytes, now));
    }

    fn answering(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        now: Instant,
        input: &mut Vec<u8>,
    ) -> Step {
        let Some(f) = &mut self.framer else {
            return Step::Pending;
        };
        if self.recheck.take().is_some() {
            // The marker was not the end after all: the answer goes on.
            f.reopen();
        }
        let progress = f.feed(stream, bytes, now);
        let continuations = f.take_continuations();
        if progress == Progress::Pending && continuations > 0 {
            return self.on_continuations(continuations, input);
        }
        self.confirm(progress, now)
    }

    fn take_delta(&mut self, _raw: &[u8]) -> Option<String> {
        let settled = self.framer.as_ref()?.settled_stdout();
        let fresh = settled.get(self.streamed..).filter(|b| !b.is_empty())?;
        self.streamed = settled.len();
        Some(String::from_utf8_lossy(fresh).into_owned())
    }

    fn partial(&self) -> Option<String> {
        let out = self.framer.as_ref()?.stdout();
        (!out.is_empty()).then(|| String::from_utf8_lossy(out).into_owned())
    }

    fn reads(&self, stream: Stream) -> bool {
        stream == Stream::Stdout || stream == self.marker_stream()
    }

    fn deadline(&self) -> Option<Instant> {
        [
            self.framer.as_ref().and_then(|f| f.deadline()),
            self.recheck.map(|(at, _)| at),
            self.interrupt_at.map(|(at, _)| at),
            self.give_up_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn tick(&mut self, now: Instant) -> Step {
        if self.give_up_at.is_some_and(|at| now >= at) {
            return Step::Failed(self.interrupt_ignored());
        }
        if self.interrupt_at.is_some_and(|(at, _)| now >= at) {
            return self.interrupt_when_reading(now);
        }
        if self.recheck.is_some_and(|(at, _)| now >= at) {
            return self.confirm(Progress::Complete, now);
        }
        let Some(f) = &mut self.framer else {
            return Step::Pending;
        };
        let progress = f.tick(now);
        self.confirm(progress, now)
    }

    fn finish(&mut self) -> Result<Answer, String> {
        let Some(framer) = self.framer.take() else {
            return Ok(Answer::default());
        };
        let mut collected = framer.into_collected();
        for (stream, bytes) in self.absorbed.drain(..) {
            match stream {
                Stream::Stdout => collected.stdout.extend_from_slice(&bytes),
                Stream::Stderr => collected.stderr.extend_from_slice(&bytes),
            }
        }
        collected.strip_sentinel_from_stderr();
        if let Some(number) = collected.prompt_number {
            self.last_prompt = number;
        }
        if self.interrupted {
            let said = String::from_utf8_lossy(&collected.stderr);
            return Err(format!(
                "unfinished statement: {} still waited for the rest of it{}, so it was \
                 interrupted; it said: {}",
                self.spec.name,
                if self.block_ended {
                    " after the block was ended"
                } else {
                    ""
                },
                said.trim()
            ));
        }
        Ok(Answer {
            text: String::from_utf8_lossy(&collected.stdout).into_owned(),
            transcript: collected.stdout,
            stderr: Some(collected.stderr),
            ..Answer::default()
        })
    }

    fn interrupt(&mut self, _input: &mut Vec<u8>) -> super::Interrupt {
        // REPLs stop what they run on SIGINT and prompt again.
        super::Interrupt::Signal
    }

    fn between(&mut self, stream: Stream, bytes: &[u8], just_finished: bool) -> Between {
        // The tool wrote to the other stream before it ended the answer on the marker's
        // stream (python: the value on stdout, then `>>> ` on stderr): it belongs to the answer.
        if just_finished && self.framer.is_some() && stream != self.marker_stream() {
            self.absorbed.push((stream, bytes.to_vec()));
            return Between::Absorbed;
        }
        Between::Stray
    }
}

/// Appends the sentinel command for `nonce` when the framing uses one.
fn push_sentinel(framing: &Framing, nonce: &str, out: &mut Vec<u8>) {
    if let Framing::Sentinel { command } = framing {
        out.extend_from_slice(command.replace("{nonce}", nonce).as_bytes());
        out.push(b'\n');
    }
}
