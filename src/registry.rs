//! [`ToolRegistry`]: tool id -> [`ToolSpec`], with built-ins and JSON files.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::permissions::Permissions;
use crate::protocol::ProtocolKind;
use crate::refusal::Refusal;
use crate::spec::{Framing, InputFormat, Stream, ToolSpec};
use crate::statements::StatementCheck;

/// The environment variable naming a JSON tools file that [`ToolRegistry::from_env`] loads.
pub(crate) const TOOLS_ENV: &str = "AIM_TOOLS";

/// Maps tool ids to specs.
///
/// [`ToolRegistry::builtin`] knows `demo` (our own demo agent), `python`, `bc`, `sqlite3`, and
/// `aider`, `claude`, `codex` with the flags that make them usable without a terminal. A JSON
/// file adds or overrides entries: an object whose keys are tool ids and whose values are
/// [`ToolSpec`]s (the `name` field may be left out). An entry whose id is already known (a
/// built-in such as `aider`, or a tool from an earlier file) starts from that spec and
/// replaces only the fields it gives, each as a whole (`args` replaces every argument):
/// `{"aider": {"workspace": {"kind": "git_worktree"}}}` is the built-in aider with worktrees.
///
/// ```
/// use aim::ToolRegistry;
/// let registry = ToolRegistry::builtin();
/// assert_eq!(registry.get("bc")?.program, "bc");
/// let err = registry.get("nope").unwrap_err();
/// assert!(err.to_string().contains("known tools"));
/// # Ok::<(), aim::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, ToolSpec>,
}

impl ToolRegistry {
    /// The environment variable naming a JSON tools file that [`ToolRegistry::from_env`]
    /// loads: `AIM_TOOLS`.
    pub const TOOLS_ENV: &'static str = TOOLS_ENV;

    /// The program of the built-in `demo` entry until a launch or [`ToolRegistry::resolve`]
    /// finds the demo agent: `<aim-demo>`.
    pub const DEMO_PROGRAM: &'static str = DEMO_PROGRAM_PLACEHOLDER;

    /// An empty registry.
    pub fn empty() -> Self {
        ToolRegistry::default()
    }

    /// The built-in tools.
    pub fn builtin() -> Self {
        let mut registry = ToolRegistry::empty();
        for spec in [
            demo_spec(),
            python_spec(),
            bc_spec(),
            sqlite3_spec(),
            aider_spec(),
            claude_spec(),
            codex_spec(),
        ] {
            registry.insert(spec);
        }
        registry
    }

    /// The built-ins plus the file named by `AIM_TOOLS`, if that variable is set.
    ///
    /// # Errors
    /// [`Error::ToolsFile`] when the file cannot be read or is invalid.
    pub fn from_env() -> Result<Self> {
        let mut registry = ToolRegistry::builtin();
        if let Some(path) = std::env::var_os(TOOLS_ENV).filter(|p| !p.is_empty()) {
            registry.load_file(Path::new(&path))?;
        }
        Ok(registry)
    }

