//! What an agent may do on its own, and what happens when it asks for more: [`Permissions`]
//! (the policy), [`ApprovalRequest`] (the question), [`Decision`] (the answer), [`Denial`]
//! (a refusal, as a [`Response`](crate::Response) lists it), [`Approve`] and [`Approver`]
//! (who answers). Each protocol maps these onto its client's own mechanism (see
//! `docs/tools.md`, "Letting agents change things").

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use serde::{Deserialize, Serialize};

/// What an agent may do without asking. JSON: `"read-only"`, `"edit"`, `"full"`.
///
/// ```
/// use aim::Permissions;
/// assert_eq!("edit".parse::<Permissions>()?, Permissions::Edit);
/// assert_eq!(Permissions::ReadOnly.to_string(), "read-only");
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Permissions {
    /// Read files and run read-only commands; no change anywhere.
    ReadOnly,
    /// Also change files inside the instance's working directory.
    Edit,
    /// Anything the client can do, unasked.
    Full,
}

impl Permissions {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Permissions::ReadOnly => "read-only",
            Permissions::Edit => "edit",
            Permissions::Full => "full",
        }
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Permissions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read-only" => Ok(Permissions::ReadOnly),
            "edit" => Ok(Permissions::Edit),
            "full" => Ok(Permissions::Full),
            other => Err(format!(
                "unknown permissions {other:?} (read-only, edit or full)"
            )),
        }
    }
}

/// Who answers a request beyond the permissions when no [`Approver`] is set. JSON:
/// `"none"`, `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Approve {
    /// Deny every request beyond the permissions (it shows in the answer's `denials`).
    #[default]
    None,
    /// Allow every request.
    All,
}

impl std::str::FromStr for Approve {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Approve::None),
            "all" => Ok(Approve::All),
            other => Err(format!("unknown approval policy {other:?} (none or all)")),
        }
    }
}

/// An agent asks to do something beyond its permissions (or its client asks the user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ApprovalRequest {
    /// The instance asking.
    pub instance: usize,
    /// The tool the agent wants to use, in the client's words (`Bash`, `Write`,
    /// `commandExecution`, `create file`).
    pub tool: String,
    /// What it wants to use it on: a command line or a path (may be empty).
    pub target: String,
    /// The agent's or client's reason, or its question, where it gives one.
    pub reason: Option<String>,
}

impl ApprovalRequest {
    /// A request by `instance` to use `tool` on `target`.
    pub fn new(instance: usize, tool: impl Into<String>, target: impl Into<String>) -> Self {
        ApprovalRequest {
            instance,
            tool: tool.into(),
            target: target.into(),
            reason: None,
        }
    }

    /// The same request with a reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// The answer to an [`ApprovalRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse, saying why (the agent is told; the answer lists a [`Denial`]).
    Deny(String),
}

impl Decision {
    /// Whether this allows.
    pub fn allows(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// A tool use refused during a turn, as [`Response::denials`](crate::Response::denials) lists
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Denial {
    /// The tool, in the client's words (`Write`, `Bash`, `commandExecution`, `edit`).
    pub tool: String,
    /// What it was to act on: a path or a command line (may be empty).
    pub target: String,
    /// Why it was refused.
    pub reason: String,
}

impl Denial {
    /// A denial of `tool` on `target` for `reason`.
    pub fn new(
        tool: impl Into<String>,
        target: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Denial {
            tool: tool.into(),
            target: target.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.tool, self.target, self.reason)
    }
}

/// Decides requests beyond the permissions. Runs on a thread of its own, holding no lock;
/// a decision later than the spec's approval timeout counts as a denial.
///
/// ```
/// use aim::{ApprovalRequest, Approver, Decision};
/// #[derive(Debug)]
/// struct OnlyGit;
/// impl Approver for OnlyGit {
///     fn decide(&self, request: &ApprovalRequest) -> Decision {
///         if request.target.starts_with("git ") {
///             Decision::Allow
///         } else {
///             Decision::Deny("only git commands".into())
///         }
///     }
/// }
/// assert!(OnlyGit.decide(&ApprovalRequest::new(0, "Bash", "git status")).allows());
/// ```
pub trait Approver: Send + Sync + fmt::Debug {
    /// The decision on `request`. May block (a person answering); the turn waits for it no
    /// longer than the approval timeout.
    fn decide(&self, request: &ApprovalRequest) -> Decision;
}

/// A closure as an [`Approver`].
pub struct ApproverFn<F>(pub F);

impl<F> fmt::Debug for ApproverFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApproverFn")
    }
}

