//! The relay (`aim relay`) and the ssh launcher, over a stand-in `ssh` that runs the remote
//! command on this machine: frames, answers, host fields, `await_read` and cancel through
//! the relay, and the fallback to plain `ssh -T` where the far side has no `aim`.
//! (tests/remote.rs does the same over real `sshd` hosts.)

mod support;

use std::time::Duration;

use aim::{ClusterManager, Error, Framing};
use support::*;

/// A stand-in for `ssh`: skips OpenSSH's options, then runs the remote command with `sh -c`
/// (a control connection, which has no command, just waits).
fn fake_ssh() -> String {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(write_fake_ssh).clone()
}

fn write_fake_ssh() -> String {
    let dir = std::env::temp_dir().join(format!("aim-fake-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ssh");
    {
        let tmp = dir.join("ssh.tmp");
        std::fs::write(
            &tmp,
            "#!/bin/sh\n\
             while [ $# -gt 0 ]; do case \"$1\" in --) shift; break;; \
             -o) case \"$2\" in ControlPath=*) cp=\"${2#ControlPath=}\";; esac; shift 2;; \
             -F) shift 2;; *) shift;; esac; done\n\
             shift\n\
             [ $# -eq 0 ] && : > \"$cp\" && exec sleep 100000\n\
             exec sh -c \"$*\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    path.display().to_string()
}

fn aim_bin() -> &'static str {
    env!("CARGO_BIN_EXE_aim")
}

fn remote(spec: aim::ToolSpec, count: usize, remote_aim: &str) -> ClusterManager {
    ClusterManager::builder(spec)
        .count(count)
        .hosts(["alpha", "beta"])
        .ssh_program(fake_ssh())
        .remote_aim(remote_aim)
        .supervision(fast_supervision())
        .launch()
        .unwrap()
}

#[test]
fn answers_come_through_the_relay_with_their_host() {
    init_logs();
    let cluster = remote(demo(&[]), 2, aim_bin());
    let mut hosts = Vec::new();
    for i in 0..4 {
        let answer = cluster.send_to(i % 2, format!("/echo hi {i}")).unwrap();
        assert_eq!(answer.text.trim(), format!("hi {i}"));
        hosts.push(answer.host.clone().unwrap());
    }
    assert_eq!(hosts, ["alpha", "beta", "alpha", "beta"]);
    stop_cluster(&cluster);
}

#[test]
fn await_read_is_answered_by_the_far_side() {
    init_logs();
    let spec = demo(&[]).framing(Framing::Prompt {
        marker: "> ".into(),
        stream: aim::Stream::Stdout,
        settle: Duration::ZERO,
        await_read: true,
    });
    let cluster = remote(spec, 1, aim_bin());
    // The answer holds a line starting "> " mid-answer: only the read(0) check, made on the
    // far side, tells the real prompt from it.
    let answer = cluster.send("/quote").unwrap();
    assert!(answer.text.contains("> "), "{answer:?}");
    // A pause after a prompt-looking line: the far side says the tool is not reading yet.
    let answer = cluster.send("/stall 300").unwrap();
    assert!(answer.text.lines().count() > 1, "{answer:?}");
    stop_cluster(&cluster);
}

#[test]
fn cancel_interrupts_the_remote_tool_and_keeps_it() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let _w = watchdog("remote python cancel", Duration::from_secs(60));
    let spec = aim::ToolRegistry::builtin().get("python").unwrap();
    let cluster = remote(spec, 1, aim_bin());
    let before = cluster.send("x = 7").unwrap();
    let ticket = cluster.submit("import time; time.sleep(30)").unwrap();
    wait_until(Duration::from_secs(5), "the sleep in flight", || {
        cluster.metrics().cluster.in_flight == 1
    });
    ticket.cancel();
    let result = ticket.wait();
    assert!(matches!(result, Err(Error::Cancelled { .. })), "{result:?}");
    // SIGINT travelled through the relay and stopped the sleep, not the REPL.
    let after = cluster.send("print(x)").unwrap();
    assert_eq!(after.text, "7\n");
    assert_eq!(after.pid, before.pid);
    assert_eq!(cluster.metrics().cluster.restarts, 0);
    stop_cluster(&cluster);
}

#[test]
fn without_a_relay_the_tool_runs_under_plain_ssh() {
    init_logs();
    let cluster = remote(demo(&[]), 2, "/nonexistent/aim");
    let answer = cluster.send_to(1, "/echo plain").unwrap();
    assert_eq!(answer.text.trim(), "plain");
    assert_eq!(answer.host.as_deref(), Some("beta"));
    stop_cluster(&cluster);
}

#[test]
fn env_clear_and_remove_reach_the_far_side() {
    init_logs();
    let _w = watchdog("remote env", Duration::from_secs(60));
    // The stand-in runs the far side with this test's environment, which has HOME and PATH.
    for remote_aim in [aim_bin(), "/nonexistent/aim"] {
        let removed = demo(&[]).env_remove("HOME").env("AIM_SET", "yes");
        let cluster = remote(removed, 1, remote_aim);
        assert_eq!(
            cluster.send("/env HOME").unwrap().text,
            "\n",
            "{remote_aim}"
        );
        assert_eq!(cluster.send("/env AIM_SET").unwrap().text, "yes\n");
        assert_ne!(cluster.send("/env PATH").unwrap().text, "\n");
        stop_cluster(&cluster);

        let cleared = demo(&[]).env_clear().env("AIM_SET", "yes");
        let cluster = remote(cleared, 1, remote_aim);
        assert_eq!(
            cluster.send("/env PATH").unwrap().text,
            "\n",
            "{remote_aim}"
        );
        assert_eq!(cluster.send("/env HOME").unwrap().text, "\n");
        assert_eq!(cluster.send("/env AIM_SET").unwrap().text, "yes\n");
        stop_cluster(&cluster);
    }
}

#[test]
fn a_pty_transport_gets_a_terminal_on_the_far_side() {
    init_logs();
    if !have("python3") {
        eprintln!("SKIPPED: python3 not installed");
        return;
    }
    let _w = watchdog("remote pty", Duration::from_secs(60));
    let tty = aim::ToolSpec::new("tty", "python3")
        .args([
            "-c",
            "import os, sys\nfor line in sys.stdin:\n    \
             print(os.isatty(0), os.isatty(1), os.get_terminal_size(0).columns, line.strip(), flush=True)",
        ])
        .framing(Framing::Line)
        .transport(aim::Transport::Pty)
        .pty_size(aim::PtySize::new(30, 132))
        .stop_grace(Duration::from_millis(500));
    let cluster = remote(tty.clone(), 1, aim_bin());
    let answer = cluster.send("hello").unwrap();
    assert_eq!(answer.text.trim_end(), "True True 132 hello");
    assert_eq!(answer.host.as_deref(), Some("alpha"));
    stop_cluster(&cluster);

    // Plain `ssh -T` has no terminal to give: the instance does not start, and says why.
    let cluster = ClusterManager::builder(tty)
        .hosts(["alpha"])
        .ssh_program(fake_ssh())
        .remote_aim("/nonexistent/aim")
        .supervision(fast_supervision())
        .launch()
        .unwrap();
    let err = cluster.send("hello").unwrap_err();
    let said = format!("{err:?}");
    assert!(
        said.contains("a PTY on this host needs aim there"),
        "{said}"
    );
    cluster.shutdown();
}