    /// The built-ins plus the tools in `path`.
    ///
    /// # Errors
    /// [`Error::ToolsFile`] naming the file, the tool and the field when anything is invalid.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let mut registry = ToolRegistry::builtin();
        registry.load_file(path.as_ref())?;
        Ok(registry)
    }

    /// Adds or replaces the tools in the JSON file at `path` (a built-in or an earlier
    /// file's tool of the same id is replaced; an id twice in one file is an error).
    ///
    /// # Errors
    /// [`Error::ToolsFile`] naming the file, the tool, the field and the line when anything is
    /// invalid (a duplicate id included); on error the registry is unchanged.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ToolsFileError {
                reason: format!("cannot read: {e}"),
                ..ToolsFileError::default()
            }
            .at(path)
        })?;
        for spec in parse_tools(&text, &self.tools).map_err(|e| e.at(path))? {
            self.insert(spec);
        }
        Ok(())
    }

    /// Adds or replaces one tool, under its `name`.
    pub fn insert(&mut self, spec: ToolSpec) {
        self.tools.insert(spec.name.clone(), spec);
    }

    /// The spec for `id`, as registered. The demo agent's program is the placeholder
    /// [`ToolRegistry::DEMO_PROGRAM`]; pools and clusters resolve it when they launch, and
    /// [`ToolRegistry::resolve`] resolves it now.
    ///
    /// Use `get` to inspect or serialise a spec as written (`aim tools ID` prints this one,
    /// so the file it writes stays portable), or to change it before launching: a pool or
    /// cluster resolves the placeholder itself. Use [`ToolRegistry::resolve`] when you need
    /// the real program path now (to run it yourself, or to fail early when the demo agent
    /// is missing). For every other tool the two return the same spec.
    ///
    /// ```
    /// use aim::ToolRegistry;
    /// let registry = ToolRegistry::builtin();
    /// assert_eq!(registry.get("demo")?.program, ToolRegistry::DEMO_PROGRAM);
    /// assert_eq!(registry.get("python")?, registry.resolve("python")?);
    /// # Ok::<(), aim::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownTool`] listing the known ids.
    pub fn get(&self, id: &str) -> Result<ToolSpec> {
        self.tools
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownTool {
                id: id.to_string(),
                known: self.ids(),
            })
    }

    /// The spec for `id` ready to launch: the demo agent's program path resolved (the only
    /// difference from [`ToolRegistry::get`], which says when to use which).
    ///
    /// # Errors
    /// [`Error::UnknownTool`], or [`Error::DemoAgentNotFound`] for `demo` when no demo agent
    /// executable can be found.
    pub fn resolve(&self, id: &str) -> Result<ToolSpec> {
        resolve_demo_program(self.get(id)?)
    }

    /// Every known id, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    /// Every spec, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = &ToolSpec> {
        self.tools.values()
    }
}

/// Pulls a field name out of serde's "unknown field `x`" / "missing field `x`" messages.
/// What is wrong with a tools file, before the file's path is attached.
#[derive(Debug, Default)]
struct ToolsFileError {
    tool: Option<String>,
    field: Option<String>,
    location: Option<(usize, usize)>,
    reason: String,
}

impl ToolsFileError {
    fn at(self, path: &Path) -> Error {
        Error::ToolsFile {
            path: path.to_path_buf(),
            tool: self.tool,
            field: self.field,
            location: self.location,
            reason: self.reason,
        }
    }
}

/// Parses a tools file's text: an object of tool id to spec. Errors name the tool, the
/// top-level field at fault and the line and column in the whole file.
///
/// An entry whose id is in `known` (a built-in, or a tool from an earlier file) starts from
/// that spec: each field it gives replaces that field as a whole, the others are kept.
fn parse_tools(
    text: &str,
    known: &BTreeMap<String, ToolSpec>,
) -> std::result::Result<Vec<ToolSpec>, ToolsFileError> {
    let location = |e: &serde_json::Error| (e.line() > 0).then(|| (e.line(), e.column()));
    let Entries(raw) = serde_json::from_str(text).map_err(|e| ToolsFileError {
        location: location(&e),
        reason: format!("invalid JSON: {}", strip_position(&e)),
        ..ToolsFileError::default()
    })?;
    let mut parsed = Vec::with_capacity(raw.len());
    let mut seen = std::collections::BTreeSet::new();
    for (id, value) in raw {
        let fail = |field: Option<String>, location, reason| ToolsFileError {
            tool: Some(id.clone()),
            field,
            location,
            reason,
        };
        // Where the tool's entry starts, and where one of its fields is (for checks made
        // after parsing, which serde cannot place).
        let offset = value.get().as_ptr() as usize - text.as_ptr() as usize;
        let entry = Some(shift(text, offset, 1, 1));
        let field_at = |field: &str| {
            value
                .get()
                .find(&format!("\"{field}\""))
                .map(|at| shift(text, offset + at, 1, 1))
                .or(entry)
        };
        if !seen.insert(id.clone()) {
            return Err(fail(
                None,
                entry,
                "duplicate tool id (each id may appear once in a file)".into(),
            ));
        }
        let mut spec: ToolSpec = serde_json::from_str(value.get()).map_err(|e| {
            // Positions are relative to the tool's own text: shift them into the file's.
            let where_ = location(&e).map(|(line, column)| shift(text, offset, line, column));
            fail(
                faulty_field(value.get()),
                where_,
                strip_position(&e).to_string(),
            )
        })?;
        if let Some(base) = known.get(&id) {
            spec = overlay(base, value.get()).map_err(|reason| fail(None, None, reason))?;
        }
        if spec.name.is_empty() {
            spec.name = id.clone();
        }
        if spec.name != id {
            return Err(fail(
                Some("name".into()),
                field_at("name"),
                format!(
                    "must equal the tool id or be left out (found {:?})",
                    spec.name
                ),
            ));
        }
        spec.validate().map_err(|e| match e {
            Error::InvalidConfig { field, reason } => {
                // `env.set`, `framing.marker`: the top-level key is what the file shows.
                let key = field.split(['.', '[']).next().unwrap_or(&field).to_string();
                fail(Some(field.clone()), field_at(&key), reason)
            }
            other => fail(None, entry, other.to_string()),
        })?;
        parsed.push(spec);
    }
    Ok(parsed)
}

