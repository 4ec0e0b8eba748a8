//! [`ClusterManager`]: a supervised pool plus routing, a backlog, sessions and metrics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::backoff::BackoffConfig;
use crate::breaker::BreakerConfig;
use crate::budget::BudgetConfig;
use crate::dispatch::Dispatch;
use crate::error::{Error, Result};
use crate::events::EventSink;
use crate::instance::InstanceStatus;
use crate::metrics::MetricsSnapshot;
use crate::metrics_server::MetricsServer;
use crate::monitor::{LivenessProbe, SupervisionConfig};
use crate::pool::{DispatchHooks, JobPlan, PoolCore, PoolOptions, ShutdownReport, ToolProcessPool};
use crate::protocol::ProtocolKind;
use crate::registry::ToolRegistry;
use crate::request::Request;
use crate::routing::{Router, SessionMode, Sticky, Strategy};
use crate::session_link::SessionLink;
use crate::spec::ToolSpec;
use crate::ticket::Ticket;

/// Which prompts are sent again to another instance when theirs dies while answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryPolicy {
    /// None: the caller gets [`Error::InstanceDied`].
    Never,
    /// Prompts marked [`Request::idempotent`], once. The default.
    #[default]
    Idempotent,
    /// Every prompt, once (only for tools whose prompts are all safe to repeat).
    Always,
}

/// Launches a cluster of `count` instances of the registry tool `tool_id` (built-ins plus the
/// file named by `AIM_TOOLS`) with the given routing strategy and default settings, and waits
/// until every instance is ready.
///
/// ```
/// use aim::{launch_cluster, Strategy};
/// aim::demo::serve_if_requested(); // first in `main`, for the built-in demo agent
/// let cluster = launch_cluster("demo", 3, Strategy::RoundRobin)?;
/// let answer = cluster.send("hello")?;
/// assert!(answer.text.starts_with("You said: hello"));
/// cluster.shutdown();
/// # Ok::<(), aim::Error>(())
/// ```
///
/// # Errors
/// [`Error::UnknownTool`] (listing the known ids), [`Error::ToolsFile`],
/// [`Error::InvalidConfig`], [`Error::Spawn`], [`Error::NotReady`].
pub fn launch_cluster(tool_id: &str, count: usize, strategy: Strategy) -> Result<ClusterManager> {
    ClusterManager::builder_for(tool_id)?
        .count(count)
        .strategy(strategy)
        .launch()
}

/// Agents keep one conversation per process: sessions own theirs. REPL state is shared.
fn default_session_mode(protocol: ProtocolKind) -> SessionMode {
    match protocol {
        ProtocolKind::Framed => SessionMode::Shared,
        _ => SessionMode::Exclusive,
    }
}

/// The cluster's health at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterHealth {
    /// Every instance's status.
    pub instances: Vec<InstanceStatus>,
    /// How many are ready with a live process.
    pub healthy: usize,
    /// Prompts waiting for an eligible instance.
    pub backlog: usize,
    /// Every host's state, when the instances run on other hosts (empty: this machine).
    #[serde(default)]
    pub hosts: Vec<crate::host_state::HostStatus>,
}

impl ClusterHealth {
    /// True when at least one instance can take prompts.
    pub fn is_serving(&self) -> bool {
        self.healthy > 0
    }

    /// True when every instance is healthy.
    pub fn all_healthy(&self) -> bool {
        self.healthy == self.instances.len()
    }
}

pub(crate) struct ClusterInner {
    pub core: Arc<PoolCore>,
    /// The pool underneath, over the same core; handed out by `ClusterManager::pool`.
    pool: ToolProcessPool,
    pub dispatch: Arc<Dispatch>,
    submit_timeout: Duration,
    request_timeout: Duration,
    retry: RetryPolicy,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    stop: Sender<()>,
    pub started: Instant,
}

impl std::fmt::Debug for ClusterInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterInner")
            .field("core", &self.core)
            .field("dispatch", &self.dispatch)
            .finish()
    }
}

