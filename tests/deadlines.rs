//! Every wait has a deadline: prompts fail fast when nothing can answer them, never wait
//! behind a hung prompt while another instance is idle, and time out where they wait.

mod support;

use std::time::{Duration, Instant};

use aim::{
    BudgetConfig, ClusterManager, Error, InstanceState, Request, RestartPolicy, Strategy,
    TimeoutStage,
};
use support::*;

fn demo_cluster(count: usize, strategy: Strategy) -> aim::ClusterBuilder {
    ClusterManager::builder(demo(&[]))
        .count(count)
        .strategy(strategy)
        .supervision(fast_supervision())
}

/// Sends `/exit` (a clean exit) to every instance, so that under `on_failure` each stops
/// for good.
/// Waits until every instance of a cluster of demo agents started with
/// `--exit-after-ms N --exit-code 0` has exited cleanly, between answers, and stayed down.
fn stop_every_instance(cluster: &ClusterManager) {
    wait_until(Duration::from_secs(10), "every instance stopped", || {
        cluster
            .status()
            .iter()
            .all(|s| s.state == InstanceState::Stopped)
    });
}

#[test]
fn a_cluster_whose_instances_stopped_for_good_fails_every_prompt_at_once() {
    init_logs();
    let _w = watchdog("all-stopped drain", Duration::from_secs(120));
    // A clean exit 0 with no prompt in flight (an exit while answering would be a failure).
    let spec =
        demo(&["--exit-after-ms", "300", "--exit-code", "0"]).restart(RestartPolicy::OnFailure);
    let cluster = ClusterManager::builder(spec)
        .count(2)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    stop_every_instance(&cluster);
    let began = Instant::now();
    let tickets: Vec<_> = (0..200)
        .map(|i| cluster.submit(format!("prompt {i}")))
        .collect();
    for ticket in tickets {
        let err = match ticket {
            Ok(t) => t.wait().unwrap_err(),
            Err(e) => e,
        };
        match &err {
            Error::NoHealthyInstance { instances, .. } => {
                assert_eq!(instances.len(), 2);
                assert!(instances.iter().all(|o| o.state == InstanceState::Stopped));
                assert!(instances.iter().all(|o| o.returns_in.is_none()));
            }
            other => panic!("expected NoHealthyInstance, got {other:?}"),
        }
        assert!(err.to_string().contains("stopped"), "{err}");
        assert!(err.prompt().is_some_and(|p| p.starts_with("prompt ")));
    }
    // Before: each prompt waited its whole 30 s submit timeout.
    let took = began.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    stop_cluster(&cluster);
}

#[test]
fn a_cluster_whose_budget_is_exhausted_fails_prompts_at_once_saying_when_it_returns() {
    init_logs();
    let _w = watchdog("failed-cluster drain", Duration::from_secs(120));
    let supervision = fast_supervision().budget(
        BudgetConfig::default()
            .max_restarts(0)
            .window(Duration::from_secs(60))
            .failed_cooldown(Duration::from_secs(600)),
    );
    let cluster = demo_cluster(2, Strategy::RoundRobin)
        .supervision(supervision)
        .launch()
        .unwrap();
    // Waiting prompts are flushed when the last instance fails, not at their deadline.
    let waiting = cluster
        .submit(Request::new("queued").timeout(Duration::from_secs(60)))
        .ok();
    for i in 0..2 {
        let _ = cluster.send_to(i, "/crash");
    }
    wait_until(Duration::from_secs(10), "both instances failed", || {
        cluster
            .status()
            .iter()
            .all(|s| s.state == InstanceState::Failed)
    });
    if let Some(ticket) = waiting {
        // It may have been answered before the crashes; it must not wait 60 s.
        let began = Instant::now();
        let _ = ticket.wait();
        assert!(began.elapsed() < Duration::from_secs(30));
    }
    let began = Instant::now();
    let err = cluster.send("hello").unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(10));
    let Error::NoHealthyInstance { instances, .. } = &err else {
        panic!("expected NoHealthyInstance, got {err:?}");
    };
    for outlook in instances {
        assert_eq!(outlook.state, InstanceState::Failed);
        let back = outlook
            .returns_in
            .expect("a failed instance says when it returns");
        assert!(back > Duration::from_secs(60), "{back:?}");
    }
    assert!(err.to_string().contains("failed"), "{err}");
    assert!(!err.is_retryable() || err.prompt() == Some("hello"));
    stop_cluster(&cluster);
}

