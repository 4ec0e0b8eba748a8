//! Protocols: for each kind of tool, how a prompt is encoded, when an answer is complete, and
//! how the answer is decoded into a structured [`Response`](crate::Response).
//!
//! A [`Protocol`] is shared by every instance of a tool; each process gets its own
//! [`Conversation`] (its state: a JSON-RPC thread id, the bytes of the turn so far). The
//! instance's I/O thread drives the conversation: it writes what the conversation asks for,
//! feeds it the tool's output, fires its timers, and turns its [`Answer`] into a `Response`.
//!
//! Shipped protocols, chosen with [`ProtocolKind`] in a [`ToolSpec`]:
//!
//! | kind | tools | answer complete at | `text` |
//! |---|---|---|---|
//! | `framed` (default) | REPLs, the demo agent | the spec's [`Framing`](crate::Framing) | the output minus markers |
//! | `aider` | aider | a blank line and the prompt, with aider blocked reading stdin | the model's reply (no echoes, prompt or `Tokens:` line) |
//! | `claude_stream_json` | Claude Code | the `{"type":"result"}` event | its `result` |
//! | `codex_app_server` | Codex | the `turn/completed` notification | the last agent message |
//!
//! Write your own by implementing both traits and setting it with
//! [`ToolSpec::custom_protocol`](crate::ToolSpec::custom_protocol).

mod aider;
mod claude;
mod codex;
mod framed;
mod jsonl;

use std::sync::Arc;

use crate::spec::ToolSpec;

pub(crate) use crate::protocol_api::check_prompt;
pub use crate::protocol_api::{
    Answer, Between, Context, Conversation, Interrupt, Protocol, ProtocolKind, Step, Usage,
};
pub use crate::stdin_wait::{blocked_reading_stdin, StdinProbe};
pub(crate) use aider::args_for_git_worktree as aider_args_for_git_worktree;
pub use aider::Aider;
pub use claude::ClaudeStreamJson;
pub use codex::CodexAppServer;
pub use framed::Framed;

impl ProtocolKind {
    /// The protocol for `spec`.
    pub fn build(self, spec: &ToolSpec) -> Arc<dyn Protocol> {
        match self {
            ProtocolKind::Framed => Arc::new(Framed::new(spec)),
            ProtocolKind::Aider => Arc::new(Aider::new(spec)),
            ProtocolKind::ClaudeStreamJson => Arc::new(ClaudeStreamJson::new(spec)),
            ProtocolKind::CodexAppServer => Arc::new(CodexAppServer::new(spec)),
        }
    }
}

impl ToolSpec {
    /// The protocol this spec uses: the custom one, or the shipped `protocol` built for it.
    pub fn build_protocol(&self) -> Arc<dyn Protocol> {
        match self.custom() {
            Some(custom) => Arc::clone(custom),
            None => self.protocol.build(self),
        }
    }
}