impl ClusterInner {
    fn shutdown(&self) -> ShutdownReport {
        // Stop taking new prompts first, then stop the instances (which fail or hand back
        // what they hold), then stop the dispatcher (which fails what is left).
        let report = self.core.shutdown();
        let _ = self.stop.try_send(());
        if let Some(thread) = self.dispatcher.lock().take() {
            if thread.join().is_err() {
                log::error!("dispatcher thread panicked");
            }
        }
        report
    }
}

#[derive(Debug)]
struct ClusterHandle {
    inner: Arc<ClusterInner>,
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

/// A managed cluster of one tool: prompts are routed without the caller choosing an
/// instance, instances that crash or hang are replaced, and nothing waits forever.
///
/// `Send + Sync` and cheap to clone (an `Arc` inside); many threads may send at once. When the
/// last clone (and the last [`Session`](crate::Session)) is dropped, the cluster shuts down, bounded, logging
/// only. Prefer an explicit [`ClusterManager::shutdown`], which returns a report.
///
/// ```
/// # aim::demo::serve_if_requested();
/// use aim::{ClusterManager, Strategy, ToolRegistry};
/// use std::time::Duration;
/// let spec = ToolRegistry::builtin().resolve("demo")?;
/// let cluster = ClusterManager::builder(spec)
///     .count(2)
///     .strategy(Strategy::LeastBusy)
///     .request_timeout(Duration::from_secs(30))
///     .launch()?;
/// let ticket = cluster.submit("first")?;
/// let second = cluster.send("second")?;
/// assert!(ticket.wait()?.text.contains("first"));
/// assert!(second.text.contains("second"));
/// assert_eq!(cluster.health().healthy, 2);
/// cluster.shutdown();
/// # Ok::<(), aim::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClusterManager {
    handle: Arc<ClusterHandle>,
}

impl ClusterManager {
    /// A builder for a cluster of `spec`.
    pub fn builder(spec: ToolSpec) -> ClusterBuilder {
        ClusterBuilder::new(spec)
    }

    /// A builder for a cluster of the registry tool `tool_id`, found the way
    /// [`launch_cluster`] finds it: the built-ins plus the file named by `AIM_TOOLS`
    /// ([`ToolRegistry::from_env`]).
    ///
    /// ```
    /// use aim::ClusterManager;
    /// aim::demo::serve_if_requested(); // first in `main`, for the built-in demo agent
    /// let cluster = ClusterManager::builder_for("demo")?.count(2).launch()?;
    /// assert_eq!(cluster.len(), 2);
    /// cluster.shutdown();
    /// # Ok::<(), aim::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownTool`] (listing the known ids), [`Error::ToolsFile`].
    pub fn builder_for(tool_id: &str) -> Result<ClusterBuilder> {
        Ok(ClusterBuilder::new(ToolRegistry::from_env()?.get(tool_id)?))
    }

    pub(crate) fn inner(&self) -> &Arc<ClusterInner> {
        &self.handle.inner
    }

    /// How many instances the cluster has.
    pub fn len(&self) -> usize {
        self.inner().core.len()
    }

    /// True when the cluster has no instances (never, while running).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The spec the cluster runs.
    pub fn spec(&self) -> &ToolSpec {
        &self.inner().core.spec
    }

    /// The [`ToolProcessPool`] underneath: the same instances, addressed by index, with
    /// `status`, `check_health` and `metrics`. Shutting down either stops both.
    ///
    /// ```
    /// # aim::demo::serve_if_requested();
    /// use aim::{launch_cluster, Strategy};
    /// let cluster = launch_cluster("demo", 2, Strategy::RoundRobin)?;
    /// let pool = cluster.pool();
    /// assert_eq!(pool.send_to(1, "hi")?.instance, 1);
    /// assert_eq!(pool.len(), cluster.len());
    /// # Ok::<(), aim::Error>(())
    /// ```
    pub fn pool(&self) -> ToolProcessPool {
        self.inner().pool.clone()
    }

