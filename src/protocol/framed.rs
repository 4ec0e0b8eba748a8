//! [`Framed`]: the spec's framing, input format and readiness as a protocol (REPLs, the demo
//! agent, any line-oriented tool).

use std::time::{Duration, Instant};

use super::{check_prompt, Answer, Between, Context, Conversation, Protocol, Step};
use crate::framing::{fresh_nonce, Framer, Progress, Rule};
use crate::spec::{Framing, Readiness, Stream, ToolSpec};

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
}

impl FramedConversation {
    fn marker_stream(&self) -> Stream {
        match &self.spec.framing {
            Framing::Prompt { stream, .. } => *stream,
            _ => Stream::Stdout,
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

impl Conversation for FramedConversation {
    fn open(&mut self, now: Instant, input: &mut Vec<u8>) -> Step {
        for line in &self.spec.init {
            input.extend_from_slice(line.as_bytes());
            input.push(b'\n');
        }
        let limit = self.spec.max_response_bytes.max(STARTUP_WINDOW);
        self.framer = match self.spec.effective_readiness() {
            Readiness::Immediate => None,
            Readiness::Text { text, stream } => {
                let rule = match &self.spec.framing {
                    Framing::Prompt { marker, settle, .. } if *marker == text => Rule::EndsWith {
                        marker: text.into_bytes(),
                        stream,
                        settle: *settle,
                    },
                    Framing::Prompt {
                        marker,
                        stream: marker_stream,
                        settle,
                        ..
                    } => {
                        self.marker_after_text = Some(Rule::EndsWith {
                            marker: marker.clone().into_bytes(),
                            stream: *marker_stream,
                            settle: *settle,
                        });
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

    fn starting(&mut self, stream: Stream, bytes: &[u8], now: Instant, _: &mut Vec<u8>) -> Step {
        let Some(f) = &mut self.framer else {
            return Step::Done;
        };
        match f.feed(stream, bytes, now) {
            Progress::Complete => match self.marker_after_text.take() {
                None => Step::Done,
                Some(rule) => {
                    // The marker must end the output after the text. This chunk holds the
                    // text's end, and a marker only counts at the very end of the output,
                    // so feeding the whole chunk cannot match a marker printed before it.
                    let limit = self.spec.max_response_bytes.max(STARTUP_WINDOW);
                    let mut next = Framer::new(rule, limit, now);
                    let progress = next.feed(stream, bytes, now);
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
        self.framer = Some(Framer::new(
            Rule::for_answer(&self.spec.framing, &nonce),
            self.spec.max_response_bytes,
            now,
        ));
    }

    fn answering(&mut self, stream: Stream, bytes: &[u8], now: Instant, _: &mut Vec<u8>) -> Step {
        let Some(f) = &mut self.framer else {
            return Step::Pending;
        };
        if self.recheck.take().is_some() {
            // The marker was not the end after all: the answer goes on.
            f.reopen();
        }
        let progress = f.feed(stream, bytes, now);
        self.confirm(progress, now)
    }

    fn deadline(&self) -> Option<Instant> {
        let framer = self.framer.as_ref().and_then(|f| f.deadline());
        match (framer, self.recheck.map(|(at, _)| at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn tick(&mut self, now: Instant) -> Step {
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