/// A tools file's top level: its entries in file order, duplicates kept (a map would keep
/// only the last, silently).
struct Entries<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Entries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of tool id to tool spec")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> std::result::Result<Entries<'a>, M::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// `base` with the top-level fields of the JSON object `entry` put in their place.
fn overlay(base: &ToolSpec, entry: &str) -> std::result::Result<ToolSpec, String> {
    let mut merged = serde_json::to_value(base).map_err(|e| e.to_string())?;
    let given: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(entry).map_err(|e| e.to_string())?;
    if let serde_json::Value::Object(fields) = &mut merged {
        fields.extend(given);
    }
    let mut spec: ToolSpec = serde_json::from_value(merged).map_err(|e| e.to_string())?;
    if let Some(custom) = base.custom() {
        spec = spec.custom_protocol(std::sync::Arc::clone(custom));
    }
    Ok(spec)
}

/// serde_json's message without its trailing " at line L column C" (reported separately).
fn strip_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

/// The file position of `(line, column)` in the text that starts at byte `offset`.
fn shift(text: &str, offset: usize, line: usize, column: usize) -> (usize, usize) {
    let before = &text[..offset];
    let base_line = before.matches('\n').count() + 1;
    let base_column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    if line == 1 {
        (base_line, base_column + column - 1)
    } else {
        (base_line + line - 1, column)
    }
}

/// The top-level field of a spec that makes it fail: each field is tried alone (with the
/// others at their defaults). `None` when no single field fails alone (a missing field).
fn faulty_field(spec_text: &str) -> Option<String> {
    let serde_json::Value::Object(fields) = serde_json::from_str(spec_text).ok()? else {
        return None;
    };
    fields.into_iter().find_map(|(key, value)| {
        let alone = serde_json::Value::Object([(key.clone(), value)].into_iter().collect());
        serde_json::from_value::<ToolSpec>(alone)
            .is_err()
            .then_some(key)
    })
}

/// The program of the built-in `demo` entry before [`ToolRegistry::resolve`] finds the binary.
pub(crate) const DEMO_PROGRAM_PLACEHOLDER: &str = "<aim-demo>";

fn demo_spec() -> ToolSpec {
    ToolSpec::new("demo", DEMO_PROGRAM_PLACEHOLDER)
        .framing(Framing::Prompt {
            marker: "> ".into(),
            stream: Stream::Stdout,
            settle: Duration::ZERO,
            await_read: false,
        })
        .input(InputFormat::Wrapped {
            open: "{".into(),
            close: "}".into(),
        })
        .quit_command("/exit")
        .startup_timeout(Duration::from_secs(10))
        .request_timeout(Duration::from_secs(30))
}

fn python_spec() -> ToolSpec {
    // -u: unbuffered stdout, so results arrive before the `>>> ` prompt on stderr.
    ToolSpec::new("python", "python3")
        .args(["-i", "-q", "-u"])
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHON_BASIC_REPL", "1")
        .framing(Framing::NumberedPrompt {
            setup: python_setup_line(),
            stream: Stream::Stderr,
            end_block: Some(String::new()),
        })
        .quit_command("exit()")
}

