//! Conversations that survive a restart: the resume token a protocol hands from one process
//! to the next (claude's session, codex's thread), and the replay of a REPL's prompts.

use super::*;
use crate::state::Restore;

/// The prompts that succeeded on this instance, for [`crate::Replay`].
#[derive(Debug, Default)]
pub(super) struct History {
    entries: VecDeque<(String, Vec<u8>)>,
    bytes: usize,
    /// Prompts were dropped to stay within the limits: a replay would not be faithful.
    truncated: bool,
}

impl IoThread {
    /// After a prompt succeeded: keep what a replacement process needs to restore the
    /// conversation.
    pub(super) fn remember_success(&mut self, job: &Job) {
        if let Some(token) = self
            .child
            .as_ref()
            .and_then(|c| c.conversation.resume_token())
        {
            self.resume_token = Some(token);
        }
        let Some(limits) = self.cfg.spec.replay else {
            return;
        };
        let history = &mut self.history;
        history.bytes += job.input.len();
        history
            .entries
            .push_back((job.prompt.clone(), job.input.clone()));
        while history.entries.len() > limits.max_prompts || history.bytes > limits.max_bytes {
            let Some((_, input)) = history.entries.pop_front() else {
                break;
            };
            history.bytes -= input.len();
            history.truncated = true;
        }
    }

    /// A restarted process is ready: queue the replay of the history ahead of everything.
    pub(super) fn queue_replay(&mut self, now: Instant) {
        let index = self.index();
        let Some(child) = &mut self.child else { return };
        if child.generation <= 1 || self.cfg.spec.replay.is_none() {
            return;
        }
        if self.history.truncated {
            child.restore = Restore::Failed(format!(
                "the prompt history outgrew the replay limits ({:?})",
                self.cfg.spec.replay
            ));
            return;
        }
        if self.history.entries.is_empty() {
            return;
        }
        child.replay_left = self.history.entries.len();
        let deadline = crate::clock::after(now, self.cfg.spec.request_timeout);
        for (prompt, input) in self.history.entries.iter().rev() {
            let mut job = Job::new(
                prompt.clone(),
                input.clone(),
                now,
                deadline,
                crate::reply::Reply::none(),
                true,
            );
            job.replay = true;
            job.placed
                .store(index, std::sync::atomic::Ordering::Release);
            self.queue.push_front(job);
        }
        log::debug!(
            "{}[{}]: replaying {} prompts into the restarted process",
            self.cfg.spec.name,
            index,
            child.replay_left
        );
    }

    /// A replayed prompt ended; the last one decides whether the process was restored.
    pub(super) fn replay_done(&mut self, result: &Result<Response>) {
        let Some(child) = &mut self.child else { return };
        if let (Err(e), None) = (result, &child.replay_failure) {
            child.replay_failure = Some(format!("replaying a prompt failed: {e}"));
        }
        child.replay_left = child.replay_left.saturating_sub(1);
        if child.replay_left == 0 {
            child.restore = match child.replay_failure.take() {
                Some(reason) => Restore::Failed(reason),
                None => Restore::Restored,
            };
        }
    }

    /// What the protocol knows about restoring (resume), once it knows it.
    pub(super) fn note_restore(&mut self) {
        let failure = self.resume_failure.take();
        let Some(child) = &mut self.child else { return };
        if child.restore != Restore::None {
            return;
        }
        child.restore = match (child.conversation.restored(), failure) {
            (Some(Ok(())), _) => Restore::Restored,
            (Some(Err(reason)), _) | (None, Some(reason)) => Restore::Failed(reason),
            (None, None) => Restore::None,
        };
    }

    /// A process started to resume a conversation never became ready: start the next one
    /// fresh, and say why the conversation is lost.
    pub(super) fn resume_failed(&mut self, exit: Option<ExitInfo>, stderr: &[String]) {
        let Some(token) = self.resume_token.take() else {
            return;
        };
        let why = stderr
            .last()
            .cloned()
            .or_else(|| exit.map(|e| e.to_string()))
            .unwrap_or_else(|| "it did not start".into());
        log::warn!(
            "{}[{}]: could not resume conversation {token}: {why}; starting fresh",
            self.cfg.spec.name,
            self.index()
        );
        self.resume_failure = Some(format!("could not resume conversation {token}: {why}"));
    }
}