    /// Time since the cluster was launched.
    pub fn uptime(&self) -> Duration {
        self.inner().started.elapsed()
    }

    /// The routing strategy's name.
    pub fn router_name(&self) -> String {
        self.inner().dispatch.router_name()
    }

    crate::request::blocking_sends!("ClusterManager");

    /// Submits a prompt and returns at once with a [`Ticket`]. If no instance can take it now,
    /// it waits in the backlog for up to the submit timeout.
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`], [`Error::Busy`] when the backlog is full,
    /// [`Error::Shutdown`]; the prompt is handed back.
    pub fn submit(&self, request: impl Into<Request>) -> Result<Ticket> {
        self.submit_inner(request.into(), true, None)
    }

    /// Submits a prompt only if an instance can take it now; never blocks or queues in the
    /// backlog.
    ///
    /// # Errors
    /// [`Error::Busy`] when every eligible queue is full, [`Error::NoHealthyInstance`] when no
    /// instance is available, and as [`ClusterManager::submit`].
    pub fn try_submit(&self, request: impl Into<Request>) -> Result<Ticket> {
        self.submit_inner(request.into(), false, None)
    }

    pub(crate) fn submit_inner(
        &self,
        request: Request,
        wait: bool,
        session: Option<&SessionLink>,
    ) -> Result<Ticket> {
        let inner = self.inner();
        let plan = JobPlan {
            default_timeout: inner.request_timeout,
            pinned: false,
            submit_timeout: Some(inner.submit_timeout),
            retries: match inner.retry {
                RetryPolicy::Never => |_| 0,
                RetryPolicy::Idempotent => u8::from,
                RetryPolicy::Always => |_| 1,
            },
            session,
            dispatcher: Some(inner.dispatch.wake_sender()),
        };
        let (job, ticket) = inner
            .core
            .job_and_ticket(request, plan)
            .inspect_err(|e| inner.dispatch.stats.on_refused(e))?;
        inner.dispatch.submit(job, wait)?;
        Ok(ticket)
    }

    crate::request::pinned_sends!("ClusterManager");

    /// Submits a prompt to instance `index`, bypassing the router, and returns at once.
    ///
    /// # Errors
    /// [`Error::InvalidPrompt`], [`Error::NoSuchInstance`], [`Error::Busy`] when the instance's
    /// queue is full, [`Error::InstanceUnavailable`], [`Error::Shutdown`]; the prompt is
    /// handed back.
    pub fn submit_to(&self, index: usize, request: impl Into<Request>) -> Result<Ticket> {
        let inner = self.inner();
        inner
            .core
            .submit_to(index, request.into(), inner.request_timeout)
    }

    /// A snapshot of every metric: per instance and for the cluster. Reads atomics and, for
    /// resident memory, `/proc`; takes no lock an answer needs.
    ///
    /// ```
    /// # aim::demo::serve_if_requested();
    /// use aim::{launch_cluster, Strategy};
    /// let cluster = launch_cluster("demo", 2, Strategy::RoundRobin)?;
    /// assert_eq!(cluster.metrics().cluster.success_rate, None); // no traffic yet
    /// cluster.send("hello")?;
    /// let metrics = cluster.metrics();
    /// assert_eq!(metrics.cluster.responses, 1);
    /// assert_eq!(metrics.cluster.success_rate, Some(1.0));
    /// assert!(metrics.to_prometheus().contains("aim_responses_total"));
    /// # Ok::<(), aim::Error>(())
    /// ```
    pub fn metrics(&self) -> MetricsSnapshot {
        let inner = self.inner();
        let stats = &inner.dispatch.stats;
        inner.core.metrics(
            &inner.dispatch.router_name(),
            inner.started.elapsed(),
            inner.dispatch.backlog_len() as u64,
            (
                stats.rejected.load(Ordering::Relaxed),
                stats.timed_out.load(Ordering::Relaxed),
            ),
        )
    }

