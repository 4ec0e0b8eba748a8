//! Cancelled prompts: queued ones fail at once; the one being answered is interrupted the
//! protocol's way, and its process recycled if the tool does not stop within the grace.

use super::*;
use crate::protocol::Interrupt;

/// aider exits on a second SIGINT within this long of the first.
const SIGINT_SPACING: Duration = Duration::from_secs(2);

impl IoThread {
    /// Some job's cancel flag was set: fail flagged queued jobs, interrupt a flagged answer.
    pub(super) fn on_cancel(&mut self, now: Instant) {
        if self.queue.iter().any(|j| j.cancel.load(Ordering::Acquire)) {
            let (cancelled, kept): (VecDeque<Job>, VecDeque<Job>) = self
                .queue
                .drain(..)
                .partition(|j| j.cancel.load(Ordering::Acquire));
            self.queue = kept;
            for job in cancelled {
                self.complete(
                    job,
                    Err(Error::Cancelled {
                        recycled: false,
                        prompt: None,
                    }),
                );
            }
        }
        let Some(child) = &mut self.child else { return };
        let Phase::Busy { job, .. } = &child.phase else {
            return;
        };
        if !job.cancel.load(Ordering::Acquire) || child.interrupting.is_some() {
            return;
        }
        // Give the tool its stop grace to end the turn; then recycle.
        child.interrupting = Some(crate::clock::after(
            now,
            self.cfg.spec.stop_grace + SIGINT_SPACING,
        ));
        let how = child.conversation.interrupt(&mut child.out);
        log::debug!(
            "{}[{}]: cancelling the answer in flight ({how:?})",
            self.cfg.spec.name,
            self.index()
        );
        match how {
            Interrupt::Signal => self.send_sigint(now),
            Interrupt::Written => self.write_pending(),
            Interrupt::Recycle => {
                self.abort_busy(
                    Error::Cancelled {
                        recycled: true,
                        prompt: None,
                    },
                    ExitCause::Manual,
                );
            }
        }
    }

    /// SIGINT to the tool, never two within [`SIGINT_SPACING`] (a later one is scheduled).
    pub(super) fn send_sigint(&mut self, now: Instant) {
        let Some(child) = &mut self.child else { return };
        if let Some(last) = child.last_sigint {
            let allowed = last + SIGINT_SPACING;
            if now < allowed {
                child.sigint_due = Some(allowed);
                return;
            }
        }
        child.sigint_due = None;
        child.last_sigint = Some(now);
        child.process.signal_tool(Signal::SIGINT);
    }

    /// The cancel timers of the answer in flight: a deferred SIGINT, and the end of the
    /// grace after which the process is recycled.
    pub(super) fn cancel_timers(&mut self, now: Instant) {
        let Some(child) = &self.child else { return };
        if !matches!(child.phase, Phase::Busy { .. }) {
            return;
        }
        if child.sigint_due.is_some_and(|at| now >= at) {
            self.send_sigint(now);
        }
        let overdue = self
            .child
            .as_ref()
            .and_then(|c| c.interrupting)
            .is_some_and(|at| now >= at);
        if overdue {
            self.abort_busy(
                Error::Cancelled {
                    recycled: true,
                    prompt: None,
                },
                ExitCause::Manual,
            );
        }
    }
}
