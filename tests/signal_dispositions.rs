//! Tools start with default signal dispositions even when the supervisor inherited ignored
//! ones (a background job of a non-interactive shell starts with SIGINT and SIGQUIT ignored;
//! `nohup` ignores SIGHUP). Ignored dispositions survive `exec`, so without a reset a tool
//! could not be cancelled with SIGINT. This file is its own process: ignoring SIGINT here
//! touches no other test.

mod support;

use std::time::Duration;

use aim::{launch_cluster, Strategy};
use support::*;

#[test]
#[allow(unsafe_code)]
fn tools_get_default_signal_dispositions_when_the_supervisor_ignores_them() {
    init_logs();
    let _w = watchdog("signal dispositions", Duration::from_secs(60));
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGQUIT,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        // SAFETY: installing SIG_IGN runs no code of ours in a signal context.
        unsafe {
            nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn).unwrap();
        }
    }
    let cluster = launch_cluster("python", 1, Strategy::RoundRobin).unwrap();
    let answer = cluster
        .send(
            "import signal; print([signal.getsignal(s) for s in \
             (signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)], \
             signal.getsignal(signal.SIGINT) is signal.default_int_handler)",
        )
        .unwrap();
    assert_eq!(
        answer.text,
        "[<Handlers.SIG_DFL: 0>, <Handlers.SIG_DFL: 0>, <Handlers.SIG_DFL: 0>] True\n"
    );
    stop_cluster(&cluster);
}
