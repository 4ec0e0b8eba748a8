//! Starting a process, becoming ready, and answering one prompt at a time.

use super::*;

impl IoThread {
    pub(super) fn spawn_child(&mut self, notify: Option<Sender<Result<()>>>) {
        let shared = Arc::clone(&self.cfg.shared);
        shared.set_state(InstanceState::Starting);
        let spec = Arc::clone(&self.cfg.spec);
        // A replacement process resumes its predecessor's conversation where it can.
        let resume = self.resume_token.clone();
        let mut extra = self.cfg.protocol.launch_args();
        extra.extend(
            resume
                .as_deref()
                .map(|token| self.cfg.protocol.resume_args(token))
                .unwrap_or_default(),
        );
        // The launcher is given the instance's workspace (if any) as the working directory.
        let launched = self.prepare_workspace().and_then(|workspace| {
            let spawn_spec = if extra.is_empty() && workspace.is_none() {
                Arc::clone(&spec)
            } else {
                let mut adjusted = (*spec).clone();
                adjusted.args.extend(extra);
                if let Some(dir) = workspace {
                    adjusted.cwd = Some(dir.to_string_lossy().into_owned());
                }
                Arc::new(adjusted)
            };
            self.cfg.launcher.launch(&spawn_spec, shared.index)
        });
        let launched = match launched {
            Ok(launched) => launched,
            Err(err) => {
                let level = if notify.is_some() {
                    log::Level::Debug
                } else {
                    log::Level::Warn
                };
                log::log!(level, "{}[{}]: {err}", spec.name, shared.index);
                shared.set_state(InstanceState::Restarting);
                self.send_event(IoEvent::SpawnFailed {
                    index: shared.index,
                    error: err.to_string(),
                    reported: notify.is_some(),
                });
                if let Some(n) = notify {
                    let _ = n.send(Err(err));
                }
                self.rehome_movable();
                return;
            }
        };
        let crate::launch::Launch { process, io } = launched;
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
        let mut context = Context::new(process.pid(), shared.index, spec.max_response_bytes);
        context.generation = generation;
        context.resume = resume.clone();
        let probe = Arc::clone(&process);
        context.stdin = crate::protocol::StdinProbe::new(move || probe.reading_stdin());
        context.permissions = spec.permissions;
        context.host = process.host().map(str::to_string);
        // Where the process runs: its workspace, if any.
        context.cwd = match &self.workspace {
            Some(ws) => Some(ws.path.to_string_lossy().into_owned()),
            None => spec.cwd.clone(),
        };
        let doorbell = Arc::clone(&self.cfg.doorbell);
        context.approvals = spec.approvals().waking(Arc::new(move || doorbell.ring()));
        let mut conversation = self.cfg.protocol.conversation(&context);
        let opened = conversation.open(now, &mut out);
        let strip = spec
            .strip_ansi
            .then(|| (AnsiStripper::default(), AnsiStripper::default()));
        self.child = Some(Running {
            process,
            io,
            generation,
            phase: Phase::Starting {
                deadline: now + spec.startup_timeout,
                began: now,
            },
            conversation,
            turn_stderr: Vec::new(),
            streamed: String::new(),
            restore: crate::state::Restore::None,
            resumed: resume.is_some(),
            replay_left: 0,
            replay_failure: None,
            interrupting: None,
            sigint_due: None,
            last_sigint: None,
            out,
            out_pos: 0,
            stderr_line: Vec::new(),
            strip,
            notify,
            retire_after_job: None,
            starting_since: Some(now),
            closed: None,
        });
        self.write_pending();
        self.on_startup_step(opened, now);
    }

    /// Acts on what the conversation says while starting.
    pub(super) fn on_startup_step(&mut self, step: Step, now: Instant) {
        match step {
            Step::Done => self.become_ready(now),
            Step::Failed(reason) => self.fail_startup(reason, now),
            Step::Pending | Step::TooLarge | Step::Interrupt => {}
        }
    }

