//! Hand-written argument parsing (the dependency list is fixed): flags, values, durations.

use std::time::Duration;

use aim::{Strategy, ToolRegistry};

/// Options every command that launches a cluster understands.
#[derive(Debug, Clone)]
pub struct ClusterArgs {
    /// The tool id; `None` means the built-in demo agent.
    pub tool: Option<String>,
    pub count: usize,
    pub strategy: Strategy,
    /// Whether `--strategy` was given.
    pub strategy_set: bool,
    pub tools_file: Option<String>,
    pub metrics_addr: Option<String>,
    /// Instances started at once (0: all).
    pub start_at_once: usize,
    /// Instances ready before prompts flow (`None`: all).
    pub min_ready: Option<usize>,
    /// Raise the soft open-file limit when the instances need it.
    pub raise_fd_limit: bool,
    /// `--host`: run the instances on these hosts over ssh.
    pub hosts: Vec<String>,
    /// `--ssh-config FILE`.
    pub ssh_config: Option<String>,
    /// `--remote-aim PATH`.
    pub remote_aim: Option<String>,
    /// What agents may do, and how their requests are decided (`aim run` flags).
    pub agent: AgentArgs,
    /// `--workspace`: overrides the tool's workspace kind.
    pub workspace: Option<aim::WorkspaceKind>,
    /// `--workspace-root`: overrides the tool's workspace root.
    pub workspace_root: Option<String>,
    /// `--max-rss`: the memory limit per instance, in bytes.
    pub max_rss: Option<u64>,
}

/// `aim run`'s agent flags, applied to the tool's spec when given.
#[derive(Debug, Clone, Default)]
pub struct AgentArgs {
    pub permissions: Option<aim::Permissions>,
    pub approve: Option<aim::Approve>,
    pub strict_denials: bool,
    pub stall_timeout: Option<Duration>,
}

impl AgentArgs {
    fn apply(&self, mut spec: aim::ToolSpec) -> aim::ToolSpec {
        if let Some(p) = self.permissions {
            spec = spec.permissions(p);
        }
        if let Some(a) = self.approve {
            spec = spec.approve(a);
        }
        if self.strict_denials {
            spec = spec.strict_denials(true);
        }
        if let Some(t) = self.stall_timeout {
            spec = spec.stall_timeout(t);
        }
        spec
    }
}

impl ClusterArgs {
    pub fn new(count: usize, strategy: Strategy) -> Self {
        ClusterArgs {
            tool: None,
            count,
            strategy,
            strategy_set: false,
            tools_file: None,
            metrics_addr: None,
            start_at_once: 0,
            min_ready: None,
            raise_fd_limit: false,
            hosts: Vec::new(),
            ssh_config: None,
            remote_aim: None,
            agent: AgentArgs::default(),
            workspace: None,
            workspace_root: None,
            max_rss: None,
        }
    }

    /// A cluster builder with these settings (tool, count, strategy, startup).
    pub fn builder(&self) -> Result<aim::ClusterBuilder, String> {
        let mut builder = aim::ClusterManager::builder(self.spec()?)
            .count(self.count)
            .strategy(self.strategy)
            .start_at_once(self.start_at_once)
            .raise_fd_limit(self.raise_fd_limit);
        if let Some(n) = self.min_ready {
            builder = builder.min_ready(n);
        }
        if !self.hosts.is_empty() {
            builder = builder.hosts(self.hosts.clone());
        }
        if let Some(file) = &self.ssh_config {
            builder = builder.ssh_config(file);
        }
        if let Some(program) = &self.remote_aim {
            builder = builder.remote_aim(program);
        }
        Ok(builder)
    }

    /// The registry: built-ins plus `--tools FILE`, or plus `AIM_TOOLS`.
    pub fn registry(&self) -> Result<ToolRegistry, String> {
        match &self.tools_file {
            Some(path) => ToolRegistry::from_path(path),
            None => ToolRegistry::from_env(),
        }
        .map_err(|e| e.to_string())
    }

    /// The tool's spec, with `--workspace` and `--workspace-root` applied.
    pub fn spec(&self) -> Result<aim::ToolSpec, String> {
        let mut spec = self
            .registry()?
            .resolve(self.tool.as_deref().unwrap_or("demo"))
            .map(|spec| self.agent.apply(spec))
            .map_err(|e| e.to_string())?;
        if let Some(kind) = self.workspace {
            spec.workspace.kind = kind;
        }
        if let Some(root) = &self.workspace_root {
            if !spec.workspace.is_enabled() {
                return Err(
                    "--workspace-root needs a workspace: add --workspace worktree or dir".into(),
                );
            }
            spec.workspace.root = Some(root.clone());
        }
        if let Some(bytes) = self.max_rss {
            spec = spec.max_rss_bytes(bytes);
        }
        Ok(spec)
    }
}

