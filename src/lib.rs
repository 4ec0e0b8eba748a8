//! `aim` supervises fleets of long-lived interactive command-line tools (AI coding agents
//! such as aider, claude and codex; REPLs such as python3, bc and sqlite3) from plain,
//! blocking Rust: no async runtime, just threads, channels and `poll(2)`.
//!
//! # A cluster in three lines
//!
//! [`launch_cluster`] starts N instances of a tool from the registry and waits until each is
//! ready; [`ClusterManager::send`] routes a prompt, writes it to the chosen instance's stdin,
//! and blocks until the tool's protocol says the answer is complete.
//!
//! ```
//! use aim::{launch_cluster, Strategy};
//!
//! // First thing in `main`: lets this program serve as the demo agent (a no-op otherwise).
//! aim::demo::serve_if_requested();
//!
//! let cluster = launch_cluster("demo", 3, Strategy::RoundRobin)?;
//! let answer = cluster.send("hello")?;
//! assert!(answer.text.starts_with("You said: hello"));
//! assert!(answer.instance < 3);
//! cluster.shutdown();
//! # Ok::<(), aim::Error>(())
//! ```
//!
//! `demo` is our built-in demo agent, which behaves like an AI coding CLI (banner, `> `
//! prompt, multi-line answers, fault injection); see [`demo`]. Binaries that call
//! [`demo::serve_if_requested`] first thing in `main` serve as their own demo agent.
//!
//! # Tools, specs and framing
//!
//! A [`ToolSpec`] says how to start a tool, write a prompt and know when the answer is
//! complete ([`Framing`]). Here `bc` prints nothing for an assignment, so a sentinel with a
//! fresh nonce marks the end of each answer:
//!
//! ```
//! use aim::{Framing, ToolProcessPool, ToolSpec};
//!
//! let spec = ToolSpec::new("bc", "bc")
//!     .args(["-q"])
//!     .env("BC_LINE_LENGTH", "0")
//!     .framing(Framing::Sentinel { command: "print \"{nonce}\\n\"".into() });
//! let pool = ToolProcessPool::new(spec, 1)?;
//! assert_eq!(pool.send_to(0, "x = 6")?.text, "");
//! assert_eq!(pool.send_to(0, "x * 7")?.text, "42\n");
//! pool.shutdown();
//! # Ok::<(), aim::Error>(())
//! ```
//!
//! The [`ToolRegistry`] knows `demo`, `python`, `bc`, `sqlite3`, `aider`, `claude` and `codex`,
//! and loads more from JSON (`AIM_TOOLS`).
//!
//! AI agents have [`protocol`]s of their own: aider, Claude Code's stream-json mode and
//! Codex's app-server answer with the model's text in [`Response::text`] and, where the tool
//! reports them, [`Response::session_id`], [`Response::usage`] and [`Response::cost_usd`]; a
//! turn the tool itself reports as failed is an [`Error::ToolReported`].
//!
//! [`ToolProcessPool`] is the layer underneath the cluster: N instances addressed by index.
//!
//! # Routing and sessions
//!
//! A [`Router`] picks an instance from a snapshot of candidates: [`Strategy::RoundRobin`],
//! [`Strategy::LeastBusy`], [`Strategy::Sticky`], or your own. A [`Session`] keeps a
//! conversation on one instance and says when its context was lost:
//!
//! ```
//! # aim::demo::serve_if_requested();
//! use aim::{launch_cluster, Strategy};
//!
//! let cluster = launch_cluster("demo", 2, Strategy::Sticky)?;
//! let session = cluster.session("alice");
//! let first = session.send("/add main.rs")?;
//! let second = session.send("/ask what does main do?")?;
//! assert_eq!(first.instance, second.instance);
//! assert!(!second.context_lost);
//! # Ok::<(), aim::Error>(())
//! ```
//!
//! # Blocking, deadlines and errors
//!
//! Calls come as a family: `send` blocks up to the request timeout, `send_timeout` takes one,
//! `submit` returns a [`Ticket`] at once, `try_submit` never blocks or queues. Every ticket
//! ends: with the answer or an [`Error`]. Errors are typed, say what to do
//! ([`Error::is_retryable`]) and hand the prompt back:
//!
//! ```
//! # aim::demo::serve_if_requested();
//! use aim::{launch_cluster, Error, Request, Strategy};
//! use std::time::Duration;
//!
//! let cluster = launch_cluster("demo", 1, Strategy::RoundRobin)?;
//! let err = cluster.send("two\nlines\n\0").unwrap_err();
//! assert!(matches!(err, Error::InvalidPrompt { .. }));
//!
//! // A hanging answer times out; the instance is recycled, never read out of step.
//! let err = cluster
//!     .send(Request::new("/hang").timeout(Duration::from_millis(200)))
//!     .unwrap_err();
//! assert!(err.is_timeout());
//! assert_eq!(err.into_prompt().as_deref(), Some("/hang"));
//! # Ok::<(), aim::Error>(())
//! ```
//!
//! # Supervision
//!
//! A monitor thread per cluster restarts instances that crash or hang, with exponential
//! backoff and jitter ([`Backoff`]), a restart budget ([`RestartBudget`]) and a circuit
//! breaker ([`CircuitBreaker`]); all three are pure state machines taking `now`. Lifecycle
//! [`Event`]s go to `log` and to an optional [`EventSink`].
//!
//! # Metrics
//!
//! [`ClusterManager::metrics`] returns a [`MetricsSnapshot`] (serde, JSON, Prometheus text);
//! [`ClusterManager::serve_metrics`] serves `/metrics`. See `docs/metrics.md`.
//!
//! # Threads and processes
//!
//! Each instance has one dedicated I/O thread that spawns its child (in a new process group),
//! owns its pipes or PTY, and multiplexes them with `poll(2)`. A small guardian process
//! ([`start_guardian`]) kills every tool process group, grandchildren included, if the
//! supervisor dies by any means. The
//! router lives under a lock taken by the submitting thread and by the dispatcher thread,
//! which serves the backlog. Nothing sleeps to synchronise: waits are channels, condition
//! variables and `poll` timeouts at deadlines. Handles are cheap to clone, `Send + Sync`;
//! dropping the last one shuts down, bounded.
//!
//! # Logging
//!
//! | level | what |
//! |---|---|
//! | `error` | restart budget exhausted; a process that survived SIGKILL; a thread that panicked |
//! | `warn` | unexpected exits, spawn failures, timeouts, breaker opened, SIGTERM ignored |
//! | `info` | restarts scheduled, breaker half-open or closed, resizes, the metrics address |
//! | `debug` | spawned, ready, normal exits, every stderr line of every child |
//! | `trace` | output that arrived outside any answer |
//!
//! # Platform and MSRV
//!
//! Linux first (pidfds need 5.3+); other Unixes are not tested. The minimum supported Rust
//! version is 1.82, declared in `Cargo.toml`; it is raised only in a minor release.
#![warn(missing_docs)]