    /// The process cannot become ready (its handshake failed): report and recycle it.
    pub(super) fn fail_startup(&mut self, reason: String, now: Instant) {
        let began = match self.child.as_ref().map(|c| &c.phase) {
            Some(Phase::Starting { began, .. }) => *began,
            _ => return,
        };
        let mut stderr = self.cfg.shared.last_stderr();
        stderr.push(reason);
        let err = Error::NotReady {
            tool: self.cfg.spec.name.clone(),
            instance: self.cfg.shared.index,
            waited: now.saturating_duration_since(began),
            exit: None,
            stderr,
        };
        log::warn!("{err}");
        if let Some(n) = self.child.as_mut().and_then(|c| c.notify.take()) {
            let _ = n.send(Err(err));
        }
        self.begin_stop(ExitCause::Protocol, StopStep::Term);
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
        log::debug!(
            "{}[{}]: ready in {took:?} (pid {})",
            shared.tool,
            shared.index,
            child.process.pid()
        );
        let generation = child.generation;
        let retire = child.retire_after_job.take();
        let notify = child.notify.take();
        // The event first: whoever the notice wakes (a launch starting the next instance)
        // acts after the monitor has heard this one is ready.
        self.send_event(IoEvent::Ready {
            index: shared.index,
            generation,
            took,
        });
        if let Some(n) = notify {
            let _ = n.send(Ok(()));
        }
        self.queue_replay(now);
        if let Some(cause) = retire {
            self.begin_stop(cause, StopStep::Quit);
        }
    }

    // ----- requests ----------------------------------------------------------------------

    pub(super) fn start_next_job(&mut self, now: Instant) {
        let Some(child) = &self.child else { return };
        if !matches!(child.phase, Phase::Idle) || child.io.stdin.is_none() || self.queue.is_empty()
        {
            return;
        }
        // Output already waiting in the pipes is never attributed to the next answer (they
        // were just drained if an answer completed in this round).
        if !self.drained_after_answer && !self.drain_between(false) {
            return;
        }
        if !self.workspace_fits_next_job() {
            return;
        }
        self.turn_begins();
        let Some(child) = &mut self.child else { return };
        let Some(job) = self.queue.pop_front() else {
            return;
        };
        child.out.clear();
        child.out_pos = 0;
        child.turn_stderr.clear();
        child.streamed.clear();
        child.interrupting = None;
        child.sigint_due = None;
        child
            .conversation
            .begin(&job.prompt, &job.input, now, &mut child.out);
        self.cfg.shared.stats.on_sent();
        child.phase = Phase::Busy { job, began: now };
        self.heard_at = Some(now);
        // Write at once: most prompts fit in the pipe and need no extra poll round.
        self.write_pending();
    }

    /// Reads what the tool has already written outside an answer and asks the protocol what
    /// it is (`just_finished`: right after an answer was complete). Returns false when it was
    /// unexpected: the process is being recycled.
    pub(super) fn drain_between(&mut self, just_finished: bool) -> bool {
        let mut late = false;
        for stream in [Stream::Stdout, Stream::Stderr] {
            let bytes = self.read_available(stream);
            if bytes.is_empty() {
                continue;
            }
            let Some(child) = &mut self.child else {
                return false;
            };
            match child.conversation.between(stream, &bytes, just_finished) {
                Between::Absorbed => {}
                Between::Stray => self.on_stray(stream, bytes.len(), false),
                Between::Late => {
                    self.on_stray(stream, bytes.len(), true);
                    late = true;
                }
            }
        }
        if late {
            self.begin_stop(ExitCause::Protocol, StopStep::Term);
        }
        !late
    }

    /// Counts and logs output outside any answer.
    pub(super) fn on_stray(&self, stream: Stream, len: usize, late: bool) {
        let shared = &self.cfg.shared;
        shared.stats.on_stray_output(len);
        if late {
            log::warn!(
                "{}[{}]: {len} bytes on {stream:?} after the answer was complete; the last \
                 answer may have been cut short, recycling the process",
                shared.tool,
                shared.index
            );
        } else {
            log::debug!(
                "{}[{}]: {len} bytes on {stream:?} outside any answer, dropped",
                shared.tool,
                shared.index
            );
        }
    }