    /// Serves this cluster's metrics in the Prometheus text format at
    /// `http://{addr}/metrics` from a thread of its own. The server does not keep the cluster
    /// alive: once the cluster is dropped it answers `503`.
    ///
    /// # Errors
    /// [`Error::Io`] when `addr` cannot be bound.
    pub fn serve_metrics(&self, addr: impl std::net::ToSocketAddrs) -> Result<MetricsServer> {
        MetricsServer::bind(addr, self.metrics_renderer())
    }

    /// As [`ClusterManager::serve_metrics`], on any address, not only loopback: the metrics
    /// are open to whoever reaches it.
    ///
    /// # Errors
    /// [`Error::Io`] when the address cannot be bound.
    pub fn serve_metrics_public(
        &self,
        addr: impl std::net::ToSocketAddrs,
    ) -> Result<MetricsServer> {
        MetricsServer::bind_public(addr, self.metrics_renderer())
    }

    /// Renders the metrics while the cluster lives (`None` after: the server answers 503).
    fn metrics_renderer(&self) -> impl Fn() -> Option<String> + Send + Sync + 'static {
        let weak = Arc::downgrade(&self.handle);
        move || {
            weak.upgrade()
                .map(|handle| ClusterManager { handle }.metrics().to_prometheus())
        }
    }

    /// Every instance's status, from what was last recorded (never blocks on a child).
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.inner()
            .core
            .instances()
            .iter()
            .map(|h| h.shared.status(false))
            .collect()
    }

    /// The cluster's health: every instance checked with `waitpid(pid, WNOHANG)` now.
    pub fn health(&self) -> ClusterHealth {
        let instances: Vec<InstanceStatus> = self
            .inner()
            .core
            .instances()
            .iter()
            .map(|h| h.shared.status(true))
            .collect();
        let healthy = instances.iter().filter(|s| s.is_healthy()).count();
        ClusterHealth {
            instances,
            healthy,
            backlog: self.inner().dispatch.backlog_len(),
            hosts: self.inner().core.host_statuses(),
        }
    }

    /// Replaces instance `index`'s process, resetting its restart budget and breaker, and
    /// blocks until the new one is ready.
    ///
    /// # Errors
    /// [`Error::NoSuchInstance`], [`Error::Shutdown`], or why the new process did not start.
    pub fn restart_instance(&self, index: usize) -> Result<()> {
        self.inner().core.restart_instance(index)
    }

    /// Sends `signal` to instance `index`'s process, for tests and chaos: `Signal::SIGKILL`
    /// kills it and the monitor handles the exit like any other (restart per policy, the
    /// answer in flight fails or moves per the retry policy). Only the tool's own process
    /// gets it, not its process group. The pid is `status()[index].pid`, the one documented
    /// way to read it (it changes with every restart). Returns at once.
    ///
    /// ```no_run
    /// use aim::{launch_cluster, Signal, Strategy};
    /// let cluster = launch_cluster("demo", 2, Strategy::RoundRobin)?;
    /// let before = cluster.status()[1].pid;
    /// cluster.signal(1, Signal::SIGKILL)?;   // instance 1 restarts with a new pid
    /// # let _ = before;
    /// # Ok::<(), aim::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSuchInstance`]; [`Error::InstanceUnavailable`] when the instance has no
    /// running process (starting, restarting, stopped).
    pub fn signal(&self, index: usize, signal: crate::Signal) -> Result<()> {
        self.inner().core.signal(index, signal)
    }

    /// Grows the cluster to `count` instances (blocking until the new ones are ready), or
    /// shrinks it by draining the highest-numbered instances: their answers in flight finish,
    /// their queued prompts move to the remaining instances.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a zero count, [`Error::Shutdown`], or why a new instance
    /// did not start: the instances before the first that failed are kept, that one and the
    /// ones after it are stopped and removed, so `len()` counts only instances that started.
    pub fn resize(&self, count: usize) -> Result<()> {
        let core = &self.inner().core;
        if count == 0 {
            return Err(Error::config("count", "must be at least 1"));
        }
        if core.is_closed() {
            return Err(Error::Shutdown { prompt: None });
        }
        let now = core.len();
        if count > now {
            core.add_instances(count - now, count - now)?;
        } else if count < now {
            let outcomes = core.remove_from(count);
            log::info!("{}: removed {} instances", core.spec.name, outcomes.len());
        }
        core.notify_change();
        Ok(())
    }

    /// Stops the cluster: new prompts are refused, answers in flight get the drain timeout,
    /// queued and waiting prompts fail with [`Error::Shutdown`], every process is stopped by
    /// escalation and reaped. Idempotent: later calls return the same report.
    pub fn shutdown(&self) -> ShutdownReport {
        self.inner().shutdown()
    }
}

