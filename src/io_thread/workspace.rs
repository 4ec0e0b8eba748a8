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