/// `/hang` on one instance must not hold up quick prompts while the other is idle.
fn quick_prompts_answer_beside_a_hung_one(strategy: Strategy) {
    init_logs();
    let _w = watchdog("hung-prompt case", Duration::from_secs(120));
    let cluster = demo_cluster(2, strategy)
        .request_timeout(Duration::from_secs(60))
        .launch()
        .unwrap();
    let hung = cluster.submit("/hang").unwrap();
    let tickets: Vec<_> = (0..20)
        .map(|i| {
            cluster
                .submit(Request::new(format!("q{i}")).timeout(Duration::from_secs(10)))
                .unwrap()
        })
        .collect();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let answer = ticket
            .wait()
            .unwrap_or_else(|e| panic!("{strategy}: q{i} failed: {e}"));
        assert!(answer.text.starts_with(&format!("You said: q{i}\n")));
    }
    // The hung prompt is still waiting for its own deadline.
    assert!(hung.try_wait().is_none());
    stop_cluster(&cluster);
}

#[test]
fn round_robin_answers_quick_prompts_beside_a_hung_one() {
    init_logs();
    quick_prompts_answer_beside_a_hung_one(Strategy::RoundRobin);
}

#[test]
fn least_busy_answers_quick_prompts_beside_a_hung_one() {
    init_logs();
    quick_prompts_answer_beside_a_hung_one(Strategy::LeastBusy);
}

#[test]
fn sessionless_prompts_on_a_sticky_cluster_avoid_a_hung_instance() {
    init_logs();
    quick_prompts_answer_beside_a_hung_one(Strategy::Sticky);
}

#[test]
fn a_deadline_fires_while_the_instance_is_busy_with_another_prompt() {
    init_logs();
    let _w = watchdog("deadline behind a busy instance", Duration::from_secs(60));
    let cluster = demo_cluster(1, Strategy::RoundRobin).launch().unwrap();
    let slow = cluster.submit("/sleep 3000").unwrap();
    // Let the slow prompt be written first, so the next one queues behind it.
    wait_until(Duration::from_secs(5), "the slow prompt in flight", || {
        cluster.metrics().cluster.in_flight == 1
    });
    let began = Instant::now();
    let err = cluster
        .send_to_timeout(0, "quick", Duration::from_millis(500))
        .unwrap_err();
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(500), "{took:?}");
    // Before: it fired only when the slow answer ended, after about 3 s.
    assert!(took < Duration::from_millis(2000), "{took:?}");
    match &err {
        Error::Timeout { stage, .. } => assert_eq!(*stage, TimeoutStage::Queued),
        other => panic!("expected a queued timeout, got {other:?}"),
    }
    assert!(err.is_retryable(), "the prompt never reached the tool");
    assert_eq!(err.prompt(), Some("quick"));
    assert_eq!(slow.wait().unwrap().text, "slept\n");
    stop_cluster(&cluster);
}

#[test]
fn wait_timeout_on_a_running_prompt_is_not_an_error_and_keeps_the_ticket() {
    init_logs();
    let _w = watchdog("wait_timeout", Duration::from_secs(60));
    let cluster = demo_cluster(1, Strategy::RoundRobin).launch().unwrap();
    let ticket = cluster.submit("/sleep 300").unwrap();
    assert!(ticket.wait_timeout(Duration::from_millis(20)).is_none());
    assert!(ticket
        .wait_deadline(Instant::now() + Duration::from_millis(20))
        .is_none());
    let answer = ticket.wait().unwrap();
    assert_eq!(answer.text, "slept\n");
    stop_cluster(&cluster);
}