    pub(super) fn finish_busy(&mut self, now: Instant) {
        let Some(child) = &mut self.child else { return };
        let Phase::Busy { job, began } = std::mem::replace(&mut child.phase, Phase::Idle) else {
            return;
        };
        // What the tool wrote before it ended the answer is already in the pipes: the
        // protocol decides whether it belongs to this answer.
        let in_step = self.drain_between(true);
        self.drained_after_answer = true;
        let Some(child) = &mut self.child else {
            self.complete(job, Err(Error::Shutdown { prompt: None }));
            return;
        };
        let index = self.cfg.shared.index;
        let finished = child.conversation.finish();
        self.note_restore();
        let Some(child) = &mut self.child else {
            self.complete(job, Err(Error::Shutdown { prompt: None }));
            return;
        };
        let cancelled = job.cancel.load(Ordering::Acquire);
        if let (Some(chunks), Ok(answer)) = (&job.stream, &finished) {
            // The pieces add up to the text: what was not streamed yet goes out now.
            let streamed = std::mem::take(&mut child.streamed);
            match answer.text.strip_prefix(streamed.as_str()) {
                Some(rest) if !rest.is_empty() && !cancelled => {
                    let _ = chunks.send(rest.to_string());
                }
                Some(_) => {}
                None => log::debug!(
                    "{}[{index}]: the streamed pieces differ from the answer's text",
                    self.cfg.spec.name
                ),
            }
        }
        let result = match finished {
            // A cancelled turn's answer (partial, or the tool's "interrupted") is not one.
            _ if cancelled => Err(Error::Cancelled {
                recycled: false,
                prompt: None,
            }),
            Ok(answer) if answer.input_required.is_some() => Err(Error::InputRequired {
                instance: index,
                question: answer.input_required.unwrap_or_default(),
                prompt: None,
            }),
            Ok(answer) if self.cfg.spec.strict_denials && !answer.denials.is_empty() => {
                Err(Error::Denied {
                    instance: index,
                    denials: answer.denials,
                    prompt: None,
                })
            }
            Ok(answer) => {
                let stderr = answer
                    .stderr
                    .unwrap_or_else(|| std::mem::take(&mut child.turn_stderr));
                Ok(Response {
                    text: answer.text,
                    bytes: answer.transcript,
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                    session_id: answer.session_id,
                    usage: answer.usage,
                    cost_usd: answer.cost_usd,
                    denials: answer.denials,
                    files_edited: answer.files_edited,
                    instance: index,
                    generation: child.generation,
                    pid: child.process.pid(),
                    host: child.process.host().map(str::to_string),
                    elapsed: now.saturating_duration_since(job.submitted),
                    service_time: now.saturating_duration_since(began),
                    context_lost: false,
                    context_restored: false,
                    context_mixed: false,
                    context_note: None,
                    workspace: None,
                    changed_files: Vec::new(),
                    mixing: job.mixing,
                    restore: child.restore.clone(),
                })
            }
            Err(message) => Err(Error::ToolReported {
                instance: index,
                message,
                prompt: None,
            }),
        };
        let result = self.turn_ended(result);
        if result.is_ok() && !job.replay {
            self.remember_success(&job);
        }
        let Some(child) = &mut self.child else {
            self.complete(job, result);
            return;
        };
        let retire = child.retire_after_job.take().or_else(|| {
            let served = self.cfg.shared.served.load(Ordering::Acquire) + 1;
            self.cfg
                .max_requests
                .filter(|max| served >= *max)
                .map(|_| ExitCause::Retired)
        });
        self.complete(job, result);
        if !in_step {
            // drain_between already began stopping the process.
            return;
        }
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