/// Builds a [`ClusterManager`]. Every setter's default is given in its doc.
#[derive(Debug)]
pub struct ClusterBuilder {
    spec: ToolSpec,
    count: usize,
    router: Option<Box<dyn Router>>,
    strategy: Strategy,
    session_mode: Option<SessionMode>,
    /// Supervision settings given one by one: they win over `supervision(...)`.
    overrides: crate::supervision::SupervisionOverrides,
    options: PoolOptions,
    backlog_capacity: usize,
    submit_timeout: Duration,
    request_timeout: Option<Duration>,
    retry: RetryPolicy,
}

impl ClusterBuilder {
    fn new(spec: ToolSpec) -> Self {
        ClusterBuilder {
            spec,
            count: 1,
            router: None,
            strategy: Strategy::RoundRobin,
            session_mode: None,
            overrides: Default::default(),
            options: PoolOptions::default(),
            backlog_capacity: 1024,
            submit_timeout: Duration::from_secs(30),
            request_timeout: None,
            retry: RetryPolicy::Idempotent,
        }
    }

    /// How many instances. Defaults to 1.
    pub fn count(mut self, count: usize) -> Self {
        self.count = count;
        self
    }

    /// A shipped routing strategy. Defaults to round-robin.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self.router = None;
        self
    }

    /// Whether sessions own their instance ([`SessionMode::Exclusive`]) or may share one
    /// ([`SessionMode::Shared`]), with [`Strategy::Sticky`]. Defaults to exclusive for the AI
    /// agent protocols (aider, claude, codex) and shared for framed tools (REPLs).
    pub fn session_mode(mut self, mode: SessionMode) -> Self {
        self.session_mode = Some(mode);
        self
    }

    /// A custom router, instead of a shipped strategy. Defaults to none: the
    /// [`ClusterBuilder::strategy`]'s router.
    pub fn router(mut self, router: Box<dyn Router>) -> Self {
        self.router = Some(router);
        self
    }

    crate::pool::shared_setters!();

    /// Prompts that may wait for an eligible instance. Defaults to 1024.
    pub fn backlog_capacity(mut self, capacity: usize) -> Self {
        self.backlog_capacity = capacity;
        self
    }

    /// How long a prompt may wait for an eligible instance. Defaults to 30 s.
    pub fn submit_timeout(mut self, timeout: Duration) -> Self {
        self.submit_timeout = timeout;
        self
    }

    /// How long a whole request may take. Defaults to the spec's `request_timeout`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// How long an answer may run before its instance counts as stuck: prompts queued behind
    /// it move to other instances, and nothing new is placed on it until the answer ends (it
    /// still ends at its own deadline). Set it above the answer time you consider normal.
    /// Defaults to 1 s.
    pub fn stuck_after(mut self, threshold: Duration) -> Self {
        self.options.stuck_after = threshold;
        self
    }

    /// Which prompts are sent again when their instance dies. Defaults to
    /// [`RetryPolicy::Idempotent`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How often the monitor polls `waitpid`. Defaults to 5 s. This and the supervision
    /// setters below win over [`ClusterBuilder::supervision`], before or after it.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.overrides.health_interval = Some(interval);
        self
    }

    /// Restart delays. Defaults to 500 ms doubling to 30 s with full jitter.
    pub fn backoff(mut self, backoff: BackoffConfig) -> Self {
        self.overrides.backoff = Some(backoff);
        self
    }

    /// The restart budget. Defaults to 5 restarts in 60 s.
    pub fn restart_budget(mut self, budget: BudgetConfig) -> Self {
        self.overrides.budget = Some(budget);
        self
    }

    /// The circuit breaker. Defaults to 5 failures, 10 s growing to 300 s.
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.overrides.breaker = Some(breaker);
        self
    }

    /// A liveness probe for idle instances. Defaults to none.
    pub fn liveness_probe(mut self, probe: LivenessProbe) -> Self {
        self.overrides.probe = Some(probe);
        self
    }

    /// Replace each process after this many answers. Defaults to never.
    pub fn max_requests(mut self, requests: u64) -> Self {
        self.overrides.max_requests = Some(requests);
        self
    }

    /// Replace each process after it has run this long. Defaults to never.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.overrides.max_lifetime = Some(lifetime);
        self
    }

    /// Validates everything, starts the instances and the dispatcher, and waits until every
    /// instance is ready.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field, [`Error::Spawn`], [`Error::NotReady`].
    /// Nothing is left running on error.
    pub fn launch(self) -> Result<ClusterManager> {
        if self.backlog_capacity == 0 {
            return Err(Error::config("backlog_capacity", "must be positive"));
        }
        crate::spec::check_duration("submit_timeout", self.submit_timeout, true)?;
        if let Some(timeout) = self.request_timeout {
            crate::spec::check_duration("request_timeout", timeout, true)?;
        }
        let request_timeout = self.request_timeout.unwrap_or(self.spec.request_timeout);
        let session_mode = self
            .session_mode
            .unwrap_or_else(|| default_session_mode(self.spec.protocol));
        let (rehome_tx, rehome_rx) = unbounded();
        let (changes_tx, changes_rx) = bounded(1);
        let (wake_tx, wake_rx) = bounded(1);
        let (stop_tx, stop_rx) = bounded(1);
        let backlog = Arc::new(AtomicUsize::new(0));
        let hooks = DispatchHooks {
            rehome: rehome_tx,
            changes: changes_tx,
            backlog: Arc::clone(&backlog),
        };
        let mut options = self.options;
        options.supervision = self.overrides.apply(options.supervision);
        let core = PoolCore::launch(self.spec, self.count, options, Some(hooks))?;
        let router = self.router.unwrap_or_else(|| match self.strategy {
            Strategy::Sticky => Box::new(Sticky::with_mode(session_mode)),
            other => other.router(),
        });
        let dispatch = Arc::new(Dispatch::new(
            Arc::clone(core.fleet()),
            router,
            backlog,
            self.backlog_capacity,
            wake_tx,
        ));
        let runner = Arc::clone(&dispatch);
        let thread = std::thread::Builder::new()
            .name(format!("aim-dispatch-{}", core.spec.name))
            .spawn(move || runner.run(rehome_rx, wake_rx, changes_rx, stop_rx))
            .map_err(|e| {
                core.shutdown();
                Error::io("cannot start the dispatcher thread", e)
            })?;
        let inner = Arc::new(ClusterInner {
            pool: ToolProcessPool::from_core(Arc::clone(&core)),
            core,
            dispatch,
            submit_timeout: self.submit_timeout,
            request_timeout,
            retry: self.retry,
            dispatcher: Mutex::new(Some(thread)),
            stop: stop_tx,
            started: Instant::now(),
        });
        Ok(ClusterManager {
            handle: Arc::new(ClusterHandle { inner }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_protocols_default_to_exclusive_sessions() {
        for kind in [
            ProtocolKind::Aider,
            ProtocolKind::ClaudeStreamJson,
            ProtocolKind::CodexAppServer,
        ] {
            assert_eq!(default_session_mode(kind), SessionMode::Exclusive);
        }
        assert_eq!(
            default_session_mode(ProtocolKind::Framed),
            SessionMode::Shared
        );
    }
}