#[test]
fn an_answer_that_times_out_is_not_retryable_and_says_it_was_answering() {
    init_logs();
    let _w = watchdog("answering timeout", Duration::from_secs(60));
    let cluster = demo_cluster(1, Strategy::RoundRobin).launch().unwrap();
    let err = cluster
        .send(Request::new("/hang").timeout(Duration::from_millis(200)))
        .unwrap_err();
    match &err {
        Error::Timeout { stage, .. } => assert_eq!(*stage, TimeoutStage::Answering),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(err.is_timeout());
    assert!(!err.is_retryable(), "the tool may have acted on it");
    assert_eq!(err.prompt(), Some("/hang"));
    stop_cluster(&cluster);
}

#[test]
fn an_oversized_answer_hands_the_prompt_back_and_is_not_retryable() {
    init_logs();
    let spec = demo(&[]).max_response_bytes(1000);
    let cluster = ClusterManager::builder(spec)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let err = cluster.send("/flood 100000").unwrap_err();
    assert!(matches!(err, Error::ResponseTooLarge { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(err.prompt(), Some("/flood 100000"));
    stop_cluster(&cluster);
}

#[test]
fn invalid_prompts_count_as_rejected() {
    init_logs();
    let cluster = demo_cluster(1, Strategy::RoundRobin).launch().unwrap();
    assert!(cluster.send("").is_err());
    assert!(cluster.send("nul\0byte").is_err());
    let metrics = cluster.metrics();
    assert_eq!(metrics.cluster.failures["rejected"], 2);
    stop_cluster(&cluster);
}

#[test]
fn the_in_flight_gauge_is_zero_once_send_returns() {
    init_logs();
    let cluster = demo_cluster(1, Strategy::RoundRobin).launch().unwrap();
    let mut nonzero = 0;
    for i in 0..200 {
        cluster.send(format!("p{i}")).unwrap();
        if cluster.metrics().cluster.in_flight != 0 {
            nonzero += 1;
        }
    }
    assert_eq!(nonzero, 0, "in_flight read non-zero after send returned");
    stop_cluster(&cluster);
}

#[test]
fn a_failed_resize_keeps_only_the_instances_that_started_and_names_the_missing_directory() {
    init_logs();
    let _w = watchdog("failed resize", Duration::from_secs(60));
    let base = std::env::temp_dir().join(format!("aim-resize-{}", std::process::id()));
    for i in 0..2 {
        std::fs::create_dir_all(base.join(format!("w{i}"))).unwrap();
    }
    let spec = demo(&[]).cwd(format!("{}/w{{index}}", base.display()));
    let cluster = ClusterManager::builder(spec)
        .count(2)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let err = cluster.resize(4).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("working directory"), "{text}");
    assert!(text.contains("w2") || text.contains("w3"), "{text}");
    assert_eq!(cluster.len(), 2, "instances that failed to start were kept");
    assert!(cluster.health().all_healthy());
    stop_cluster(&cluster);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn spawn_errors_name_the_real_cause() {
    init_logs();
    let missing = ClusterManager::builder(aim::ToolSpec::new("nope", "/no/such/program"))
        .launch()
        .unwrap_err();
    assert!(missing.to_string().contains("not found"), "{missing}");
    let dir = std::env::temp_dir();
    let not_exec = ClusterManager::builder(aim::ToolSpec::new("dir", dir.display().to_string()))
        .launch()
        .unwrap_err();
    assert!(
        not_exec.to_string().contains("not executable"),
        "{not_exec}"
    );
}

#[test]
fn a_turn_that_goes_quiet_past_the_stall_timeout_ends_as_stalled_before_its_deadline() {
    init_logs();
    let spec = demo(&[]).stall_timeout(Duration::from_millis(300));
    let cluster = ClusterManager::builder(spec)
        .count(1)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    // Slow but never quiet for long: /sleep answers after 100 ms.
    assert!(cluster.send("/sleep 100").is_ok());
    let began = Instant::now();
    let err = cluster
        .send(Request::new("/hang").timeout(Duration::from_secs(60)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                stage: TimeoutStage::Stalled,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(began.elapsed() >= Duration::from_millis(300));
    assert!(began.elapsed() < Duration::from_secs(60));
    // The instance was recycled and answers again.
    wait_until(
        Duration::from_secs(30),
        "the instance answers again",
        || cluster.send("again").is_ok(),
    );
    stop_cluster(&cluster);
}