/// Walks the arguments, handing each flag to `on_flag`; the first positional is the tool.
pub struct Parser<'a> {
    args: std::slice::Iter<'a, String>,
    usage: &'a str,
}

impl<'a> Parser<'a> {
    pub fn new(args: &'a [String], usage: &'a str) -> Self {
        Parser {
            args: args.iter(),
            usage,
        }
    }

    pub fn next(&mut self) -> Option<&'a str> {
        self.args.next().map(String::as_str)
    }

    pub fn value(&mut self, flag: &str) -> Result<&'a str, String> {
        let see = self.see_help();
        self.next()
            .ok_or_else(|| format!("{flag} needs a value ({see})"))
    }

    /// `see `aim help run``: where the whole usage is (the command is the usage's second
    /// word), for one-line complaints.
    pub fn see_help(&self) -> String {
        match self.usage.split_whitespace().nth(1) {
            Some(command) => format!("see `aim help {command}`"),
            None => "see `aim help`".into(),
        }
    }

    pub fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, String> {
        let v = self.value(flag)?;
        v.parse()
            .map_err(|_| format!("{flag}: not a valid number: {v:?}"))
    }

    pub fn duration(&mut self, flag: &str) -> Result<Duration, String> {
        let v = self.value(flag)?;
        parse_duration(v).map_err(|e| format!("{flag}: {e}"))
    }

    /// One line: what was wrong, and where the usage is.
    pub fn unknown(&self, arg: &str) -> String {
        format!("unknown argument {arg:?} ({})", self.see_help())
    }

    /// Handles the flags shared by cluster commands; returns false for anything else.
    pub fn cluster_flag(&mut self, arg: &str, c: &mut ClusterArgs) -> Result<bool, String> {
        match arg {
            "-n" | "--count" => c.count = self.number(arg)?,
            "-s" | "--strategy" => {
                c.strategy_set = true;
                c.strategy = self
                    .value(arg)?
                    .parse()
                    .map_err(|e: aim::Error| e.to_string())?
            }
            "--tools" => c.tools_file = Some(self.value(arg)?.to_string()),
            "--start-at-once" => c.start_at_once = self.number(arg)?,
            "--min-ready" => c.min_ready = Some(self.number(arg)?),
            "--raise-fd-limit" => c.raise_fd_limit = true,
            "--host" => c.hosts.push(self.value(arg)?.to_string()),
            "--ssh-config" => c.ssh_config = Some(self.value(arg)?.to_string()),
            "--remote-aim" => c.remote_aim = Some(self.value(arg)?.to_string()),
            "--workspace" => {
                c.workspace = Some(match self.value(arg)? {
                    "worktree" | "git_worktree" => aim::WorkspaceKind::GitWorktree,
                    "dir" => aim::WorkspaceKind::Dir,
                    "none" => aim::WorkspaceKind::None,
                    other => {
                        return Err(format!(
                            "--workspace: unknown kind {other:?} (worktree, dir or none; {})",
                            self.see_help()
                        ))
                    }
                })
            }
            "--workspace-root" => c.workspace_root = Some(self.value(arg)?.to_string()),
            "--max-rss" => {
                let v = self.value(arg)?;
                c.max_rss = Some(parse_size(v).map_err(|e| format!("{arg}: {e}"))?);
            }
            "--metrics-addr" => {
                let value = self.value(arg)?;
                // A bare port means loopback: metrics are not exposed unless asked for.
                c.metrics_addr = Some(match value.parse::<u16>() {
                    Ok(port) => format!("127.0.0.1:{port}"),
                    Err(_) => value.to_string(),
                });
            }
            _ if !arg.starts_with('-') && c.tool.is_none() => c.tool = Some(arg.to_string()),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `text` split into its leading number and the unit after it (`"1.5G"` is `(1.5, "G")`);
/// `None` when it does not start with a number.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    Some((number.parse().ok()?, unit))
}

/// `500M`, `2G`, `640K` (powers of 1024), or a plain number of bytes; at least one byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (value, unit) =
        number_and_unit(text).ok_or_else(|| format!("not a size: {text:?} (try 500M, 2G)"))?;
    let scale = match unit.trim_end_matches(['B', 'b', 'i']) {
        "" => 1.0,
        "K" | "k" => 1024.0,
        "M" | "m" => 1024.0 * 1024.0,
        "G" | "g" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (use K, M, G)")),
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("not a size of at least one byte: {text:?}"));
    }
    Ok(bytes as u64)
}

/// `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text)
        .ok_or_else(|| format!("not a duration: {text:?} (try 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m, h)"
            ))
        }
    };
    if !seconds.is_finite() || seconds < 0.0 || seconds > aim::MAX_DURATION.as_secs_f64() {
        return Err(format!("not a duration of at most a year: {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3T").is_err());
    }
}
