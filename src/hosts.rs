//! Hosts as part of a cluster's configuration: where instances run when not on this machine,
//! and how `ssh` reaches them.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The hosts a cluster spreads its instances over (instance `i` on host `i % hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostsConfig {
    /// Destinations as `ssh` takes them (`user@host`, an alias from the ssh config file).
    pub hosts: Vec<String>,
    /// An ssh config file (`ssh -F FILE`); `None`: the user's own.
    pub ssh_config: Option<PathBuf>,
    /// The `aim` program on the far side. Defaults to `aim` (found on the remote `PATH`).
    pub remote_aim: String,
    /// The ssh client. Defaults to `ssh` (found on `PATH`).
    pub ssh_program: String,
}

impl HostsConfig {
    /// `hosts` with the user's ssh config and `aim` on the remote `PATH`.
    pub(crate) fn new(hosts: Vec<String>) -> Self {
        HostsConfig {
            hosts,
            ssh_config: None,
            remote_aim: "aim".into(),
            ssh_program: "ssh".into(),
        }
    }

    /// Checks the destinations and the remote program.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (field `hosts` or `remote_aim`) naming the problem.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.hosts.is_empty() {
            return Err(Error::config("hosts", "must name at least one host"));
        }
        for host in &self.hosts {
            if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) {
                return Err(Error::config(
                    "hosts",
                    format!("{host:?} is not an ssh destination"),
                ));
            }
        }
        for (i, host) in self.hosts.iter().enumerate() {
            if self.hosts[..i].contains(host) {
                return Err(Error::config(
                    "hosts",
                    format!("{host:?} is named twice (each host is one set of series in metrics and health)"),
                ));
            }
        }
        if self.remote_aim.trim().is_empty() {
            return Err(Error::config("remote_aim", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_destinations_are_named() {
        assert!(HostsConfig::new(vec!["a".into(), "root@b".into()])
            .validate()
            .is_ok());
        for bad in [
            vec![],
            vec!["".into()],
            vec!["-oProxyCommand=x".into()],
            vec!["a b".into()],
            vec!["a".into(), "b".into(), "a".into()],
        ] {
            let err = HostsConfig::new(bad).validate().unwrap_err().to_string();
            assert!(err.contains("hosts"), "{err}");
        }
    }
}
