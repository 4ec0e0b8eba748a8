//! Stopping a process by escalation (quit, SIGINT or SIGTERM, SIGKILL) and what happens to
//! the prompts it held once it is gone.

use super::*;

impl IoThread {
    pub(super) fn begin_stop(&mut self, cause: ExitCause, first: StopStep) {
        let grace = self.cfg.spec.stop_grace;
        let quit = self.cfg.spec.quit_command.clone();
        let now = Instant::now();
        let Some(child) = &mut self.child else { return };
        let orphan = match std::mem::replace(&mut child.phase, Phase::Idle) {
            Phase::Busy { job, .. } => Some(job),
            Phase::Stopping { orphan, .. } => orphan,
            Phase::Starting { .. } | Phase::Idle => None,
        };
        self.cfg.shared.set_state(InstanceState::Stopping);
        let deadline = match first {
            StopStep::Quit => {
                child.out.clear();
                child.out_pos = 0;
                match &quit {
                    Some(line) if child.io.stdin.is_some() => {
                        child.out.extend_from_slice(line.as_bytes());
                        child.out.push(b'\n');
                    }
                    // The link closes the far tool's stdin, not the link.
                    _ if child.io.link.is_some() => {}
                    _ => child.io.stdin = None,
                }
                self.stop_method = StopMethod::Quit;
                now + grace
            }
            StopStep::AwaitExit => now + EOF_GRACE.min(grace),
            StopStep::Interrupt => {
                child.process.signal_group(Signal::SIGINT);
                now + grace
            }
            StopStep::Term => {
                child.process.signal_group(Signal::SIGTERM);
                self.stop_method = StopMethod::Terminated;
                now + grace
            }
            StopStep::Kill => {
                child.process.signal_group(Signal::SIGKILL);
                self.stop_method = StopMethod::Killed;
                now + KILL_WAIT
            }
        };
        child.phase = Phase::Stopping {
            cause,
            step: first,
            deadline,
            orphan,
        };
        self.rehome_movable();
        self.write_pending();
    }

    /// Moves a stop sequence to its next, harsher step.
    pub(super) fn escalate(&mut self, now: Instant) {
        let grace = self.cfg.spec.stop_grace;
        let Some(child) = &mut self.child else { return };
        let Phase::Stopping { step, deadline, .. } = &mut child.phase else {
            return;
        };
        match *step {
            StopStep::Quit | StopStep::AwaitExit | StopStep::Interrupt => {
                let still_running = (*step == StopStep::AwaitExit)
                    .then_some(child.closed)
                    .flatten()
                    .map(|stream| {
                        format!(
                            "aim: pid {} closed its {}, where aim reads its answers, and was \
                             still running {:?} later: it can no longer answer, so it is stopped",
                            child.process.pid(),
                            super::streams::stream_name(stream),
                            EOF_GRACE.min(grace)
                        )
                    });
                child.process.signal_group(Signal::SIGTERM);
                self.stop_method = StopMethod::Terminated;
                *step = StopStep::Term;
                *deadline = now + grace;
                if let Some(line) = still_running {
                    log::warn!("{}[{}]: {line}", self.cfg.spec.name, self.index());
                    self.note_stderr(&line);
                }
            }
            StopStep::Term => {
                log::warn!(
                    "{}[{}]: pid {} ignored SIGTERM for {grace:?}; sending SIGKILL",
                    self.cfg.spec.name,
                    self.cfg.shared.index,
                    child.process.pid()
                );
                child.process.signal_group(Signal::SIGKILL);
                self.stop_method = StopMethod::Killed;
                *step = StopStep::Kill;
                *deadline = now + KILL_WAIT;
            }
            StopStep::Kill => {
                log::error!(
                    "{}[{}]: pid {} survived SIGKILL for {KILL_WAIT:?}; abandoning it",
                    self.cfg.spec.name,
                    self.cfg.shared.index,
                    child.process.pid()
                );
                self.stop_method = StopMethod::Abandoned;
                self.on_exit(None);
            }
        }
    }