mod ansi;
mod backoff;
mod breaker;
mod budget;
mod cancel;
pub mod clock;
mod cluster;
pub mod demo;
mod dispatch;
mod duration;
mod error;
mod events;
mod fleet;
mod framing;
mod guardian;
mod histogram;
mod host_health;
mod host_state;
mod hosts;
mod instance;
mod io_thread;
mod launch;
#[cfg(test)]
mod launch_tests;
mod metrics;
mod metrics_server;
mod monitor;
mod permissions;
mod pool;
mod process;
mod prometheus;
pub mod protocol;
mod protocol_api;
mod refusal;
mod registry;
mod reply;
mod request;
mod response;
mod routing;
mod session;
mod session_link;
mod setters;
mod spec;
mod state;
mod statements;
mod stdin_wait;
mod supervision;
mod ticket;
mod workspace;

pub use backoff::{Backoff, BackoffConfig, Jitter};
pub use breaker::{BreakerConfig, BreakerTransition, CircuitBreaker, CircuitState};
pub use budget::{BudgetConfig, RestartBudget};
pub use cancel::CancelHandle;
pub use cluster::{launch_cluster, ClusterBuilder, ClusterHealth, ClusterManager, RetryPolicy};
pub use duration::MAX_DURATION;
pub use error::{Error, ErrorKind, Result, TimeoutStage};
pub use events::{Event, EventSink};
pub use guardian::start_guardian;
pub use histogram::Histogram;
pub use host_state::{HostState, HostStatus};
pub use instance::{InstanceStatus, StopMethod, StopOutcome};
pub use launch::relay::run_relay;
pub use metrics::{ClusterMetrics, InstanceMetrics, LatencySummary, MetricsSnapshot, UsageTotals};
pub use metrics_server::MetricsServer;
/// The signal type of [`ClusterManager::signal`] and [`ToolProcessPool::signal`] (re-exported
/// from `nix`, so callers need not depend on it).
pub use nix::sys::signal::Signal;
pub use permissions::{
    ApprovalRequest, Approvals, Approve, Approver, ApproverFn, Decision, Denial, Pending,
    Permissions,
};
pub use pool::{PoolBuilder, ShutdownReport, ToolProcessPool};
pub use process::resident_memory_bytes;
pub use refusal::Refusal;
pub use registry::ToolRegistry;
pub use request::Request;
pub use response::Response;
pub use routing::{
    Candidate, LeastBusy, RoundRobin, RouteContext, Router, SessionMode, Sticky, Strategy,
};
pub use session::Session;
pub use spec::{
    EnvSpec, Framing, InputFormat, PtySize, Readiness, Replay, RestartPolicy, Stream, ToolSpec,
    Transport,
};
pub use state::{ExitCause, ExitInfo, InstanceOutlook, InstanceState};
pub use statements::StatementCheck;
pub use supervision::{LivenessProbe, SupervisionConfig};
pub use ticket::{Chunks, Ticket};
pub use workspace::{
    ChangedFile, Cleanup, FileChange, Hooks, KeptWorkspace, WorkspaceKey, WorkspaceKind,
    WorkspaceSpec,
};

/// Compiles the README's example with the doctests, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
