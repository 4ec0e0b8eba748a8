//! Many machines: instances spread over hosts with OpenSSH (`ClusterBuilder::hosts`), an
//! `aim relay` on each far side, and a `host` on every answer.
//!
//! With real hosts (aliases in an ssh config file; the `aim` binary on each host, or its
//! path in `AIM_REMOTE`):
//! `AIM_HOSTS="h0 h1" AIM_SSH_CONFIG=~/.ssh/aim_config cargo run --example multi_machine`
//!
//! Without `AIM_HOSTS` it runs here, through a stand-in for `ssh` that runs the remote
//! command on this machine (the relay included): `cargo run --example multi_machine`.
//!
//! Another launcher needs no support at all when it forwards stdin and stdout: the spec's
//! program can be `kubectl` with `exec -i agent-{index} -- aider ...` as its arguments (each
//! instance its pod); framing, routing and supervision stay the same, but cancel, the
//! read(0) check and remote cleanup are then whatever `kubectl exec` gives.

use aim::{ClusterManager, ToolRegistry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    aim::demo::serve_if_requested();
    env_logger::init();
    let mut spec = ToolRegistry::builtin().resolve("demo")?;
    spec.name = "remote-demo".into();
    let mut builder = ClusterManager::builder(spec.clone()).count(4);
    match std::env::var("AIM_HOSTS") {
        Ok(hosts) => {
            builder = builder.hosts(hosts.split_whitespace());
            if let Ok(config) = std::env::var("AIM_SSH_CONFIG") {
                builder = builder.ssh_config(config);
            }
            if let Ok(aim) = std::env::var("AIM_REMOTE") {
                builder = builder.remote_aim(aim);
            }
        }
        Err(_) => {
            // Two pretend hosts. The stand-in skips ssh's options and host name and runs the
            // remote command with `sh -c`; the far side's aim is this example itself, which
            // has no `relay` command, so the plain `ssh -T` fallback runs (with a warning).
            let stand_in = std::env::temp_dir().join(format!("aim-ssh-{}", std::process::id()));
            std::fs::write(
                &stand_in,
                "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in --) shift; break;; \
                 -o|-F) shift 2;; *) shift;; esac; done\nshift\n\
                 [ $# -eq 0 ] && exec sleep 100000\nexec sh -c \"$*\"\n",
            )?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755))?;
            builder = builder
                .hosts(["pretend-0", "pretend-1"])
                .ssh_program(stand_in.display().to_string())
                .remote_aim("/nonexistent/aim");
        }
    }
    let cluster = builder.launch()?;
    for i in 0..6 {
        let r = cluster.send(format!("hello from slot {i}"))?;
        println!(
            "{} (instance {}) answered: {}",
            r.host.as_deref().unwrap_or("here"),
            r.instance,
            r.text.lines().next().unwrap_or("")
        );
    }
    cluster.shutdown();
    let _ =
        std::fs::remove_file(std::env::temp_dir().join(format!("aim-ssh-{}", std::process::id())));
    Ok(())
}
