//! One `poll(2)` round over the doorbell, the child's streams and its pidfd, and the timers
//! that fire between rounds.

use super::*;

impl IoThread {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.queue.iter().map(|j| j.deadline).min();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if let Some(child) = &self.child {
            match &child.phase {
                Phase::Starting { deadline, .. } => {
                    consider(Some(*deadline));
                    consider(child.conversation.deadline());
                }
                Phase::Busy { job, began } => {
                    consider(Some(job.deadline));
                    consider(job.answer_timeout.map(|t| crate::clock::after(*began, t)));
                    consider(child.conversation.deadline());
                    consider(self.stall_deadline());
                    consider(child.interrupting);
                    consider(child.sigint_due);
                    if self.may_mark_stuck() {
                        consider(Some(crate::clock::after(*began, self.cfg.stuck_after)));
                    }
                }
                Phase::Stopping { deadline, .. } => consider(Some(*deadline)),
                Phase::Idle => {}
            }
            if let Some(link) = &child.io.link {
                consider(Some(link.next_timer()));
            }
            if child.io.pidfd.is_none() {
                // No pidfd: look for the exit with waitpid now and then.
                consider(Some(Instant::now() + Duration::from_millis(100)));
            }
        }
        if let Some((deadline, _)) = &self.exiting {
            consider(Some(*deadline));
        }
        next
    }

    /// When the answer in flight counts as stalled: the spec's stall timeout after the tool
    /// was last heard from.
    pub(super) fn stall_deadline(&self) -> Option<Instant> {
        let stall = self.cfg.spec.stall_timeout?;
        Some(crate::clock::after(self.heard_at?, stall))
    }

    /// Whether the answer in flight may still be marked stuck: only in a cluster (a pool has
    /// nowhere to move prompts), and once per answer.
    pub(super) fn may_mark_stuck(&self) -> bool {
        self.cfg.hooks.is_some() && self.stuck_began.is_none()
    }

    pub(super) fn poll_once(&mut self) {
        let busy = matches!(
            self.child.as_ref().map(|c| &c.phase),
            Some(Phase::Busy { .. })
        );
        let deadline = self.next_deadline();
        // Idle or stuck, it wants every job at once; busy, only those due before it wakes.
        let listening = !busy || self.stuck_began.is_some();
        self.cfg.doorbell.set_listening(listening, deadline);
        if !self.cfg.jobs.is_empty() {
            // A job arrived after the last look, and its sender may not have rung.
            return;
        }
        if self
            .child
            .as_ref()
            .and_then(|c| c.io.link.as_ref())
            .is_some_and(|l| l.wants_write())
        {
            // Signals the launched process queued for the relay.
            self.write_pending();
        }
        let mut ready: [(Option<Source>, PollFlags); 5] = [(None, PollFlags::empty()); 5];
        {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(5);
            let mut sources: Vec<Source> = Vec::with_capacity(5);
            fds.push(PollFd::new(self.cfg.doorbell.fd(), PollFlags::POLLIN));
            sources.push(Source::Bell);
            if let Some(child) = &self.child {
                if let Some(fd) = &child.io.stdout {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    sources.push(Source::Stdout);
                }
                if let Some(fd) = &child.io.stderr {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    sources.push(Source::Stderr);
                }
                if let Some(fd) = &child.io.stdin {
                    let link_waits = child.io.link.as_ref().is_some_and(|l| l.wants_write());
                    if child.out_pos < child.out.len() || link_waits {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                        sources.push(Source::Stdin);
                    }
                }
                if let Some(fd) = &child.io.pidfd {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    sources.push(Source::Pid);
                }
            }
            let timeout = match deadline {
                Some(d) => poll_timeout(d, Instant::now()),
                None => nix::poll::PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(0) => return,
                Ok(_) => {}
                Err(Errno::EINTR) => return,
                Err(e) => {
                    log::error!("poll failed: {e}");
                    return;
                }
            }
            for (slot, (fd, source)) in ready.iter_mut().zip(fds.iter().zip(sources)) {
                *slot = (Some(source), fd.revents().unwrap_or(PollFlags::empty()));
            }
        }
        // Both output streams ready in one round: the one that carries the end marker is read
        // last, so what the tool wrote to the other one before its marker counts with it
        // (sqlite3's error on stderr, then the sentinel on stdout).
        if self.marker_stream() == Stream::Stdout {
            let at = |s: Source| ready.iter().position(|(r, _)| *r == Some(s));
            if let (Some(out), Some(err)) = (at(Source::Stdout), at(Source::Stderr)) {
                ready.swap(out, err);
            }
        }
        let mut exited = false;
        for (source, flags) in ready {
            let Some(source) = source else { continue };
            if flags.is_empty() {
                continue;
            }
            match source {
                Source::Bell => self.cfg.doorbell.drain(),
                Source::Stdout => self.read_stream(Stream::Stdout),
                Source::Stderr => self.read_stream(Stream::Stderr),
                Source::Stdin => self.write_pending(),
                Source::Pid => exited = true,
            }
        }
        let no_pidfd = self.child.as_ref().is_some_and(|c| c.io.pidfd.is_none());
        if exited || no_pidfd {
            self.check_exit();
        }
    }

    /// A relay that answers pings went silent: its host is frozen or out of reach. Ends the
    /// local `ssh` (the relay ends the tool when it stops hearing pings); the exit then goes
    /// the way of any crash.
    fn link_lost(&mut self, host: &str, silent: Duration) {
        let line = format!(
            "aim: nothing from the relay on {host} for {silent:.1?}; the link is taken for lost"
        );
        log::warn!("{}[{}]: {line}", self.cfg.spec.name, self.index());
        self.note_stderr(&line);
        if let Some(child) = &self.child {
            child.process.signal_group(Signal::SIGKILL);
        }
    }

    pub(super) fn check_exit(&mut self) {
        let Some(child) = &self.child else { return };
        if let Some(exit) = child.process.try_reap() {
            // Whatever the child wrote before exiting is still in the pipes.
            self.read_stream(Stream::Stdout);
            self.on_exit(Some(exit));
        }
    }

    pub(super) fn on_timers(&mut self, now: Instant) {
        if self
            .child
            .as_ref()
            .and_then(|c| c.io.link.as_ref())
            .is_some_and(|l| l.silence_due(now))
        {
            // An answer may be waiting unread.
            self.read_stream(Stream::Stdout);
        }
        if let Some(child) = self.child.as_mut() {
            if let Some(link) = child.io.link.as_mut() {
                link.ping_if_due(now);
                let silent = link.silent_for(now);
                let host = link.shared.host.clone();
                if link.wants_write() {
                    self.write_pending();
                }
                if let Some(silent) = silent {
                    self.link_lost(&host, silent);
                }
            }
        }
        self.expire_queued(now);
        self.cancel_timers(now);
        if let Some((deadline, _)) = &self.exiting {
            let deadline = *deadline;
            if now >= deadline {
                if let Some(Phase::Busy { .. }) = self.child.as_ref().map(|c| &c.phase) {
                    self.abort_busy(Error::Shutdown { prompt: None }, ExitCause::Shutdown);
                }
            }
        }
        enum Due {
            Nothing,
            Startup(Step),
            NotReady(Duration),
            Answer(Step),
            /// How long since submission, and the configured limit that passed.
            TimedOut(Duration, Duration),
            Stalled(Duration, Duration),
            Stuck(Instant),
            Escalate,
        }
        let stall_at = self.stall_deadline();
        let Some(child) = &mut self.child else { return };
        let mut wrote = false;
        let conversation = &mut child.conversation;
        let due = match &mut child.phase {
            Phase::Starting { deadline, began } => {
                let step = conversation.tick(now);
                if step != Step::Pending {
                    Due::Startup(step)
                } else if now >= *deadline {
                    Due::NotReady(now.saturating_duration_since(*began))
                } else {
                    Due::Nothing
                }
            }
            Phase::Busy { job, began } => {
                let before = child.out.len();
                let step = conversation.wake(now, &mut child.out);
                wrote = child.out.len() > before;
                let answer_over = job
                    .answer_timeout
                    .filter(|t| now >= crate::clock::after(*began, *t));
                if step != Step::Pending {
                    Due::Answer(step)
                } else if let Some(limit) = answer_over {
                    Due::TimedOut(now.saturating_duration_since(job.submitted), limit)
                } else if now >= job.deadline {
                    let limit = job.deadline.saturating_duration_since(job.submitted);
                    Due::TimedOut(now.saturating_duration_since(job.submitted), limit)
                } else if stall_at.is_some_and(|at| now >= at) {
                    let limit = self.cfg.spec.stall_timeout.unwrap_or_default();
                    Due::Stalled(now.saturating_duration_since(job.submitted), limit)
                } else if self.cfg.hooks.is_some()
                    && self.stuck_began.is_none()
                    && now >= crate::clock::after(*began, self.cfg.stuck_after)
                {
                    Due::Stuck(*began)
                } else {
                    Due::Nothing
                }
            }
            Phase::Stopping { deadline, .. } if now >= *deadline => Due::Escalate,
            Phase::Stopping { .. } | Phase::Idle => Due::Nothing,
        };
        if wrote {
            // The conversation answered the tool (an approver's decision).
            self.write_pending();
        }
        match due {
            Due::Nothing => {}
            Due::Startup(step) => self.on_startup_step(step, now),
            Due::NotReady(waited) => {
                let err = Error::NotReady {
                    tool: self.cfg.spec.name.clone(),
                    instance: self.cfg.shared.index,
                    waited,
                    exit: None,
                    stderr: self.cfg.shared.last_stderr(),
                };
                log::warn!("{err}");
                if let Some(n) = self.child.as_mut().and_then(|c| c.notify.take()) {
                    let _ = n.send(Err(err));
                }
                self.begin_stop(ExitCause::NotReady, StopStep::Term);
            }
            Due::Answer(step) => self.on_answer_step(step, now),
            Due::Stuck(began) => self.mark_stuck(began),
            Due::TimedOut(waited, limit) | Due::Stalled(waited, limit) => {
                let stage = if matches!(due, Due::Stalled(..)) {
                    crate::error::TimeoutStage::Stalled
                } else {
                    crate::error::TimeoutStage::Answering
                };
                let activity = self.child.as_ref().and_then(|c| c.conversation.activity());
                let err = Error::Timeout {
                    instance: Some(self.cfg.shared.index),
                    waited,
                    limit: Some(limit),
                    stage,
                    activity,
                    prompt: None,
                };
                // `abort_busy` logs it.
                self.abort_busy(err, ExitCause::Timeout);
            }
            Due::Escalate => self.escalate(now),
        }
    }
}

impl IoThread {
    /// The stream that carries the end of an answer: the prompt's for prompt framings,
    /// stdout otherwise (sentinels, JSON events, agents).
    fn marker_stream(&self) -> Stream {
        match &self.cfg.spec.framing {
            crate::spec::Framing::Prompt { stream, .. }
            | crate::spec::Framing::NumberedPrompt { stream, .. } => *stream,
            _ => Stream::Stdout,
        }
    }
}
