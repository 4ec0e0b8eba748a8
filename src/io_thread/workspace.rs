//! The instance's workspace, as its I/O thread sees it: acquired before the first start and
//! kept across restarts, prepared (`before_run`) before each start, and what each answer
//! changed there (`after_run` after it).

use std::path::PathBuf;

use super::*;

impl IoThread {
    /// The directory the next process starts in: the instance's workspace after its
    /// `before_run` hook, or `None` when the tool has no workspaces. Blocks for the git
    /// commands and hooks (each within its timeout).
    pub(super) fn prepare_workspace(&mut self) -> Result<Option<PathBuf>> {
        let Some(workspaces) = self.cfg.workspaces.clone() else {
            return Ok(None);
        };
        let ws = match &self.workspace {
            Some(ws) if ws.path.is_dir() => ws.clone(),
            _ => {
                let ws = workspaces.acquire(&self.cfg.shared.index.to_string())?;
                self.cfg.shared.info.lock().workspace = Some((ws.path.clone(), ws.branch.clone()));
                self.workspace = Some(ws.clone());
                ws
            }
        };
        workspaces.before_run(&ws)?;
        Ok(Some(ws.path))
    }

    /// Whether the process may take the next queued prompt in the workspace it runs in.
    /// With per-session workspaces, a prompt of a session whose workspace is not the one the
    /// process runs in makes the instance switch: the session's workspace is acquired, the
    /// conversation is not carried over, and the process is recycled to start there (the
    /// prompt waits, or moves back through the dispatcher to the same instance). False while
    /// that happens. A workspace that cannot be had fails the prompt.
    pub(super) fn workspace_fits_next_job(&mut self) -> bool {
        let Some(workspaces) = self.cfg.workspaces.clone() else {
            return true;
        };
        if workspaces.key() != crate::workspace::WorkspaceKey::Session {
            return true;
        }
        let Some(job) = self.queue.front() else {
            return true;
        };
        let wanted = match &job.session {
            Some(session) => format!("s-{session}"),
            None => self.cfg.shared.index.to_string(),
        };
        let wanted_key = crate::workspace::sanitize_key(&wanted);
        if self
            .workspace
            .as_ref()
            .is_some_and(|ws| ws.key == wanted_key)
        {
            return true;
        }
        match workspaces.acquire(&wanted) {
            Ok(ws) => {
                log::info!(
                    "{}[{}]: moving to workspace {} for the next prompt",
                    self.cfg.spec.name,
                    self.cfg.shared.index,
                    ws.path.display()
                );
                self.cfg.shared.info.lock().workspace = Some((ws.path.clone(), ws.branch.clone()));
                self.workspace = Some(ws);
                // Another session's conversation must not follow the process.
                self.resume_token = None;
                self.history = super::restore::History::default();
                self.begin_stop(ExitCause::Retired, StopStep::Quit);
            }
            Err(err) => {
                if let Some(job) = self.queue.pop_front() {
                    self.complete(job, Err(err));
                }
            }
        }
        false
    }

    /// Notes the workspace's state before a prompt is written (git worktrees).
    pub(super) fn turn_begins(&mut self) {
        self.turn_snapshot = match (&self.cfg.workspaces, &self.workspace) {
            (Some(workspaces), Some(ws)) => workspaces.snapshot(ws),
            _ => None,
        };
    }

    /// Stamps an answer with its workspace and the files the turn changed, then runs
    /// `after_run`.
    pub(super) fn turn_ended(&mut self, result: Result<Response>) -> Result<Response> {
        let (Some(workspaces), Some(ws)) = (&self.cfg.workspaces, &self.workspace) else {
            return result;
        };
        let before = self.turn_snapshot.take();
        let result = result.map(|mut response| {
            response.workspace = Some(ws.path.clone());
            if let Some(before) = &before {
                response.changed_files = workspaces.changes(ws, before);
            }
            response
        });
        workspaces.after_run(ws);
        result
    }

    /// Runs `after_run` once a process has ended.
    pub(super) fn process_ended(&mut self) {
        self.turn_snapshot = None;
        if let (Some(workspaces), Some(ws)) = (&self.cfg.workspaces, &self.workspace) {
            workspaces.after_run(ws);
        }
    }
}
