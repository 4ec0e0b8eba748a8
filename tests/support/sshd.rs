//! Real OpenSSH hosts on loopback for tests: one `sshd` per host on its own 127.0.1.x
//! address, each in its own PID namespace (`unshare --pid --fork --mount-proc --kill-child`),
//! with host and user keys and an ssh config (one alias per host) generated per run.
//! Needs root and `/usr/sbin/sshd`; [`SshHosts::start`] says SKIPPED and returns `None`
//! otherwise. Part of tests/support (bench/remote.rs includes that too). The sessions' login
//! shell gets `SHLVL=1`, so bash does not read `~/.bashrc` as it does for sshd's commands
//! (this machine's runs `pyenv init`, whose rehash lock makes concurrent sessions wait).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::descendants;

/// Test hosts and the files that reach them.
pub struct SshHosts {
    pub dir: PathBuf,
    /// The ssh config file: aliases `h0`, `h1`, ...
    pub config: PathBuf,
    pub hosts: Vec<SshHost>,
}

/// One `sshd` in its own PID namespace.
pub struct SshHost {
    pub alias: String,
    pub addr: String,
    pub port: u16,
    sshd_config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether we run as root (from `/proc/self/status`: no unsafe call needed).
fn euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a setup command");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

impl SshHosts {
    /// Waits up to 5 s (the bound) until no process named `name` runs on any host;
    /// panics naming `name` otherwise.
    pub fn wait_until_none_left(&self, name: &str) {
        super::wait_until(
            Duration::from_secs(5),
            &format!("no {name} left on any host"),
            || self.hosts.iter().all(|h| h.processes(name).is_empty()),
        );
    }

    /// Starts `count` hosts (`None`, after printing SKIPPED, without root or sshd).
    pub fn start(count: usize) -> Option<SshHosts> {
        Self::start_with(count, "MaxStartups 100\nMaxSessions 100\n")
    }

    /// Starts `count` hosts with sshd's own `MaxStartups` (10:30:100: from 10 connections
    /// still authenticating, new ones are dropped at random) and `MaxSessions` (10 per
    /// connection).
    pub fn start_stock(count: usize) -> Option<SshHosts> {
        Self::start_with(count, "")
    }

    /// Starts `count` hosts, `extra` appended to each one's sshd config.
    fn start_with(count: usize, extra: &str) -> Option<SshHosts> {
        let root = euid_is_root();
        if !root || !Path::new("/usr/sbin/sshd").exists() || !on_path("ssh") {
            eprintln!("SKIPPED: needs root, /usr/sbin/sshd and ssh");
            return None;
        }
        static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run_id = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aim-sshd-{}-{run_id}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        for key in ["host_key", "user_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key)));
        }
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        let mut config = String::new();
        let mut hosts = Vec::new();
        for i in 0..count {
            // A distinct address per host and per test binary run.
            let octet = 2 + (std::process::id() as usize * 7 + run_id * 13 + i) % 250;
            let addr = format!("127.0.1.{octet}");
            let port = std::net::TcpListener::bind((addr.as_str(), 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let sshd_config = dir.join(format!("sshd_{i}.conf"));
            std::fs::write(
                &sshd_config,
                format!(
                    "ListenAddress {addr}\nPort {port}\nHostKey {d}/host_key\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n\
                     UsePAM no\nPidFile {d}/sshd_{i}.pid\nLogLevel ERROR\n\
                     SetEnv SHLVL=1\n{extra}",
                    d = dir.display()
                ),
            )
            .unwrap();
            let alias = format!("h{i}");
            config.push_str(&format!(
                "Host {alias}\n  HostName {addr}\n  Port {port}\n  User root\n  IdentityFile {d}/user_key\n  \
                 IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                d = dir.display()
            ));
            let mut host = SshHost {
                alias,
                addr,
                port,
                log: dir.join(format!("sshd_{i}.log")),
                sshd_config,
                child: None,
            };
            host.start();
            hosts.push(host);
        }
        let config_path = dir.join("ssh_config");
        std::fs::write(&config_path, config).unwrap();
        let hosts = SshHosts {
            dir,
            config: config_path,
            hosts,
        };
        for host in &hosts.hosts {
            host.wait_listening();
        }
        Some(hosts)
    }

    /// `ssh` processes on this machine that use these hosts' config file (control
    /// connections and instances' clients), from a walk over /proc.
    pub fn local_ssh_pids(&self) -> Vec<i32> {
        let config = self.config.display().to_string();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let mut words = c.split(|&b| b == 0);
                    words.next().is_some_and(|w| w.ends_with(b"ssh"))
                        && words.any(|w| w == config.as_bytes())
                })
            })
            .collect()
    }

    /// The aliases, in order.
    pub fn aliases(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.alias.clone()).collect()
    }
}

impl SshHost {
    /// Starts (or restarts) this host's `sshd`.
    pub fn start(&mut self) {
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .args(["/usr/sbin/sshd", "-D", "-f"])
            .arg(&self.sshd_config)
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
    }

    /// Waits until the listener accepts connections (up to 10 s).
    pub fn wait_listening(&self) {
        wait_for(Duration::from_secs(10), "sshd to listen", || {
            std::net::TcpStream::connect((self.addr.as_str(), self.port)).is_ok()
        });
    }

    /// Kills the host: its `sshd` and everything in its PID namespace.
    /// Returns once every one of them has died.
    pub fn kill(&mut self) {
        // Listed before the `unshare` is taken: the list is read through it.
        let pids = self.all_pids();
        if let Some(mut child) = self.child.take() {
            for &pid in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
            wait_for(
                Duration::from_secs(10),
                "the host's processes to die",
                || {
                    pids.iter().all(|pid| {
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                            s.rsplit(')')
                                .next()
                                .is_some_and(|r| r.trim_start().starts_with(['Z', 'X']))
                        })
                    })
                },
            );
        }
    }

    /// Established TCP connections from this machine to this host's `sshd` (the client
    /// ends, from `/proc/net/tcp`).
    pub fn connections(&self) -> usize {
        let ip: std::net::Ipv4Addr = self.addr.parse().unwrap();
        let remote = format!("{:08X}:{:04X}", u32::from_ne_bytes(ip.octets()), self.port);
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[2] == remote && f[3] == "01"
            })
            .count()
    }

    /// Every process in this host's namespace (host pids), the `unshare` excluded.
    pub fn all_pids(&self) -> Vec<i32> {
        match &self.child {
            Some(child) => descendants(child.id()),
            None => Vec::new(),
        }
    }

    /// Processes on this host running program `name` (their `/proc/PID/comm`: not a relay
    /// or a shell that merely names it).
    pub fn processes(&self, name: &str) -> Vec<i32> {
        self.all_pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() == name)
            })
            .collect()
    }

    /// Every process on this host that is not `sshd` (listener or session): the relays,
    /// the tools and whatever they started.
    pub fn tool_pids(&self) -> Vec<i32> {
        self.all_pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| !c.starts_with("sshd"))
            })
            .collect()
    }

    /// The `sshd` processes serving connections (everything in the namespace but its pid 1
    /// and what runs under the sessions).
    pub fn session_pids(&self) -> Vec<i32> {
        self.all_pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.starts_with("sshd") && !c.contains("-D")
                    })
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            // A stopped session would keep its processes alive through SIGKILL of others.
            for pid in host.all_pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGCONT,
                );
            }
            host.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