impl<F: Fn(&ApprovalRequest) -> Decision + Send + Sync> Approver for ApproverFn<F> {
    fn decide(&self, request: &ApprovalRequest) -> Decision {
        (self.0)(request)
    }
}

/// An [`Approver`] in a [`ToolSpec`](crate::ToolSpec): compared by identity, never serialised.
#[derive(Clone)]
pub(crate) struct CustomApprover(pub Arc<dyn Approver>);

impl fmt::Debug for CustomApprover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for CustomApprover {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CustomApprover {}

/// How a conversation gets decisions: the policy, the approver, the timeout, and how to wake
/// the instance's I/O thread when a late decision arrives. Cheap to clone.
#[derive(Clone)]
pub struct Approvals {
    approve: Approve,
    approver: Option<Arc<dyn Approver>>,
    timeout: Duration,
    wake: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for Approvals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Approvals")
            .field("approve", &self.approve)
            .field("approver", &self.approver)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals::new(Approve::None, None, Duration::from_secs(30))
    }
}

impl Approvals {
    /// Decisions by `approver` when set (waited for at most `timeout`), else by `approve`.
    pub fn new(approve: Approve, approver: Option<Arc<dyn Approver>>, timeout: Duration) -> Self {
        Approvals {
            approve,
            approver,
            timeout,
            wake: None,
        }
    }

    /// Calls `wake` when a decision arrives from the approver's thread.
    pub(crate) fn waking(mut self, wake: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Asks for a decision on `request`: at once by the policy, or later from the approver
    /// (on a thread of its own; never blocks).
    pub fn ask(&self, request: ApprovalRequest, now: Instant) -> Pending {
        let Some(approver) = &self.approver else {
            return Pending::Now(match self.approve {
                Approve::All => Decision::Allow,
                Approve::None => Decision::Deny("denied by aim (--approve none)".into()),
            });
        };
        let (tx, rx) = bounded(1);
        let approver = Arc::clone(approver);
        let wake = self.wake.clone();
        let spawned = std::thread::Builder::new()
            .name("aim-approver".into())
            .spawn(move || {
                let decision = approver.decide(&request);
                let _ = tx.send(decision);
                if let Some(wake) = wake {
                    wake();
                }
            });
        match spawned {
            Ok(_) => Pending::Later {
                rx,
                deadline: crate::clock::after(now, self.timeout),
            },
            Err(e) => Pending::Now(Decision::Deny(format!("no thread for the approver: {e}"))),
        }
    }
}

/// A decision asked for with [`Approvals::ask`].
#[derive(Debug)]
pub enum Pending {
    /// Decided already.
    Now(Decision),
    /// The approver is deciding; unanswered at `deadline` means denied.
    Later {
        /// Where the decision arrives.
        rx: Receiver<Decision>,
        /// When an unanswered request counts as denied.
        deadline: Instant,
    },
}

impl Pending {
    /// The decision, once there is one (a denial after the deadline).
    pub fn poll(&self, now: Instant) -> Option<Decision> {
        match self {
            Pending::Now(decision) => Some(decision.clone()),
            Pending::Later { rx, deadline } => match rx.try_recv() {
                Ok(decision) => Some(decision),
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    Some(Decision::Deny("the approver gave no decision".into()))
                }
                Err(crossbeam_channel::TryRecvError::Empty) if now >= *deadline => {
                    Some(Decision::Deny("the approver did not decide in time".into()))
                }
                Err(crossbeam_channel::TryRecvError::Empty) => None,
            },
        }
    }

    /// When to look again, if the decision is not in yet.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Pending::Now(_) => None,
            Pending::Later { deadline, .. } => Some(*deadline),
        }
    }
}

/// Requests an approver is still deciding, each kept with what its protocol needs to answer
/// it (a request id, the tool input).
///
/// Shared by the protocols that can have several approval requests open at once (claude's
/// `can_use_tool`, codex's approval requests): the I/O thread asks [`deadline`](Self::deadline)
/// when to wake and takes the [`decided`](Self::decided) ones when it does.
#[derive(Debug)]
pub(crate) struct PendingApprovals<T> {
    waiting: Vec<(T, Pending)>,
}

impl<T> Default for PendingApprovals<T> {
    fn default() -> Self {
        PendingApprovals {
            waiting: Vec::new(),
        }
    }
}

impl<T> PendingApprovals<T> {
    /// `request`'s decision if the approver has one already; otherwise keeps it for
    /// [`decided`](Self::decided) and returns `None`.
    pub(crate) fn ask(
        &mut self,
        request: T,
        pending: Pending,
        now: Instant,
    ) -> Option<(T, Decision)> {
        match pending.poll(now) {
            Some(decision) => Some((request, decision)),
            None => {
                self.waiting.push((request, pending));
                None
            }
        }
    }