    /// The child is gone (reaped, or abandoned with `None`): fail or move what it held.
    pub(super) fn on_exit(&mut self, exit: Option<ExitInfo>) {
        // What the tool printed of its answer before it went: the rest still in the pipe too.
        let answering = matches!(
            self.child.as_ref().map(|c| &c.phase),
            Some(
                Phase::Busy { .. }
                    | Phase::Stopping {
                        orphan: Some(_),
                        ..
                    }
            )
        );
        if answering {
            let rest = self.read_available(Stream::Stdout);
            if let Some(child) = &mut self.child {
                if !rest.is_empty() {
                    let mut ignored = Vec::new();
                    let _ = child.conversation.answering(
                        Stream::Stdout,
                        &rest,
                        Instant::now(),
                        &mut ignored,
                    );
                }
            }
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.drain_stderr(&mut child);
        let shared = Arc::clone(&self.cfg.shared);
        let pid = child.process.pid();
        let link_lost = child.process.link_lost();
        let stderr = shared.last_stderr();
        let (mut cause, job) = match std::mem::replace(&mut child.phase, Phase::Idle) {
            Phase::Stopping { cause, orphan, .. } => (cause, orphan),
            Phase::Busy { job, .. } => (ExitCause::Crashed, Some(job)),
            Phase::Starting { .. } | Phase::Idle => (ExitCause::Crashed, None),
        };
        if let Some(began) = child.starting_since {
            // It never became ready.
            if cause == ExitCause::Crashed {
                cause = ExitCause::NotReady;
            }
            if child.resumed {
                self.resume_failed(exit, &stderr);
            }
            if let Some(n) = child.notify.take() {
                let _ = n.send(Err(Error::NotReady {
                    tool: self.cfg.spec.name.clone(),
                    instance: shared.index,
                    waited: began.elapsed(),
                    exit,
                    stderr: stderr.clone(),
                }));
            }
        }
        if let Some(n) = child.notify.take() {
            let _ = n.send(Err(Error::Shutdown { prompt: None }));
        }
        // A process that ends with a prompt in flight has failed, whatever its exit code.
        let died_answering = job
            .as_ref()
            .is_some_and(|j| !j.cancel.load(Ordering::Acquire) && !j.replay);
        let job = match job {
            Some(job) if job.cancel.load(Ordering::Acquire) => {
                // It died of being interrupted (a tool without a SIGINT handler): cancelled.
                cause = ExitCause::Manual;
                self.complete(
                    job,
                    Err(Error::Cancelled {
                        recycled: true,
                        prompt: None,
                    }),
                );
                None
            }
            other => other,
        };
        if let Some(job) = job {
            let err = Error::InstanceDied {
                instance: shared.index,
                generation: child.generation,
                pid,
                exit,
                // Only what it wrote while answering this prompt: earlier lines belong to
                // earlier answers.
                stderr: super::streams::turn_stderr_lines(
                    &child.turn_stderr,
                    self.cfg.spec.stderr_lines,
                ),
                partial: child.conversation.partial(),
                prompt: None,
            };
            if job.retries_left > 0 && !job.pinned && self.cfg.hooks.is_some() {
                let mut job = job;
                job.retries_left -= 1;
                shared.stats.on_failure(&err);
                log::info!(
                    "{}[{}]: resending an idempotent prompt after: {err}",
                    self.cfg.spec.name,
                    shared.index
                );
                self.hand_back(job, || Error::Shutdown { prompt: None });
            } else {
                self.reported_failure = true;
                self.complete(job, Err(err));
            }
        }
        shared.end_generation(exit);
        self.last_exit = exit;
        // The monitor logs the exit as an event; this line is for tracing the I/O thread.
        log::debug!(
            "{}[{}]: pid {pid} ended ({}; {})",
            self.cfg.spec.name,
            shared.index,
            exit.map(|e| e.to_string())
                .unwrap_or_else(|| "not reaped".into()),
            cause.as_str()
        );
        shared.set_state(if self.exiting.is_some() {
            InstanceState::Stopped
        } else {
            InstanceState::Restarting
        });
        self.send_event(IoEvent::Exited {
            index: shared.index,
            generation: child.generation,
            pid,
            exit,
            cause,
            answering: died_answering,
            link_lost,
        });
        self.rehome_movable();
        self.process_ended();
    }

    pub(super) fn finish_thread(&mut self, reply: Option<Sender<StopOutcome>>) {
        self.deliver_answers();
        self.release_queue(|| Error::Shutdown { prompt: None });
        // Jobs that raced in after the stop.
        while let Ok(job) = self.cfg.jobs.try_recv() {
            self.hand_back(job, || Error::Shutdown { prompt: None });
        }
        self.cfg.shared.set_returns_at(None);
        self.cfg.shared.set_state(InstanceState::Stopped);
        let outcome = StopOutcome {
            index: self.cfg.shared.index,
            pid: self.last_pid,
            method: if self.last_pid == 0 {
                StopMethod::NotRunning
            } else {
                self.stop_method
            },
            exit: self.last_exit,
        };
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }
}
