//! Starting instances gradually: at most K at a time, each with its own startup deadline,
//! serving once `min_ready` are ready, or all-or-nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use aim::{ClusterManager, Error, Event};
use support::*;

fn slow_demo(startup_ms: u64) -> aim::ToolSpec {
    demo(&["--startup-ms", &startup_ms.to_string()])
}

#[test]
fn start_at_once_starts_the_next_instance_only_when_one_is_ready() {
    init_logs();
    let _w = watchdog("start_at_once", Duration::from_secs(60));
    let events = Arc::new(Recorder::default());
    let cluster = ClusterManager::builder(slow_demo(100))
        .count(3)
        .start_at_once(1)
        .event_sink(events.clone())
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    assert!(cluster.health().all_healthy());
    // Spawned 0, Ready 0, Spawned 1, Ready 1, Spawned 2, Ready 2: never two starting.
    let order = || -> Vec<String> {
        events
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::Spawned { instance, .. } => Some(format!("spawned {instance}")),
                Event::Ready { instance, .. } => Some(format!("ready {instance}")),
                _ => None,
            })
            .collect()
    };
    // Events reach the sink through the monitor, after launch() has returned: wait for all
    // six rather than read a list the last "ready" may not have reached yet.
    wait_until(Duration::from_secs(20), "six start-up events", || {
        order().len() >= 6
    });
    let order = order();
    let mut starting = 0;
    for step in &order {
        if step.starts_with("spawned") {
            starting += 1;
        } else {
            starting -= 1;
        }
        assert!(starting <= 1, "two instances started at once: {order:?}");
    }
    assert_eq!(order.len(), 6, "{order:?}");
    stop_cluster(&cluster);
}

#[test]
fn min_ready_serves_before_the_rest_have_started() {
    init_logs();
    let _w = watchdog("min_ready", Duration::from_secs(60));
    let cluster = ClusterManager::builder(slow_demo(500))
        .count(3)
        .start_at_once(1)
        .min_ready(1)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    // The second instance starts only now and needs 500 ms of its own.
    assert_eq!(cluster.health().healthy, 1);
    let answer = cluster.send("early").unwrap();
    assert!(answer.text.starts_with("You said: early"));
    wait_until(Duration::from_secs(20), "all three ready", || {
        cluster.health().all_healthy()
    });
    stop_cluster(&cluster);
}

/// A spec whose instance 2 cannot start (its working directory is missing).
fn third_cannot_start(base: &std::path::Path) -> aim::ToolSpec {
    for i in 0..2 {
        std::fs::create_dir_all(base.join(format!("w{i}"))).unwrap();
    }
    demo(&[]).cwd(format!("{}/w{{index}}", base.display()))
}

#[test]
fn min_ready_launches_despite_an_instance_that_cannot_start() {
    init_logs();
    let _w = watchdog("min_ready with a failure", Duration::from_secs(60));
    let base = std::env::temp_dir().join(format!("aim-minready-{}", std::process::id()));
    let cluster = ClusterManager::builder(third_cannot_start(&base))
        .count(3)
        .min_ready(2)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.health().healthy, 2);
    for i in 0..4 {
        assert!(cluster.send(format!("p{i}")).is_ok());
    }
    stop_cluster(&cluster);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn without_min_ready_launch_is_all_or_nothing() {
    init_logs();
    let _w = watchdog("all or nothing", Duration::from_secs(60));
    let base = std::env::temp_dir().join(format!("aim-allornothing-{}", std::process::id()));
    let err = ClusterManager::builder(third_cannot_start(&base))
        .count(3)
        .supervision(fast_supervision())
        .launch()
        .unwrap_err();
    assert!(matches!(err, Error::Spawn { instance: 2, .. }), "{err:?}");
    let err = ClusterManager::builder(demo(&[]))
        .count(2)
        .min_ready(3)
        .launch()
        .unwrap_err();
    assert!(err.to_string().contains("min_ready"), "{err}");
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn create_cwd_gives_each_instance_a_directory_of_its_own() {
    init_logs();
    let base = std::env::temp_dir().join(format!("aim-createcwd-{}", std::process::id()));
    let spec = demo(&[])
        .cwd(format!("{}/work/{{index}}", base.display()))
        .create_cwd(true);
    let cluster = ClusterManager::builder(spec)
        .count(2)
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    for i in 0..2 {
        let cwd = cluster.send_to(i, "/cwd").unwrap().text;
        assert_eq!(
            cwd.trim(),
            base.join(format!("work/{i}")).display().to_string()
        );
    }
    stop_cluster(&cluster);
    let _ = std::fs::remove_dir_all(&base);
}
