//! Starting a process, becoming ready, and answering one prompt at a time.

use super::*;

impl IoThread {
    pub(super) fn spawn_child(&mut self, notify: Option<Sender<Result<()>>>) {
        let shared = Arc::clone(&self.cfg.shared);
        shared.set_state(InstanceState::Starting);
        let spec = Arc::clone(&self.cfg.spec);
        let (process, io) = match process::spawn(&spec, shared.index) {
            Ok(pair) => pair,
            Err(err) => {
                log::warn!("{}[{}]: {err}", spec.name, shared.index);
                shared.set_state(InstanceState::Restarting);
                self.send_event(IoEvent::SpawnFailed {
                    index: shared.index,
                    error: err.to_string(),
                });
                if let Some(n) = notify {
                    let _ = n.send(Err(err));
                }
                self.rehome_movable();
                return;
            }
        };
        let process = Arc::new(process);
        let generation = shared.begin_generation(Arc::clone(&process));
        self.last_pid = process.pid();
        shared.info.lock().stderr_tail.clear();
        log::debug!(
            "{}[{}]: spawned pid {} (generation {generation})",
            spec.name,
            shared.index,
            process.pid()
        );
        self.send_event(IoEvent::Spawned {
            index: shared.index,
            generation,
            pid: process.pid(),
        });
        let now = Instant::now();
        let mut out = Vec::new();
        for line in &spec.init {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        let limit = spec.max_response_bytes.max(STARTUP_WINDOW);
        let framer = match spec.effective_readiness() {
            Readiness::Immediate => None,
            Readiness::Text { text, stream } => {
                let rule = match &spec.framing {
                    Framing::Prompt { marker, settle, .. } if *marker == text => Rule::EndsWith {
                        marker: text.into_bytes(),
                        stream,
                        settle: *settle,
                    },
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
                push_sentinel(&spec.framing, &nonce, &mut out);
                Some(Framer::new(
                    Rule::for_answer(&spec.framing, &nonce),
                    limit,
                    now,
                ))
            }
        };
        let strip = spec
            .strip_ansi
            .then(|| (AnsiStripper::default(), AnsiStripper::default()));
        self.child = Some(Running {
            process,
            io,
            generation,
            phase: Phase::Starting {
                framer,
                deadline: now + spec.startup_timeout,
                began: now,
            },
            out,
            out_pos: 0,
            stderr_line: Vec::new(),
            strip,
            notify,
            retire_after_job: None,
            starting_since: Some(now),
        });
        self.write_pending();
        let ready_now = matches!(
            self.child.as_ref().map(|c| &c.phase),
            Some(Phase::Starting { framer: None, .. })
        );
        if ready_now {
            self.become_ready(now);
        }
    }

    pub(super) fn become_ready(&mut self, now: Instant) {
        let shared = Arc::clone(&self.cfg.shared);
        let Some(child) = &mut self.child else { return };
        let took = match child.phase {
            Phase::Starting { began, .. } => now.saturating_duration_since(began),
            _ => return,
        };
        child.phase = Phase::Idle;
        child.starting_since = None;
        shared.set_state(InstanceState::Ready);
        if let Some(n) = child.notify.take() {
            let _ = n.send(Ok(()));
        }
        log::debug!(
            "{}[{}]: ready in {took:?} (pid {})",
            shared.tool,
            shared.index,
            child.process.pid()
        );
        let generation = child.generation;
        let retire = child.retire_after_job.take();
        self.send_event(IoEvent::Ready {
            index: shared.index,
            generation,
            took,
        });
        if let Some(cause) = retire {
            self.begin_stop(cause, StopStep::Quit);
        }
    }

    // ----- requests ----------------------------------------------------------------------

    pub(super) fn start_next_job(&mut self, now: Instant) {
        let Some(child) = &mut self.child else { return };
        if !matches!(child.phase, Phase::Idle) || child.io.stdin.is_none() {
            return;
        }
        let Some(job) = self.queue.pop_front() else {
            return;
        };
        let spec = &self.cfg.spec;
        let nonce = match spec.framing {
            Framing::Sentinel { .. } => fresh_nonce(),
            _ => String::new(),
        };
        child.out.clear();
        child.out_pos = 0;
        child.out.extend_from_slice(&job.input);
        push_sentinel(&spec.framing, &nonce, &mut child.out);
        let framer = Framer::new(
            Rule::for_answer(&spec.framing, &nonce),
            spec.max_response_bytes,
            now,
        );
        self.cfg.shared.stats.on_sent();
        child.phase = Phase::Busy {
            job,
            framer,
            began: now,
        };
        // Write at once: most prompts fit in the pipe and need no extra poll round.
        self.write_pending();
    }

    pub(super) fn finish_busy(&mut self, now: Instant) {
        let marker_stream = match &self.cfg.spec.framing {
            Framing::Prompt { stream, .. } => *stream,
            _ => Stream::Stdout,
        };
        let other = match marker_stream {
            Stream::Stdout => Stream::Stderr,
            Stream::Stderr => Stream::Stdout,
        };
        // The tool wrote to the other stream before it ended the answer, so that output is
        // already in its pipe: take it now so it lands in this answer, not the next.
        let late = self.read_available(other);
        let Some(child) = &mut self.child else { return };
        let Phase::Busy { job, framer, began } = std::mem::replace(&mut child.phase, Phase::Idle)
        else {
            return;
        };
        let mut collected = framer.into_collected();
        match other {
            Stream::Stdout => collected.stdout.extend_from_slice(&late),
            Stream::Stderr => collected.stderr.extend_from_slice(&late),
        }
        let response = Response {
            text: String::from_utf8_lossy(&collected.stdout).into_owned(),
            bytes: collected.stdout,
            stderr: String::from_utf8_lossy(&collected.stderr).into_owned(),
            instance: self.cfg.shared.index,
            generation: child.generation,
            pid: child.process.pid(),
            elapsed: now.saturating_duration_since(job.submitted),
            service_time: now.saturating_duration_since(began),
            context_lost: false,
        };
        let retire = child.retire_after_job.take().or_else(|| {
            let served = self.cfg.shared.served.load(Ordering::Acquire) + 1;
            self.cfg
                .max_requests
                .filter(|max| served >= *max)
                .map(|_| ExitCause::Retired)
        });
        self.complete(job, Ok(response));
        if let Some(cause) = retire {
            self.begin_stop(cause, StopStep::Quit);
        }
    }

    /// Fails the job in flight with `error` and recycles the process.
    pub(super) fn abort_busy(&mut self, error: Error, cause: ExitCause) {
        let Some(child) = &mut self.child else { return };
        let Phase::Busy { job, .. } = std::mem::replace(&mut child.phase, Phase::Idle) else {
            return;
        };
        log::warn!("{}[{}]: {error}", self.cfg.spec.name, self.cfg.shared.index);
        self.complete(job, Err(error));
        let first = if cause == ExitCause::Timeout {
            StopStep::Interrupt
        } else {
            StopStep::Term
        };
        self.begin_stop(cause, first);
    }
}

/// Appends the sentinel command for `nonce` when the framing uses one.
pub(super) fn push_sentinel(framing: &Framing, nonce: &str, out: &mut Vec<u8>) {
    if let Framing::Sentinel { command } = framing {
        out.extend_from_slice(command.replace("{nonce}", nonce).as_bytes());
        out.push(b'\n');
    }
}
