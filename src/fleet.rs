//! [`Fleet`]: the state a pool shares with its monitor and dispatcher: which tool, how it is
//! supervised, the instances, and how to reach the dispatcher. Below the pool and the monitor,
//! so neither needs the other to read it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::RwLock;

use crate::events::EventSink;
use crate::host_state::{HostShared, HostStatus};
use crate::instance::{InstanceHandle, Job};
use crate::protocol_api::Protocol;
use crate::spec::ToolSpec;
use crate::supervision::SupervisionConfig;

/// How a cluster's dispatcher hears from the pool.
#[derive(Debug, Clone)]
pub(crate) struct DispatchHooks {
    /// Jobs that may move go here when their instance cannot answer them.
    pub rehome: Sender<Job>,
    /// Rung when an instance becomes ready, its circuit changes, or (while the backlog is not
    /// empty) it frees a queue slot.
    pub changes: Sender<()>,
    /// How many prompts wait in the dispatcher's backlog.
    pub backlog: Arc<AtomicUsize>,
}

/// The shared state of one pool.
pub(crate) struct Fleet {
    pub spec: Arc<ToolSpec>,
    /// How prompts are encoded and answers framed and decoded (built once from the spec).
    pub protocol: Arc<dyn Protocol>,
    pub supervision: SupervisionConfig,
    /// Prompts queued or in flight per instance before it counts as full.
    pub queue_capacity: usize,
    pub sink: Option<Arc<dyn EventSink>>,
    /// The instances, in index order (indices stay contiguous).
    pub instances: RwLock<Vec<Arc<InstanceHandle>>>,
    /// The cluster's dispatcher, if any.
    pub hooks: Option<DispatchHooks>,
    /// Set by shutdown: nothing new is accepted or started.
    pub closed: AtomicBool,
    /// The instances' workspaces, when the spec asks for them.
    pub workspaces: Option<Arc<crate::workspace::Workspaces>>,
    /// The hosts instances run on (empty: this machine); instance `i` on host `i % hosts`.
    pub hosts: Vec<Arc<HostShared>>,
}

impl Fleet {
    pub(crate) fn instance(&self, index: usize) -> Option<Arc<InstanceHandle>> {
        self.instances.read().get(index).cloned()
    }

    pub(crate) fn instances(&self) -> Vec<Arc<InstanceHandle>> {
        self.instances.read().clone()
    }

    /// The index of the host instance `index` runs on (`None`: this machine).
    pub(crate) fn host_index(&self, index: usize) -> Option<usize> {
        (!self.hosts.is_empty()).then(|| index % self.hosts.len())
    }

    /// The host instance `index` runs on (`None`: this machine).
    pub(crate) fn host_of(&self, index: usize) -> Option<&Arc<HostShared>> {
        self.host_index(index).map(|h| &self.hosts[h])
    }

    /// Every host's status, with the instances placed on it now.
    pub(crate) fn host_statuses(&self) -> Vec<HostStatus> {
        let count = self.len();
        self.hosts
            .iter()
            .enumerate()
            .map(|(h, host)| {
                host.status((0..count).filter(|i| i % self.hosts.len() == h).collect())
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.instances.read().len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Tells the dispatcher (if any) that an instance's availability changed.
    pub(crate) fn notify_change(&self) {
        if let Some(hooks) = &self.hooks {
            let _ = hooks.changes.try_send(());
        }
    }

    /// Runs `f` on the instances under the read lock (no clone of the list).
    pub(crate) fn with_instances<R>(&self, f: impl FnOnce(&[Arc<InstanceHandle>]) -> R) -> R {
        f(&self.instances.read())
    }
}