    /// The earliest deadline among the open requests (`None`: nothing to wake for).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.waiting.iter().filter_map(|(_, p)| p.deadline()).min()
    }

    /// Takes the requests decided by `now` (a denial for those past their deadline), in the
    /// order they were asked; the others stay open.
    pub(crate) fn decided(&mut self, now: Instant) -> Vec<(T, Decision)> {
        let mut decided = Vec::new();
        let mut still = Vec::new();
        for (request, pending) in std::mem::take(&mut self.waiting) {
            match pending.poll(now) {
                Some(decision) => decided.push((request, decision)),
                None => still.push((request, pending)),
            }
        }
        self.waiting = still;
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_approvals_decide_in_order_and_deny_at_the_deadline() {
        let now = Instant::now();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (_keep, never) = crossbeam_channel::bounded::<Decision>(1);
        let mut open = PendingApprovals::default();
        assert_eq!(
            open.ask("now", Pending::Now(Decision::Allow), now),
            Some(("now", Decision::Allow))
        );
        let soon = now + std::time::Duration::from_secs(1);
        let later = now + std::time::Duration::from_secs(5);
        assert_eq!(
            open.ask(
                "answered",
                Pending::Later {
                    rx,
                    deadline: later
                },
                now
            ),
            None
        );
        assert_eq!(
            open.ask(
                "silent",
                Pending::Later {
                    rx: never,
                    deadline: soon
                },
                now
            ),
            None
        );
        assert_eq!(open.deadline(), Some(soon));
        assert!(open.decided(now).is_empty());
        tx.send(Decision::Allow).unwrap();
        let decided = open.decided(soon);
        assert_eq!(decided.len(), 2);
        assert_eq!(decided[0], ("answered", Decision::Allow));
        assert_eq!(decided[1].0, "silent");
        assert!(matches!(decided[1].1, Decision::Deny(_)));
        assert_eq!(open.deadline(), None);
    }

    #[test]
    fn names_round_trip() {
        for p in [Permissions::ReadOnly, Permissions::Edit, Permissions::Full] {
            assert_eq!(p.as_str().parse::<Permissions>().unwrap(), p);
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!("write".parse::<Permissions>().is_err());
        assert_eq!("all".parse::<Approve>().unwrap(), Approve::All);
        assert!("some".parse::<Approve>().is_err());
    }

    #[test]
    fn the_policy_decides_at_once_without_an_approver() {
        let now = Instant::now();
        let request = ApprovalRequest::new(0, "Bash", "rm -rf x");
        let none = Approvals::default().ask(request.clone(), now);
        assert!(matches!(none.poll(now), Some(Decision::Deny(_))));
        let all = Approvals::new(Approve::All, None, Duration::from_secs(1)).ask(request, now);
        assert_eq!(all.poll(now), Some(Decision::Allow));
    }

    #[test]
    fn an_approver_that_never_answers_is_a_denial_at_the_deadline() {
        let (hold_tx, hold_rx) = bounded::<()>(0);
        let approver = ApproverFn(move |_: &ApprovalRequest| {
            let _ = hold_rx.recv();
            Decision::Allow
        });
        let approvals = Approvals::new(
            Approve::All,
            Some(Arc::new(approver)),
            Duration::from_secs(5),
        );
        let now = Instant::now();
        let pending = approvals.ask(ApprovalRequest::new(1, "Write", "a.txt"), now);
        assert_eq!(pending.poll(now), None);
        let later = now + Duration::from_secs(5);
        assert!(matches!(pending.poll(later), Some(Decision::Deny(m)) if m.contains("in time")));
        drop(hold_tx);
    }

    #[test]
    fn an_approver_decides_on_its_own_thread_and_wakes() {
        let (woke_tx, woke_rx) = bounded(1);
        let approver = ApproverFn(|r: &ApprovalRequest| {
            if r.target == "ok" {
                Decision::Allow
            } else {
                Decision::Deny("no".into())
            }
        });
        let approvals = Approvals::new(
            Approve::None,
            Some(Arc::new(approver)),
            Duration::from_secs(60),
        )
        .waking(Arc::new(move || {
            let _ = woke_tx.try_send(());
        }));
        let pending = approvals.ask(ApprovalRequest::new(0, "Bash", "ok"), Instant::now());
        woke_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("woken");
        assert_eq!(pending.poll(Instant::now()), Some(Decision::Allow));
    }
}
