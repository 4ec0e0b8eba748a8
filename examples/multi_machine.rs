//! Many machines: each instance runs on its own host through `ssh host-{index} <tool>`;
//! `{index}` in the spec's arguments expands per instance. Over ssh (or `kubectl exec -i`) the
//! tool's stdin and stdout are plain pipes, so everything else (framing, routing,
//! supervision) is unchanged. Killing the local `ssh` process kills the remote session.
//!
//! Run locally (a stand-in drops the host name and runs the tool here):
//! `cargo run --example multi_machine`
//! With real hosts named host-0, host-1, ... that have `aim-demo` on their PATH:
//! `AIM_SSH=ssh cargo run --example multi_machine`

use aim::{ClusterManager, Strategy, ToolRegistry};

fn main() -> Result<(), aim::Error> {
    aim::demo::serve_if_requested();
    env_logger::init();
    let demo = ToolRegistry::builtin().resolve("demo")?;
    let mut spec = demo.clone();
    spec.name = "remote-demo".into();
    match std::env::var("AIM_SSH") {
        Ok(ssh) => {
            spec.program = ssh;
            // -T: no terminal; the tool speaks over plain pipes.
            spec.args = vec!["-T".into(), "host-{index}".into(), "aim-demo".into()];
            spec.env.set.clear();
        }
        Err(_) => {
            // The stand-in: `sh -c 'shift; exec "$@"' ssh host-N <demo>` runs the demo locally.
            spec.program = "sh".into();
            spec.args = vec![
                "-c".into(),
                r#"shift; exec "$@""#.into(),
                "ssh".into(),
                "host-{index}".into(),
                demo.program.clone(),
            ];
        }
    }
    let cluster = ClusterManager::builder(spec)
        .count(3)
        .strategy(Strategy::RoundRobin)
        .launch()?;
    for i in 0..6 {
        let r = cluster.send(format!("hello from machine slot {i}"))?;
        println!(
            "host-{} answered: {}",
            r.instance,
            r.text.lines().next().unwrap_or("")
        );
    }
    cluster.shutdown();
    Ok(())
}
