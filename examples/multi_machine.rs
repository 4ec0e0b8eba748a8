//! Many machines: instances spread over hosts with OpenSSH (`ClusterBuilder::hosts`), an
//! `aim relay` on each far side, and a `host` on every answer.
//!
//! With real hosts (aliases in an ssh config file; the `aim` binary on each host, on its
//! `PATH` or at the path in `AIM_REMOTE`):
//! `AIM_HOSTS="h0 h1" AIM_SSH_CONFIG=~/.ssh/aim_config cargo run --example multi_machine`.
//! The tool is the demo agent, which is this example's own binary: on another machine it
//! must exist at the same path; `AIM_TOOL=python` runs `python3` there instead.
//! `tests/remote.rs` runs it this way against real `sshd`s on 127.0.1.x.
//!
//! Without `AIM_HOSTS` it runs here, through a stand-in for `ssh` that runs the remote
//! command on this machine: `cargo run --example multi_machine` (what CI runs).
//!
//! Other launchers: `ssh_program` is any command that takes OpenSSH's shape,
//! `PROGRAM [OPTIONS] -- DEST [COMMAND]`, and runs COMMAND on DEST with stdin and stdout
//! forwarded (and, with no COMMAND, is the host's control connection: it creates a file at
//! its `-o ControlPath=` once ready, then waits).
//! The stand-in below is one. A wrapper that runs `kubectl exec -i DEST -- sh -c COMMAND`
//! makes pods the hosts (`hosts(["agent-0", "agent-1"])`), with `aim relay` in the image
//! giving cancel, the read(0) check and cleanup as over ssh. Without a relay, any command
//! that forwards stdin and stdout still works as the spec's program (`kubectl` with
//! `exec -i agent-{index} -- aider ...`): framing, routing and supervision stay the same, but
//! cancel, the read(0) check and remote cleanup are then whatever that command gives.

use aim::{ClusterManager, ToolRegistry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    aim::demo::serve_if_requested();
    env_logger::init();
    let tool = std::env::var("AIM_TOOL").unwrap_or_else(|_| "demo".into());
    let mut spec = ToolRegistry::builtin().resolve(&tool)?;
    spec.name = format!("remote-{tool}");
    let mut builder = ClusterManager::builder(spec).count(4);
    let stand_in = std::env::temp_dir().join(format!("aim-ssh-{}", std::process::id()));
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
            // remote command with `sh -c`; the far side's aim is missing here, so the plain
            // `ssh -T` fallback runs (with a warning).
            std::fs::write(
                &stand_in,
                "#!/bin/sh\nwhile [ $# -gt 0 ]; do case \"$1\" in --) shift; break;; \
                 -o) case \"$2\" in ControlPath=*) cp=\"${2#ControlPath=}\";; esac; shift 2;; \
                 -F) shift 2;; *) shift;; esac; done\nshift\n\
                 [ $# -eq 0 ] && : > \"$cp\" && exec sleep 100000\nexec sh -c \"$*\"\n",
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
        let prompt = match tool.as_str() {
            "python" => format!("print('hello from slot {i}')"),
            _ => format!("hello from slot {i}"),
        };
        let r = cluster.send(prompt)?;
        println!(
            "{} (instance {}) answered: {}",
            r.host.as_deref().unwrap_or("here"),
            r.instance,
            r.text.lines().next().unwrap_or("")
        );
    }
    let report = cluster.shutdown();
    let _ = std::fs::remove_file(&stand_in);
    if !report.all_reaped() {
        return Err(format!("not every process was reaped: {report:?}").into());
    }
    Ok(())
}
