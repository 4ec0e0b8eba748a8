//! Sessions: exclusive sessions never share a process, shared ones are told when another
//! conversation moves in; conversations survive restarts where the tool allows.

mod support;

use std::time::Duration;

use aim::{ClusterManager, Error, Request, SessionMode, Strategy, TimeoutStage};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

fn sticky(count: usize, mode: SessionMode, supervision: aim::SupervisionConfig) -> ClusterManager {
    ClusterManager::builder(demo(&[]))
        .count(count)
        .strategy(Strategy::Sticky)
        .session_mode(mode)
        .supervision(supervision)
        .launch()
        .unwrap()
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
}

/// Restarts that take a while, so a session sees its instance down.
fn slow_restarts() -> aim::SupervisionConfig {
    let mut s = fast_supervision();
    s.backoff.base = Duration::from_millis(1500);
    s.backoff.max = Duration::from_millis(1500);
    s.backoff.reset_after = Duration::from_secs(3600);
    s
}

#[test]
fn exclusive_sessions_wait_for_their_own_instance_and_never_move_onto_another() {
    init_logs();
    let _w = watchdog("exclusive sessions", Duration::from_secs(120));
    let cluster = sticky(2, SessionMode::Exclusive, slow_restarts());
    let alice = cluster.session("alice");
    let bob = cluster.session("bob");
    let a0 = alice.send("alice one").unwrap();
    let b0 = bob.send("bob one").unwrap();
    assert_ne!(a0.instance, b0.instance);
    for round in 0..3 {
        sigkill(cluster.status()[a0.instance].pid);
        wait_until(Duration::from_secs(5), "alice's instance down", || {
            cluster.status()[a0.instance].state != aim::InstanceState::Ready
        });
        // Alice waits for her instance to come back rather than joining Bob's process.
        let a = alice.send(format!("alice after kill {round}")).unwrap();
        assert_eq!(a.instance, a0.instance);
        assert!(a.context_lost, "{a:?}");
        assert!(a
            .context_note
            .as_deref()
            .unwrap_or("")
            .contains("restarted"));
        let b = bob.send(format!("bob {round}")).unwrap();
        assert_eq!((b.instance, b.pid), (b0.instance, b0.pid));
        assert!(!b.context_lost && !b.context_mixed, "{b:?}");
    }
    stop_cluster(&cluster);
}

#[test]
fn a_session_beyond_the_instance_count_waits_until_one_ends() {
    init_logs();
    let _w = watchdog("session waits", Duration::from_secs(60));
    let cluster = sticky(1, SessionMode::Exclusive, fast_supervision());
    let alice = cluster.session("alice");
    alice.send("mine").unwrap();
    let carol = cluster.session("carol");
    let err = carol
        .send(Request::new("waiting").timeout(Duration::from_millis(300)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                stage: TimeoutStage::Backlog,
                ..
            }
        ),
        "{err:?}"
    );
    // Prompts without a session would join Alice's conversation too: they wait as well.
    assert!(cluster
        .send(Request::new("anonymous").timeout(Duration::from_millis(300)))
        .is_err());
    let waiting = carol.submit("after alice").unwrap();
    drop(alice);
    let answer = waiting.wait().unwrap();
    assert!(answer.text.starts_with("You said: after alice"));
    stop_cluster(&cluster);
}

#[test]
fn shared_sessions_are_told_when_another_conversation_moves_into_their_process() {
    init_logs();
    let _w = watchdog("shared sessions mixed", Duration::from_secs(60));
    let cluster = sticky(2, SessionMode::Shared, slow_restarts());
    let alice = cluster.session("alice");
    let bob = cluster.session("bob");
    let a0 = alice.send("alice one").unwrap();
    // Bob lands on the other instance (least-busy placement of new sessions).
    let b0 = bob.send("bob one").unwrap();
    assert_ne!(a0.instance, b0.instance);
    sigkill(cluster.status()[a0.instance].pid);
    wait_until(Duration::from_secs(5), "alice's instance down", || {
        cluster.status()[a0.instance].state != aim::InstanceState::Ready
    });
    // Alice moves into Bob's process...
    let a1 = alice.send("alice two").unwrap();
    assert_eq!(a1.instance, b0.instance);
    assert!(a1.context_lost && !a1.context_mixed, "{a1:?}");
    // ...and Bob is told his process now holds her conversation too, once.
    let b1 = bob.send("bob two").unwrap();
    assert!(b1.context_mixed && !b1.context_lost, "{b1:?}");
    let b2 = bob.send("bob three").unwrap();
    assert!(!b2.context_mixed, "{b2:?}");
    stop_cluster(&cluster);
}

#[test]
fn framed_tools_default_to_shared_sessions() {
    init_logs();
    let spec = demo(&[]).protocol(aim::protocol::ProtocolKind::Framed);
    let cluster = ClusterManager::builder(spec)
        .count(1)
        .strategy(Strategy::Sticky)
        .launch()
        .unwrap();
    // Framed tools share by default: two sessions on one instance.
    let a = cluster.session("a").send("x").unwrap();
    let b = cluster.session("b").send("y").unwrap();
    assert_eq!(a.instance, b.instance);
    stop_cluster(&cluster);
}

fn python_with_replay(replay: aim::Replay) -> ClusterManager {
    let spec = aim::ToolRegistry::builtin()
        .get("python")
        .unwrap()
        .replay(replay);
    ClusterManager::builder(spec)
        .strategy(Strategy::Sticky)
        .supervision(fast_supervision())
        .launch()
        .unwrap()
}

fn kill_and_wait_down(cluster: &ClusterManager, instance: usize) {
    sigkill(cluster.status()[instance].pid);
    wait_until(Duration::from_secs(5), "the instance down", || {
        cluster.status()[instance].state != aim::InstanceState::Ready
    });
}

#[test]
fn a_python_session_survives_a_kill_by_replaying_its_prompts() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let _w = watchdog("python replay", Duration::from_secs(60));
    let cluster = python_with_replay(aim::Replay::default());
    let session = cluster.session("calc");
    session.send("x = 41").unwrap();
    session.send("y = x + 1").unwrap();
    for round in 0..2 {
        kill_and_wait_down(&cluster, 0);
        let answer = session.send("print(y)").unwrap();
        assert_eq!(answer.text, "42\n", "round {round}");
        assert!(
            answer.context_restored && !answer.context_lost,
            "{answer:?}"
        );
        // Replayed output is not returned, and replays are not counted as answers.
        let again = session.send("print(x)").unwrap();
        assert_eq!(again.text, "41\n");
        assert!(!again.context_restored);
    }
    let metrics = cluster.metrics();
    assert_eq!(metrics.cluster.responses, 2 + 2 * 2);
    stop_cluster(&cluster);
}

#[test]
fn a_history_over_the_replay_limit_says_the_context_is_lost() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let _w = watchdog("python replay limit", Duration::from_secs(60));
    let cluster = python_with_replay(aim::Replay::default().max_prompts(1).max_bytes(1 << 20));
    let session = cluster.session("calc");
    session.send("x = 41").unwrap();
    session.send("y = 1").unwrap();
    kill_and_wait_down(&cluster, 0);
    let answer = session.send("print(1)").unwrap();
    assert!(
        answer.context_lost && !answer.context_restored,
        "{answer:?}"
    );
    assert!(
        answer
            .context_note
            .as_deref()
            .unwrap_or("")
            .contains("replay limits"),
        "{answer:?}"
    );
    stop_cluster(&cluster);
}
