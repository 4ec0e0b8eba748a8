//! `aim` supervises fleets of long-lived interactive command-line tools from plain, blocking
//! Rust.
#![warn(missing_docs)]

mod ansi;
mod backoff;
mod breaker;
mod budget;
mod clock;
mod cluster;
pub mod demo;
mod dispatch;
mod error;
mod events;
mod framing;
mod histogram;
mod instance;
mod io_thread;
mod metrics;
mod metrics_server;
mod monitor;
mod pool;
mod process;
mod prometheus;
mod registry;
mod reply;
mod request;
mod routing;
mod session;
mod spec;
mod ticket;

pub use backoff::{Backoff, BackoffConfig, Jitter};
pub use breaker::{BreakerConfig, BreakerTransition, CircuitBreaker, CircuitState};
pub use budget::{BudgetConfig, RestartBudget};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cluster::{launch_cluster, ClusterBuilder, ClusterHealth, ClusterManager, RetryPolicy};
pub use error::{Error, Result};
pub use events::{Event, EventSink};
pub use histogram::{Histogram, PROMETHEUS_BOUNDS};
pub use instance::{ExitCause, InstanceState, InstanceStatus, Response, StopMethod, StopOutcome};
pub use metrics::{
    ClusterMetrics, InstanceMetrics, LatencySummary, MetricsSnapshot, FAILURE_KINDS,
    RESTART_REASONS,
};
pub use metrics_server::MetricsServer;
pub use monitor::{LivenessProbe, SupervisionConfig};
pub use pool::{PoolBuilder, ShutdownReport, ToolProcessPool};
pub use process::ExitInfo;
pub use registry::{ToolRegistry, DEMO_PROGRAM_PLACEHOLDER, TOOLS_ENV};
pub use request::Request;
pub use routing::{Candidate, LeastBusy, RoundRobin, RouteContext, Router, Sticky, Strategy};
pub use session::Session;
pub use spec::{
    EnvSpec, Framing, InputFormat, Readiness, RestartPolicy, Stream, ToolSpec, Transport,
};
pub use ticket::Ticket;