/// Makes python show `{nonce}N>` as its main prompt and `{nonce}N.` as its continuation
/// prompt, N counting statements: python's prompt loop takes `str()` of the objects in
/// `sys`'s dictionary, `ps1` once per statement, then `ps2` for each continuation line.
/// Those objects answer with the numbered prompt only to python's own loop (no Python code
/// calls them); `sys` becomes an instance of a `module` subclass whose `ps1` and `ps2`
/// properties give user code what plain python would (`'>>> '`, `'... '`, or what it
/// assigned; deleting removes them), never the objects. Run by `exec` in a dictionary of its
/// own, so nothing is left in the user's namespace.
const PYTHON_NUMBERED_PROMPTS: &str = r#"import sys
shown = {"ps1": ">>> ", "ps2": "... "}
class Prompt:
    n = 0
    def __init__(self, key):
        self.key = key
    def __str__(self):
        try:
            sys._getframe(1)
        except ValueError:
            if self.key == "ps1":
                Prompt.n += 1
            return "{nonce}%d%s" % (Prompt.n, ">" if self.key == "ps1" else ".")
        return str(shown.get(self.key, ""))
    __repr__ = __str__
def read_back(key):
    def get(module):
        try:
            return shown[key]
        except KeyError:
            raise AttributeError("module 'sys' has no attribute '%s'" % key) from None
    def set(module, value):
        shown[key] = value
    def delete(module):
        try:
            del shown[key]
        except KeyError:
            raise AttributeError(key) from None
    return property(get, set, delete)
vars(sys)["ps1"] = Prompt("ps1")
vars(sys)["ps2"] = Prompt("ps2")
sys.__class__ = type("module", (type(sys),), {"ps1": read_back("ps1"), "ps2": read_back("ps2"), "__module__": "builtins"})
"#;

/// [`PYTHON_NUMBERED_PROMPTS`] as the one line python reads: `exec("...", {})`.
fn python_setup_line() -> String {
    let mut line = String::from("exec(\"");
    for c in PYTHON_NUMBERED_PROMPTS.chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '"' => line.push_str("\\\""),
            '\n' => line.push_str("\\n"),
            c => line.push(c),
        }
    }
    line.push_str("\", {})");
    line
}

fn bc_spec() -> ToolSpec {
    ToolSpec::new("bc", "bc")
        .args(["-q"])
        .env("BC_LINE_LENGTH", "0")
        .framing(Framing::Sentinel {
            command: "print \"{nonce}\\n\"".into(),
        })
        .statement_check(StatementCheck::Bc)
        .quit_command("quit")
}

fn sqlite3_spec() -> ToolSpec {
    let mut spec = ToolSpec::new("sqlite3", "sqlite3")
        .args(["-batch"])
        // `;` ends a statement left without one (an empty statement otherwise), and the
        // comment after it carries the nonce so that its read-back (`.echo on`) is known to be
        // aim's; `.print` is the same in every `.mode` and with `.headers` on.
        .framing(Framing::Sentinel {
            command: ";-- {nonce}\n.print {nonce}".into(),
        })
        // Each of these (and every abbreviation sqlite3 3.40 accepts) sends what follows,
        // the sentinel included, somewhere else than standard output: into the user's file.
        // A bare `.output` sends it back to standard output: harmless.
        .refuse(
            [".on", ".onc", ".once", ".excel", ".testcase"],
            SQLITE3_REDIRECTS,
        )
        .statement_check(StatementCheck::Sqlite3)
        .quit_command(".quit");
    spec.refuse.push(
        Refusal::new(
            [".o", ".ou", ".out", ".outp", ".outpu", ".output"],
            SQLITE3_REDIRECTS,
        )
        .allowing_alone(),
    );
    spec
}

const SQLITE3_REDIRECTS: &str = "it redirects sqlite3's output away from standard output, \
    where aim reads answers and their end (the end marker would be written into the file)";

/// How long a built-in agent may go quiet during a turn.
const AGENT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

