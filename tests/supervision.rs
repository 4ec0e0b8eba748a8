//! Supervision with real processes: restarts, backoff, budget, breaker, hang recovery,
//! retries and re-dispatch, probes and recycling.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aim::{
    BackoffConfig, BreakerConfig, BudgetConfig, CircuitState, ClusterManager, Error, Event,
    ExitCause, InstanceState, Jitter, LivenessProbe, Request, Strategy,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::*;

fn sigkill(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// A cluster of demo agents with fast, deterministic supervision.
fn supervised(count: usize, strategy: Strategy) -> aim::ClusterBuilder {
    ClusterManager::builder(demo(&[]))
        .count(count)
        .strategy(strategy)
        .supervision(fast_supervision())
}

/// Waits until the demo agent on `instance` has started `/sleep {ms}` (it says so on stderr).
fn wait_until_answering(cluster: &ClusterManager, instance: usize, ms: u64) {
    let line = format!("sleeping {ms} ms");
    wait_until(
        Duration::from_secs(10),
        "the prompt to be in flight",
        || {
            cluster.status()[instance]
                .last_stderr
                .iter()
                .any(|l| l.contains(&line))
        },
    );
}

#[test]
fn a_killed_instance_is_back_and_serving_long_before_the_next_poll() {
    init_logs();
    let cluster = supervised(2, Strategy::RoundRobin).launch().unwrap();
    let before = cluster.send_to(0, "/pid").unwrap();
    sigkill(before.pid);
    // The monitor polls every 60 s here: back within 30 s proves the exit itself woke it
    // (waiting for the poll would make this wait time out and the test fail).
    wait_until(Duration::from_secs(30), "the replacement", || {
        let s = &cluster.status()[0];
        s.generation == before.generation + 1 && s.state == InstanceState::Ready
    });
    let after = cluster.send_to(0, "/pid").unwrap();
    assert_eq!(after.generation, before.generation + 1);
    assert_ne!(after.pid, before.pid);
    let status = &cluster.status()[0];
    assert_eq!(status.last_exit, Some(aim::ExitInfo::Signal(9)));
    stop_cluster(&cluster);
    assert_gone(&[before.pid, after.pid]);
}

#[test]
fn a_crash_loop_ends_in_failed_with_growing_delays() {
    init_logs();
    let recorder = Arc::new(Recorder::default());
    let mut supervision = fast_supervision();
    supervision.backoff = BackoffConfig::default()
        .base(Duration::from_millis(40))
        .factor(2.0)
        .max(Duration::from_secs(5))
        .jitter(Jitter::None)
        .reset_after(Duration::from_secs(60));
    supervision.budget = BudgetConfig::default()
        .max_restarts(3)
        .window(Duration::from_secs(60))
        .failed_cooldown(Duration::from_secs(600));
    let cluster = ClusterManager::builder(demo(&["--exit-after-ms", "30"]))
        .count(1)
        .supervision(supervision)
        .event_sink(recorder.clone())
        .launch()
        .unwrap();
    wait_until(Duration::from_secs(20), "the instance to fail", || {
        cluster.status()[0].state == InstanceState::Failed
    });
    let events = recorder.events();
    let delays: Vec<Duration> = events
        .iter()
        .filter_map(|e| match e {
            Event::RestartScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), 3, "{events:#?}");
    assert!(delays[0] >= Duration::from_millis(39), "{delays:?}");
    assert!(
        delays.windows(2).all(|w| w[1] > w[0]),
        "growing: {delays:?}"
    );
    assert!(delays[2] >= Duration::from_millis(150), "{delays:?}");
    assert_eq!(
        recorder.count(|e| matches!(e, Event::BudgetExhausted { .. })),
        1
    );
    let status = &cluster.status()[0];
    assert!(
        status.failure.as_deref().unwrap_or("").contains("budget"),
        "{status:?}"
    );
    // A failed instance takes no prompts; a sessionless prompt finds no healthy instance.
    let err = cluster
        .send(Request::new("hello").timeout(Duration::from_millis(300)))
        .unwrap_err();
    assert!(
        matches!(err, Error::NoHealthyInstance { .. } | Error::Timeout { .. }),
        "{err}"
    );
    assert!(matches!(
        cluster.send_to(0, "hi"),
        Err(Error::InstanceUnavailable { .. })
    ));
    // By hand, it comes back (budget refilled).
    let generation = status.generation;
    cluster.restart_instance(0).unwrap();
    assert!(cluster.status()[0].generation > generation);
    stop_cluster(&cluster);
}

#[test]
fn the_breaker_opens_rejects_half_opens_and_closes() {
    init_logs();
    let recorder = Arc::new(Recorder::default());
    let mut supervision = fast_supervision();
    supervision.breaker = BreakerConfig::default()
        .failure_threshold(2)
        .cooldown(Duration::from_millis(1500))
        .max_cooldown(Duration::from_secs(10));
    let cluster = ClusterManager::builder(demo(&[]))
        .count(1)
        .supervision(supervision)
        .submit_timeout(Duration::from_millis(200))
        .event_sink(recorder.clone())
        .launch()
        .unwrap();
    for _ in 0..2 {
        wait_until(Duration::from_secs(10), "a ready instance", || {
            cluster.status()[0].state == InstanceState::Ready
        });
        let err = cluster
            .send(Request::new("/hang").timeout(Duration::from_millis(200)))
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }
    wait_until(Duration::from_secs(5), "the breaker to open", || {
        recorder.count(|e| matches!(e, Event::BreakerOpened { .. })) == 1
    });
    let opened_at = Instant::now();
    // Open (for 1.5 s): prompts are not routed to it, and one that cannot wait that long
    // fails at once.
    assert_eq!(cluster.status()[0].circuit, CircuitState::Open);
    let err = cluster.send("rejected?").unwrap_err();
    assert!(matches!(err, Error::NoHealthyInstance { .. }), "{err}");
    // After the cooldown, one trial goes through and closes it.
    wait_until(Duration::from_secs(10), "half-open", || {
        recorder.count(|e| matches!(e, Event::BreakerHalfOpen { .. })) == 1
    });
    assert!(opened_at.elapsed() >= Duration::from_millis(1000));
    wait_until(Duration::from_secs(10), "a ready instance", || {
        cluster.status()[0].state == InstanceState::Ready
    });
    let r = cluster
        .send(Request::new("trial").timeout(Duration::from_secs(10)))
        .unwrap();
    assert!(r.text.contains("trial"));
    wait_until(Duration::from_secs(5), "the breaker to close", || {
        recorder.count(|e| matches!(e, Event::BreakerClosed { .. })) == 1
    });
    assert_eq!(cluster.status()[0].circuit, CircuitState::Closed);
    let order: Vec<&str> = recorder
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::BreakerOpened { .. } => Some("opened"),
            Event::BreakerHalfOpen { .. } => Some("half-open"),
            Event::BreakerClosed { .. } => Some("closed"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["opened", "half-open", "closed"]);
    stop_cluster(&cluster);
}

#[test]
fn a_hanging_child_that_ignores_sigterm_and_sigint_is_killed_and_replaced() {
    init_logs();
    let mut spec = demo(&["--ignore-sigterm"]);
    spec.stop_grace = Duration::from_millis(200);
    let cluster = ClusterManager::builder(spec)
        .count(1)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let before = cluster.send("/pid").unwrap();
    let err = cluster
        .send(Request::new("/hang").timeout(Duration::from_millis(200)))
        .unwrap_err();
    assert!(err.is_timeout());
    wait_until(Duration::from_secs(20), "the replacement", || {
        let s = &cluster.status()[0];
        s.generation == 2 && s.state == InstanceState::Ready
    });
    assert_gone(&[before.pid]);
    assert!(cluster.send("alive").unwrap().text.contains("alive"));
    stop_cluster(&cluster);
}

#[test]
fn idempotent_prompts_are_resent_once_when_their_instance_dies() {
    init_logs();
    let cluster = supervised(2, Strategy::LeastBusy).launch().unwrap();
    let ticket = cluster
        .submit(Request::new("/sleep 801").idempotent(true))
        .unwrap();
    let victim = ticket.instance().unwrap();
    let pid = cluster.status()[victim].pid;
    wait_until_answering(&cluster, victim, 801);
    sigkill(pid);
    let r = ticket.wait().unwrap();
    assert_eq!(r.text, "slept\n");
    assert!(r.instance != victim || r.generation > 1, "{r:?}");

    // Not idempotent: the caller hears about the death.
    let ticket = cluster.submit("/sleep 800").unwrap();
    let victim = ticket.instance().unwrap();
    wait_until_answering(&cluster, victim, 800);
    sigkill(cluster.status()[victim].pid);
    let err = ticket.wait().unwrap_err();
    assert!(matches!(err, Error::InstanceDied { .. }), "{err}");
    assert_eq!(err.prompt(), Some("/sleep 800"));
    stop_cluster(&cluster);
}

#[test]
fn prompts_queued_on_a_dying_instance_are_redispatched_not_lost() {
    init_logs();
    let cluster = supervised(2, Strategy::Sticky).launch().unwrap();
    let session = cluster.session("queue");
    let tickets: Vec<_> = (0..5)
        .map(|_| session.submit("/sleep 300").unwrap())
        .collect();
    let victim = tickets[0].instance().unwrap();
    assert!(tickets.iter().all(|t| t.instance() == Some(victim)));
    wait_until_answering(&cluster, victim, 300);
    sigkill(cluster.status()[victim].pid);
    let results: Vec<_> = tickets.into_iter().map(|t| t.wait()).collect();
    let died = results
        .iter()
        .filter(|r| matches!(r, Err(Error::InstanceDied { .. })))
        .count();
    let answered = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(died, 1, "only the prompt in flight dies: {results:?}");
    assert_eq!(answered, 4, "{results:?}");
    stop_cluster(&cluster);
}

#[test]
fn no_prompt_is_lost_across_a_hundred_random_kills_under_load() {
    init_logs();
    let cluster = supervised(4, Strategy::LeastBusy)
        .submit_timeout(Duration::from_secs(20))
        .launch()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let submitted = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let (cluster, stop) = (cluster.clone(), stop.clone());
            let (submitted, answered, failed) =
                (submitted.clone(), answered.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let prompt = format!("t{t} #{i}");
                    i += 1;
                    submitted.fetch_add(1, Ordering::Relaxed);
                    match cluster
                        .send(Request::new(prompt.clone()).timeout(Duration::from_secs(20)))
                    {
                        Ok(r) => {
                            assert!(r.text.contains(&prompt), "{prompt}: {:?}", r.text);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            assert_eq!(e.prompt(), Some(prompt.as_str()), "{e}");
                            // A kill may fail the prompt in flight on its instance; anything
                            // else (a prompt dropped unanswered shows up as Shutdown, a queued
                            // one as a timeout) means a prompt was lost.
                            assert!(
                                matches!(e, Error::InstanceDied { .. }),
                                "only the prompt in flight at a kill may fail: {e}"
                            );
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let mut rng = 0x1234_5678_u64;
    let mut kills = 0;
    while kills < 100 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = (rng % 4) as usize;
        let status = cluster.status()[victim].clone();
        if status.state != InstanceState::Ready || status.pid <= 0 {
            wait_until(Duration::from_secs(20), "the victim to be ready", || {
                cluster.status()[victim].state == InstanceState::Ready
            });
            continue;
        }
        sigkill(status.pid);
        kills += 1;
        // Pace the kills by the supervisor's own progress: the next kill comes once this one
        // has been noticed.
        wait_until(Duration::from_secs(20), "the kill to be noticed", || {
            cluster.status()[victim].generation > status.generation
        });
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    let (submitted, answered, failed) = (
        submitted.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert_eq!(submitted, answered + failed, "every prompt accounted for");
    assert!(
        failed <= kills,
        "{failed} failed for {kills} kills: one in flight per kill at most"
    );
    assert!(answered > failed, "answered {answered}, failed {failed}");
    // Every kill is followed by a restart (the last few may still be under way).
    wait_until(Duration::from_secs(20), "a restart for every kill", || {
        cluster
            .status()
            .iter()
            .map(|s| s.generation - 1)
            .sum::<u64>()
            >= 100
    });
    let pids: Vec<i32> = cluster.status().iter().map(|s| s.pid).collect();
    stop_cluster(&cluster);
    assert_gone(&pids);
}

#[test]
fn a_liveness_probe_replaces_an_instance_that_is_alive_but_stuck() {
    init_logs();
    let recorder = Arc::new(Recorder::default());
    let cluster = supervised(1, Strategy::RoundRobin)
        .liveness_probe(
            LivenessProbe::new("/echo ok", "ok")
                .interval(Duration::from_millis(100))
                .timeout(Duration::from_millis(300)),
        )
        .event_sink(recorder.clone())
        .launch()
        .unwrap();
    let before = cluster.send("/deaf").unwrap();
    assert!(before.text.contains("deaf"));
    wait_until(Duration::from_secs(20), "the probe to replace it", || {
        let s = &cluster.status()[0];
        s.generation >= 2 && s.state == InstanceState::Ready
    });
    assert!(
        recorder.count(|e| matches!(
            e,
            Event::Exited {
                cause: ExitCause::Timeout,
                ..
            }
        )) >= 1
    );
    assert!(cluster.send("hello").unwrap().text.contains("hello"));
    stop_cluster(&cluster);
    assert_gone(&[before.pid]);
}

#[test]
fn max_requests_retires_processes_after_draining() {
    init_logs();
    // The builder setter itself is under test: it must survive .supervision() before it.
    let cluster = supervised(1, Strategy::RoundRobin)
        .max_requests(3)
        .launch()
        .unwrap();
    let generations: Vec<u64> = (0..7)
        .map(|i| cluster.send(format!("p{i}")).unwrap().generation)
        .collect();
    assert_eq!(generations, [1, 1, 1, 2, 2, 2, 3]);
    stop_cluster(&cluster);
}

#[test]
fn max_lifetime_replaces_old_processes() {
    init_logs();
    let mut supervision = fast_supervision();
    supervision.health_interval = Duration::from_millis(100);
    supervision.max_lifetime = Some(Duration::from_millis(300));
    let cluster = ClusterManager::builder(demo(&[]))
        .count(1)
        .supervision(supervision)
        .launch()
        .unwrap();
    wait_until(Duration::from_secs(20), "a retired process", || {
        cluster.status()[0].generation >= 2
    });
    assert!(cluster
        .send("still here")
        .unwrap()
        .text
        .contains("still here"));
    stop_cluster(&cluster);
}

#[test]
fn restart_policy_never_leaves_a_crashed_instance_stopped() {
    init_logs();
    let cluster = ClusterManager::builder(demo(&[]).restart(aim::RestartPolicy::Never))
        .count(2)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let err = cluster.send_to(0, "/crash 1").unwrap_err();
    assert!(matches!(err, Error::InstanceDied { .. }));
    wait_until(Duration::from_secs(10), "instance 0 stopped", || {
        cluster.status()[0].state == InstanceState::Stopped
    });
    for _ in 0..4 {
        assert_eq!(cluster.send("x").unwrap().instance, 1);
    }
    stop_cluster(&cluster);
}

#[test]
fn builder_settings_do_not_depend_on_call_order() {
    init_logs();
    // max_requests before supervision(...) used to be silently dropped by it.
    let cluster = ClusterManager::builder(demo(&[]))
        .max_requests(2)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let first = cluster.send("one").unwrap();
    cluster.send("two").unwrap();
    wait_until(
        Duration::from_secs(10),
        "the retired process replaced",
        || {
            cluster.status()[0].generation == first.generation + 1
                && cluster.status()[0].state == InstanceState::Ready
        },
    );
    assert_eq!(
        cluster.send("three").unwrap().generation,
        first.generation + 1
    );
    stop_cluster(&cluster);
}
