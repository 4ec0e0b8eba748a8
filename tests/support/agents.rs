//! Real AI coding CLIs (aider, claude, codex) against the project's fake LLM backend
//! (`tests/fake_llm.py`, loopback only): where to find them, and a spec for each that keeps
//! it offline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use aim::{ToolRegistry, ToolSpec};

/// The fake LLM backend, running until dropped (it exits when its stdin closes).
pub struct FakeLlm {
    child: Child,
    stdin: Option<ChildStdin>,
    pub port: u16,
    pub log: PathBuf,
}

impl FakeLlm {
    /// Starts the backend; its requests are logged to a fresh file under `dir`.
    pub fn start(dir: &Path) -> FakeLlm {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fake_llm.py");
        let log = dir.join("llm.log");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs tests/fake_llm.py");
        let stdin = child.stdin.take();
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("the fake backend prints its port");
        let port = first
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from fake_llm.py: {first:?}"));
        FakeLlm {
            child,
            stdin,
            port,
            log,
        }
    }

    /// Every conversation the backend received, as `(api, [(role, text)])`.
    pub fn conversations(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the real clients are installed (`../shared/realclients/install.sh`):
/// `$REALCLIENTS`, else `$HOME/.realclients`.
pub fn realclients_dir() -> PathBuf {
    std::env::var_os("REALCLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".realclients")
        })
}

/// The client's executable, or `None` after printing why the test is skipped.
pub fn client(name: &str) -> Option<PathBuf> {
    let dir = realclients_dir();
    let path = match name {
        "aider" => dir.join("aider-venv/bin/aider"),
        other => dir.join("npm/node_modules/.bin").join(other),
    };
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {name} is not installed at {} (install the pinned clients with \
             `bash ../shared/realclients/install.sh --npm`, as .ci/run does)",
            path.display()
        );
        None
    }
}

/// A fresh scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aim-agents-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The built-in `aider` entry, pointed at `program` and the fake backend, each instance in
/// its own working directory.
pub fn aider(program: &Path, llm: &FakeLlm, dir: &Path) -> ToolSpec {
    let meta = dir.join("aider-meta.json");
    std::fs::write(
        &meta,
        r#"{"openai/fake-model": {"max_tokens": 4096, "max_input_tokens": 128000,
            "max_output_tokens": 4096, "input_cost_per_token": 0.0,
            "output_cost_per_token": 0.0, "litellm_provider": "openai", "mode": "chat"}}"#,
    )
    .unwrap();
    for i in 0..8 {
        std::fs::create_dir_all(dir.join(format!("work-{i}"))).unwrap();
    }
    let mut spec = ToolRegistry::builtin().get("aider").unwrap();
    spec.program = program.display().to_string();
    spec.args.extend([
        "--model-metadata-file".to_string(),
        meta.display().to_string(),
        "--map-tokens".to_string(),
        "0".to_string(),
    ]);
    spec.cwd = Some(format!("{}/work-{{index}}", dir.display()));
    spec.env("HOME", dir.join("home").display().to_string())
        .env("AIDER_MODEL", "openai/fake-model")
        .env("OPENAI_API_KEY", "sk-fake")
        .env(
            "OPENAI_API_BASE",
            format!("http://127.0.0.1:{}/v1", llm.port),
        )
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
}

/// [`aider`] with a chat history file per instance and `--restore-chat-history`, so a
/// restarted aider reloads its conversation.
pub fn aider_restoring(program: &Path, llm: &FakeLlm, dir: &Path) -> ToolSpec {
    let mut spec = aider(program, llm, dir);
    let history = spec
        .args
        .iter()
        .position(|a| a == "--chat-history-file")
        .expect("the built-in aider names a chat history file");
    spec.args[history + 1] = format!("{}/chat-{{index}}.md", dir.display());
    // The aider protocol reads these to know the conversation can be restored.
    spec.args.push("--restore-chat-history".into());
    spec
}

/// The built-in `claude` entry, pointed at `program` and the fake backend.
pub fn claude(program: &Path, llm: &FakeLlm, dir: &Path) -> ToolSpec {
    let mut spec = ToolRegistry::builtin().get("claude").unwrap();
    spec.program = program.display().to_string();
    spec.args
        .extend(["--model".to_string(), "claude-fake".to_string()]);
    spec.env("HOME", dir.join("claude-home").display().to_string())
        .env(
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{}", llm.port),
        )
        .env("ANTHROPIC_API_KEY", "sk-ant-fake")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
}

/// The built-in `codex` entry, pointed at `program` and the fake backend.
pub fn codex(program: &Path, llm: &FakeLlm, dir: &Path) -> ToolSpec {
    let home = dir.join("codex-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"fake-model\"\nmodel_provider = \"fake\"\n\n[model_providers.fake]\n\
             name = \"fake\"\nbase_url = \"http://127.0.0.1:{}/v1\"\n\
             env_key = \"FAKE_API_KEY\"\nwire_api = \"responses\"\n",
            llm.port
        ),
    )
    .unwrap();
    let mut spec = ToolRegistry::builtin().get("codex").unwrap();
    spec.program = program.display().to_string();
    spec.cwd = Some(dir.display().to_string());
    spec.env("HOME", home.display().to_string())
        .env("CODEX_HOME", home.display().to_string())
        .env("FAKE_API_KEY", "sk-fake")
}

/// Tokens the fake backend counted, summed over requests (see `tests/fake_llm.py`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub requests: usize,
}

impl Counted {
    /// As the `Usage` a client should report for the same calls.
    pub fn usage(&self) -> aim::protocol::Usage {
        aim::protocol::Usage::new(self.input, self.output)
            .with_cache(self.cache_read, self.cache_write)
    }
}

impl FakeLlm {
    /// How many requests the backend has logged so far.
    pub fn requests(&self) -> usize {
        self.conversations().len()
    }

    /// What the backend counted for the requests after the first `from` (leaving out aider's
    /// commit-message calls, which aider does not report).
    pub fn counted_since(&self, from: usize) -> Counted {
        let mut sum = Counted::default();
        for request in self.conversations().into_iter().skip(from) {
            if request["tool"] == "commit-message" || request["usage"].is_null() {
                continue;
            }
            let u = &request["usage"];
            sum.input += u["input"].as_u64().unwrap_or(0);
            sum.output += u["output"].as_u64().unwrap_or(0);
            sum.cache_read += u["cache_read"].as_u64().unwrap_or(0);
            sum.cache_write += u["cache_write"].as_u64().unwrap_or(0);
            sum.requests += 1;
        }
        sum
    }
}

/// A fresh git repository under `dir` named `name`, with one commit.
pub fn git_repo(dir: &Path, name: &str) -> PathBuf {
    let repo = dir.join(name);
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "aim")
            .env("GIT_AUTHOR_EMAIL", "aim@example.com")
            .env("GIT_COMMITTER_NAME", "aim")
            .env("GIT_COMMITTER_EMAIL", "aim@example.com")
            .stdout(Stdio::null())
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "start"]);
    repo
}