fn aider_spec() -> ToolSpec {
    // The model comes from the environment the way aider documents it (AIDER_MODEL, or
    // OPENAI_API_KEY / ANTHROPIC_API_KEY and friends); --no-git keeps aider from running
    // `git init` and writing .gitignore in the caller's directory, and /dev/null histories
    // leave no .aider* files behind.
    ToolSpec::new("aider", "aider")
        .args([
            "--no-git",
            "--no-pretty",
            "--no-fancy-input",
            "--yes-always",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-show-model-warnings",
            "--no-analytics",
            "--no-auto-lint",
            "--no-detect-urls",
            "--no-suggest-shell-commands",
            "--no-notifications",
            "--input-history-file",
            "/dev/null",
            "--chat-history-file",
            "/dev/null",
        ])
        .env("COLUMNS", "1000")
        .protocol(ProtocolKind::Aider)
        .permissions(Permissions::Edit)
        .stall_timeout(AGENT_STALL_TIMEOUT)
        .quit_command("/exit")
        .startup_timeout(Duration::from_secs(120))
        .request_timeout(Duration::from_secs(600))
        .stop_grace(Duration::from_secs(5))
}

fn claude_spec() -> ToolSpec {
    ToolSpec::new("claude", "claude")
        .args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
        ])
        .protocol(ProtocolKind::ClaudeStreamJson)
        .permissions(Permissions::Edit)
        .stall_timeout(AGENT_STALL_TIMEOUT)
        .startup_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(600))
        .stop_grace(Duration::from_secs(5))
}

fn codex_spec() -> ToolSpec {
    ToolSpec::new("codex", "codex")
        .args(["app-server"])
        .protocol(ProtocolKind::CodexAppServer)
        .permissions(Permissions::Edit)
        .stall_timeout(AGENT_STALL_TIMEOUT)
        .startup_timeout(Duration::from_secs(60))
        .request_timeout(Duration::from_secs(600))
        .stop_grace(Duration::from_secs(5))
}

/// `spec` with the demo agent's placeholder program replaced by the located agent; any other
/// spec unchanged. Pools call this at launch, so a spec from [`ToolRegistry::get`] or a
/// tools file naming `<aim-demo>` launches the same way as one from
/// [`ToolRegistry::resolve`].
///
/// # Errors
/// [`Error::DemoAgentNotFound`], saying where it looked and what to call.
pub(crate) fn resolve_demo_program(mut spec: ToolSpec) -> Result<ToolSpec> {
    if spec.program != DEMO_PROGRAM_PLACEHOLDER {
        return Ok(spec);
    }
    let (program, env) = crate::demo::locate()?;
    spec.program = program.to_string_lossy().into_owned();
    for (k, v) in env {
        spec.env.set.insert(k, v);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("aim-reg-{}-{name}.json", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path
    }

    #[test]
    fn builtins_validate() {
        let registry = ToolRegistry::builtin();
        for spec in registry.iter() {
            spec.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        }
        assert_eq!(
            registry.ids(),
            ["aider", "bc", "claude", "codex", "demo", "python", "sqlite3"]
        );
    }

    #[test]
    fn json_templates_render_valid_json_for_awkward_prompts() {
        for spec in ToolRegistry::builtin().iter() {
            if let crate::spec::InputFormat::JsonTemplate { .. } = spec.input {
                let line = spec
                    .render_prompt("say \"hi\"\n\tthen {prompt} \\ done".into())
                    .unwrap();
                let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
                assert!(value.is_object(), "{}", spec.name);
                assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
            }
        }
    }

    #[test]
    fn unknown_tool_lists_known_ids() {
        match ToolRegistry::builtin().get("vim").unwrap_err() {
            Error::UnknownTool { id, known } => {
                assert_eq!(id, "vim");
                assert!(known.contains(&"python".to_string()));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn file_adds_and_overrides_tools() {
        let path = temp_file(
            "ok",
            r#"{"cat": {"program": "cat"}, "bc": {"program": "/usr/bin/bc", "args": ["-q"]}}"#,
        );
        let registry = ToolRegistry::from_path(&path).unwrap();
        assert_eq!(registry.get("cat").unwrap().name, "cat");
        assert_eq!(registry.get("bc").unwrap().program, "/usr/bin/bc");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn refusals_come_from_tools_files() {
        let path = temp_file(
            "refuse",
            r#"{"db": {"program": "sqlite3", "refuse": [{"words": [".shell"], "reason": "no"}]}}"#,
        );
        let db = ToolRegistry::from_path(&path).unwrap().get("db").unwrap();
        let err = db
            .render_prompt(".shell ls".into())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`.shell` is refused: no"), "{err}");
        assert!(db.render_prompt("SELECT 1;".into()).is_ok());
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn an_entry_naming_a_known_tool_overrides_only_the_fields_it_gives() {
        let path = temp_file(
            "merge",
            r#"{"aider": {"cwd": "/srv/wt-{index}", "workspace": {"kind": "git_worktree"}}}"#,
        );
        let registry = ToolRegistry::from_path(&path).unwrap();
        let aider = registry.get("aider").unwrap();
        let builtin = ToolRegistry::builtin().get("aider").unwrap();
        assert_eq!(aider.protocol, ProtocolKind::Aider, "the protocol is kept");
        assert_eq!(aider.args, builtin.args);
        assert_eq!(aider.startup_timeout, builtin.startup_timeout);
        assert_eq!(aider.cwd.as_deref(), Some("/srv/wt-{index}"));
        assert_eq!(
            aider.workspace.kind,
            crate::workspace::WorkspaceKind::GitWorktree
        );
        // A new id still needs a program of its own.
        let path = temp_file("merge-new", r#"{"mine": {"cwd": "/x"}}"#);
        let err = ToolRegistry::from_path(&path).unwrap_err().to_string();
        assert!(err.contains("program"), "{err}");
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn invalid_files_name_file_tool_and_field() {
        let cases = [
            ("json", "{not json", None, None),
            (
                "field",
                r#"{"x": {"program": "cat", "colour": 1}}"#,
                Some("x"),
                Some("colour"),
            ),
            (
                "spec",
                r#"{"y": {"program": "cat", "framing": {"kind": "sentinel", "command": "p"}}}"#,
                Some("y"),
                Some("framing.command"),
            ),
            (
                "variant",
                r#"{"z": {"program": "cat", "restart": "sometimes"}}"#,
                Some("z"),
                Some("restart"),
            ),
            (
                "type",
                r#"{"w": {"program": "cat", "startup_timeout_ms": "ten"}}"#,
                Some("w"),
                Some("startup_timeout_ms"),
            ),
        ];
        for (name, text, tool, field) in cases {
            let path = temp_file(name, text);
            match ToolRegistry::from_path(&path).unwrap_err() {
                Error::ToolsFile {
                    path: p,
                    tool: t,
                    field: f,
                    ..
                } => {
                    assert_eq!(p, path);
                    assert_eq!(t.as_deref(), tool, "{name}");
                    assert_eq!(f.as_deref(), field, "{name}");
                }
                other => panic!("{name}: {other}"),
            }
            std::fs::remove_file(path).ok();
        }
    }

    #[test]
    fn tools_file_errors_give_the_line_and_column_in_the_file() {
        let text = "{\n  \"ok\": {\"program\": \"cat\"},\n  \"bad\": {\n    \"program\": \"cat\",\n    \"restart\": \"sometimes\"\n  }\n}\n";
        let path = temp_file("where", text);
        let err = ToolRegistry::from_path(&path).unwrap_err();
        let Error::ToolsFile {
            tool,
            field,
            location,
            reason,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(tool.as_deref(), Some("bad"));
        assert_eq!(field.as_deref(), Some("restart"));
        // serde points just past the bad value: line 5, after `"sometimes"`.
        assert_eq!(location.map(|(line, _)| line), Some(5), "{err}");
        assert!(location.unwrap().1 > 15, "{err}");
        assert!(reason.contains("sometimes"), "{reason}");
        assert!(!reason.contains(" at line "), "{reason}");
        let text = err.to_string();
        assert!(text.contains(":5:"), "{text}");
        std::fs::remove_file(path).ok();
        let path = temp_file("syntax", "{\n  \"a\": {\"program\": }\n}");
        let err = ToolRegistry::from_path(&path).unwrap_err();
        assert!(
            matches!(
                err,
                Error::ToolsFile {
                    location: Some((2, _)),
                    ..
                }
            ),
            "{err}"
        );
        std::fs::remove_file(path).ok();
    }
}
