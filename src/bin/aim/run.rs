//! `aim run`: prompts from stdin through a cluster, one JSON answer per line on stdout.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aim::{CancelHandle, ClusterManager, Request, Session, Strategy, Ticket};
use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use nix::sys::signal::Signal;
use serde::Deserialize;

use crate::args::{ClusterArgs, Parser};
use crate::report::print_metrics_summary;

pub const USAGE: &str = "\
aim run [TOOL] [-n COUNT] [--strategy S] [--input text|jsonl] [--session KEY] [--unordered]
        [--stream] [--timeout T] [--queue-timeout Q] [--tools FILE] [--metrics-addr ADDR]
        [--permissions P] [--approve none|all] [--strict-denials] [--stall-timeout T]
        [--workspace worktree|dir|none] [--workspace-root DIR]

Launches COUNT instances of TOOL (default: the built-in demo agent, 2 instances), reads
prompts from stdin and writes one JSON line per prompt to stdout, in input order:
  {\"id\":0,\"instance\":1,\"generation\":1,\"elapsed_ms\":0.4,\"context_lost\":false,\"text\":\"...\"}
  (plus \"stderr\" when the tool wrote to stderr while answering, and \"session_id\",
  \"usage\", \"cost_usd\" when it reports them; \"denials\" (tool, target, reason) when an
  agent was refused something, \"files_edited\" when it reports edits; \"context_restored\",
  \"context_mixed\", \"context_note\" for sessions when they apply;
  \"workspace\" and \"changed_files\", e.g. [{\"path\":\"a.txt\",\"change\":\"created\"}],
  when the tool has workspaces)
  {\"id\":1,\"error\":\"...\",\"kind\":\"timeout\"}
  (plus \"partial\" with what the tool had answered when it died while answering,
  kind \"died\")
  {\"id\":2,\"error\":\"line 3: invalid UTF-8\",\"kind\":\"input\"}
Ids count input lines from 0. A bad line gets its error line and the run goes on; a blank
line is no prompt and gets no line (its id is skipped). A summary goes to stderr at the end
(answered and failed count output lines, bad input lines included). Exit code 0 when every
prompt was answered, 1 when any failed, 2 for bad arguments, 130/143 after SIGINT/SIGTERM, 141 when stdout was closed.

Input (--input):
  text   (default) each line is one prompt, verbatim (a line starting with { too)
  jsonl  each line is a JSON object: {\"prompt\": \"...\", \"session\": \"...\"}; other fields
         are an error. Sessions need sticky routing: without -s, jsonl uses sticky (said on
         stderr); with another explicit strategy a line with a session is an error.
         Sessions idle for 10 minutes are forgotten (at most 10 000 are kept).
         A control line {\"cancel\": ID} cancels prompt ID if it is still running (it
         gets a \"cancelled\" line); the control line gets no line and the run goes on.

Stateful REPLs (python, bc, sqlite3) keep names in their process: under round-robin (the
default) consecutive prompts go to different instances, so `x = 41` then `print(x + 1)`
fails with a NameError. Use --session KEY, or sessions in jsonl, to keep them together.

  -n, --count N         instances (default 2)
  -s, --strategy S      round-robin (default), least-busy or sticky
      --session KEY     keep every prompt on one instance (while it lives): session KEY
                        for prompts without a session of their own; implies sticky routing
      --input MODE      text (default) or jsonl, as above
      --unordered       print each answer as it completes instead of in input order
      --stream          also print each answer's text as it arrives, as JSON lines
                        tagged with the prompt id, before that prompt's answer line:
                          {\"id\":0,\"chunk\":\"...\"}
      --timeout T       how long an answer may take once its prompt is written to the tool
                        (default: the tool's request timeout; 30s, 500ms, 2m)
      --queue-timeout Q how long a prompt may wait for an instance before that (default 60s)
      --tools FILE      a JSON tools file (default: $AIM_TOOLS, if set)
      --start-at-once K start at most K instances at a time (default: all at once;
                        heavy agents such as aider on few cores: 1 or 2)
      --min-ready N     start answering once N instances are ready; the rest keep
                        starting (default: all must start, or the run fails)
      --raise-fd-limit  raise the soft open-file limit up to the hard one when COUNT
                        instances need it (about 5 descriptors each)
      --max-rss SIZE    memory limit per instance (500M, 2G; its process and descendants):
                        over it an instance is recycled once idle, over twice it killed at
                        once; checked at each health poll (every 5 s), restart reason memory
      --metrics-addr A  serve Prometheus metrics at http://A/metrics while running
                        (a bare port means 127.0.0.1:PORT; another interface needs
                        --metrics-public)
      --metrics-public  allow --metrics-addr on a non-loopback interface
      --host DEST       run the instances on this host over ssh (repeat for more; spread
                        evenly; each answer line gets a \"host\" field). DEST is anything
                        ssh accepts. The far side runs `aim relay` (see --remote-aim); where
                        there is none, the tool runs under plain `ssh -T` with a warning
      --ssh-config FILE the ssh config file for --host (ssh -F FILE)
      --remote-aim PATH the aim program on the hosts (default: aim on their PATH)
      --workspace KIND  give each instance a working directory of its own: worktree (a git
                        worktree of the current checkout on branch aim/TOOL-N), dir (an
                        empty directory) or none (default: the tool's setting)
      --workspace-root DIR
                        where the workspaces live (default: CHECKOUT.aim-workspaces next to
                        the checkout); at the end, clean ones are removed and the others
                        (uncommitted changes, new commits) kept and listed on stderr

Agents (claude, codex, aider; see docs/tools.md, \"Letting agents change things\"):
      --permissions P   read-only, edit (change files in the working directory) or
                        full (default: the tool's entry; the built-in agents say edit)
      --approve A       who answers requests beyond the permissions: none (default:
                        denied, listed in the answer's \"denials\") or all (allowed)
      --strict-denials  a turn with any denial fails (kind \"denied\") instead
      --stall-timeout T end a turn after T without output or protocol event
                        (default: the tool's entry; 5m for the built-in agents)

Signals: SIGINT or SIGTERM stops reading input; prompts already sent finish (each gets its
line), then the cluster shuts down and the summary is printed. A second signal cancels the
prompts still running (each gets a \"cancelled\" line).

Examples:
  printf 'hello\\nworld\\n' | aim run
  printf 'x = 41\\nprint(x + 1)\\n' | aim run python --session calc
  printf '{\"prompt\": \"x = 1\", \"session\": \"a\"}\\n{\"prompt\": \"print(x)\", \"session\": \"a\"}\\n' \\
      | aim run python --input jsonl
  seq 100 | aim run demo -n 4 --unordered --timeout 10s";

/// Sessions idle this long are forgotten.
const SESSION_IDLE: Duration = Duration::from_secs(600);
/// At most this many sessions are kept (the least recently used goes first).
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputMode {
    Text,
    Jsonl,
}

#[derive(Debug)]
struct RunOptions {
    input: InputMode,
    unordered: bool,
    stream: bool,
    answer_timeout: Option<Duration>,
    queue_timeout: Duration,
    metrics_public: bool,
    /// `--session KEY`: every prompt without a session of its own goes in this one.
    session: Option<String>,
}

pub fn main(args: &[String]) -> Result<ExitCode, String> {
    let mut cluster_args = ClusterArgs::new(2, Strategy::RoundRobin);
    let mut options = RunOptions {
        input: InputMode::Text,
        unordered: false,
        stream: false,
        answer_timeout: None,
        queue_timeout: Duration::from_secs(60),
        metrics_public: false,
        session: None,
    };
    let mut p = Parser::new(args, USAGE);
    while let Some(arg) = p.next() {
        match arg {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            "--stream" => options.stream = true,
            "--unordered" => options.unordered = true,
            "--metrics-public" => options.metrics_public = true,
            "--timeout" => options.answer_timeout = Some(p.duration(arg)?),
            "--permissions" => {
                cluster_args.agent.permissions =
                    Some(p.value(arg)?.parse().map_err(|e| format!("{arg}: {e}"))?)
            }
            "--approve" => {
                cluster_args.agent.approve =
                    Some(p.value(arg)?.parse().map_err(|e| format!("{arg}: {e}"))?)
            }
            "--strict-denials" => cluster_args.agent.strict_denials = true,
            "--stall-timeout" => cluster_args.agent.stall_timeout = Some(p.duration(arg)?),
            "--queue-timeout" => options.queue_timeout = p.duration(arg)?,
            "--session" => options.session = Some(p.value(arg)?.to_string()),
            "--input" => {
                options.input = match p.value(arg)? {
                    "text" => InputMode::Text,
                    "jsonl" => InputMode::Jsonl,
                    other => {
                        return Err(format!(
                            "--input: unknown mode {other:?} (text or jsonl; see `aim help run`)"
                        ))
                    }
                }
            }
            _ if p.cluster_flag(arg, &mut cluster_args)? => {}
            _ => return Err(p.unknown(arg)),
        }
    }
    if options.session.is_some() {
        if cluster_args.strategy_set && cluster_args.strategy != Strategy::Sticky {
            return Err(format!(
                "--session needs sticky routing, not {} (leave -s out, or -s sticky)",
                cluster_args.strategy
            ));
        }
        cluster_args.strategy = Strategy::Sticky;
    } else if options.input == InputMode::Jsonl && !cluster_args.strategy_set {
        eprintln!("aim: --input jsonl: using sticky routing so sessions keep their instance");
        cluster_args.strategy = Strategy::Sticky;
    }
    let signals = crate::signals::install()?;
    let spec = cluster_args.spec()?;
    let answer_timeout = options.answer_timeout.unwrap_or(spec.request_timeout);
    let builder = cluster_args
        .builder()?
        .request_timeout(options.queue_timeout + answer_timeout)
        .submit_timeout(options.queue_timeout);
    // Input is read, and signals heard, while the instances start.
    let lines = spawn_reader();
    let (done_tx, done_rx) = unbounded::<Finished>();
    let (closed_tx, closed_rx) = bounded::<()>(1);
    let unordered = options.unordered;
    let printer = std::thread::spawn(move || print_results(done_rx, unordered, closed_tx));
    let mut startup = Startup {
        pending: VecDeque::new(),
        window: (2 * cluster_args.count).max(2),
        queue_timeout: options.queue_timeout,
        next_id: 0,
        input_open: true,
        outcome: Outcome::default(),
    };
    let launched = startup.wait(launch(builder), &lines, &signals, &closed_rx, &done_tx);
    let cluster = match launched {
        Ok(Some(cluster)) => cluster,
        Ok(None) => {
            // A signal or a closed stdout before any instance was ready: the starting tools
            // die with this process (the guardian kills their groups).
            drop(done_tx);
            let (_, _, closed) = printer.join().map_err(|_| "the output thread panicked")?;
            let mut outcome = startup.outcome;
            outcome.stdout_closed |= closed;
            if let Some(signal) = outcome.signal {
                eprintln!("aim: {signal} during start-up: stopping");
            }
            return Ok(ExitCode::from(outcome.exit_code()));
        }
        Err(message) => {
            drop(done_tx);
            let _ = printer.join();
            return Err(message);
        }
    };
    let _server = match &cluster_args.metrics_addr {
        Some(addr) => {
            let server = if options.metrics_public {
                cluster.serve_metrics_public(addr)
            } else {
                cluster.serve_metrics(addr)
            };
            let server = server.map_err(|e| e.to_string())?;
            eprintln!("aim: metrics at http://{}/metrics", server.local_addr());
            Some(server)
        }
        None => None,
    };
    let run = Run {
        cluster: &cluster,
        options: &options,
        answer_timeout,
        sticky: cluster_args.strategy == Strategy::Sticky,
    };
    let outcome = run.pump(startup, lines, &signals, (done_tx, printer, closed_rx));
    let outcome = outcome?;
    print_metrics_summary(&cluster.metrics(), outcome.answered, outcome.failures);
    let report = cluster.shutdown();
    log::debug!("shut down in {:?}", report.took);
    for kept in &report.kept_workspaces {
        eprintln!(
            "aim: kept workspace {}{}: {}",
            kept.path.display(),
            kept.branch
                .as_deref()
                .map(|b| format!(" (branch {b})"))
                .unwrap_or_default(),
            kept.reason
        );
    }
    if let Some(ended) = &outcome.ended_by {
        eprintln!("aim: {ended}");
    }
    Ok(ExitCode::from(outcome.exit_code()))
}

/// Launches the cluster on a thread of its own; its result arrives on the channel.
fn launch(builder: aim::ClusterBuilder) -> Receiver<aim::Result<ClusterManager>> {
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(builder.launch());
    });
    rx
}

/// A prompt read while the instances start: its id, raw line and when it was read.
type Pending = (usize, Vec<u8>, Instant);

/// The start-up phase: waits for the cluster while reading input (up to the window) and
/// listening for signals; a prompt that waits longer than the queue timeout gets its
/// timeout line then, not when the instances are up.
struct Startup {
    pending: VecDeque<Pending>,
    window: usize,
    queue_timeout: Duration,
    next_id: usize,
    input_open: bool,
    outcome: Outcome,
}

impl Startup {
    /// The cluster once launched; `None` when a signal or a closed stdout came first.
    fn wait(
        &mut self,
        launching: Receiver<aim::Result<ClusterManager>>,
        lines: &Receiver<InputLine>,
        signals: &Receiver<Signal>,
        closed: &Receiver<()>,
        done: &Sender<Finished>,
    ) -> Result<Option<ClusterManager>, String> {
        loop {
            let now = Instant::now();
            while let Some(&(id, _, read)) = self.pending.front() {
                if now.saturating_duration_since(read) < self.queue_timeout {
                    break;
                }
                self.pending.pop_front();
                let record = serde_json::json!({"id": id, "kind": "timeout", "error": format!(
                    "timed out after {:?} waiting for an instance (still starting)",
                    self.queue_timeout
                )});
                let _ = done.send((id, Some(record), true));
            }
            let expiry = self
                .pending
                .front()
                .map_or_else(crossbeam_channel::never, |&(_, _, read)| {
                    crossbeam_channel::at(read + self.queue_timeout)
                });
            let input = if self.input_open && self.pending.len() < self.window {
                lines.clone()
            } else {
                crossbeam_channel::never()
            };
            select! {
                recv(launching) -> launched => {
                    return match launched {
                        Ok(Ok(cluster)) => Ok(Some(cluster)),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("the launch thread ended without a result".into()),
                    };
                }
                recv(signals) -> s => { self.outcome.signal = s.ok(); return Ok(None); }
                recv(closed) -> _ => { self.outcome.stdout_closed = true; return Ok(None); }
                recv(input) -> line => match line {
                    Ok(Ok(raw)) => {
                        if is_blank(&raw) {
                            let _ = done.send((self.next_id, None, false));
                        } else {
                            self.pending.push_back((self.next_id, raw, Instant::now()));
                        }
                        self.next_id += 1;
                    }
                    Ok(Err(e)) => {
                        self.outcome.ended_by = Some(format!("cannot read stdin: {e}"));
                        self.input_open = false;
                    }
                    Err(_) => self.input_open = false,
                },
                recv(expiry) -> _ => {}
            }
        }
    }
}

/// How a run ended.
#[derive(Debug, Default)]
struct Outcome {
    answered: usize,
    failures: usize,
    signal: Option<Signal>,
    stdout_closed: bool,
    ended_by: Option<String>,
}

impl Outcome {
    fn exit_code(&self) -> u8 {
        if let Some(signal) = self.signal {
            return crate::signals::exit_code(signal);
        }
        if self.stdout_closed {
            return 141;
        }
        u8::from(self.failures > 0)
    }
}

/// One line of JSON input: a prompt (maybe in a session), or a control line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    session: Option<String>,
    /// Cancels the prompt with this id (if it is still running).
    #[serde(default)]
    cancel: Option<usize>,
}

/// What one input line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A prompt, in a session or not.
    Prompt(String, Option<String>),
    /// `{"cancel": ID}`: cancel prompt ID; the run goes on.
    Cancel(usize),
}

/// A line of only whitespace: no prompt, no answer line, no failure (its id is skipped).
fn is_blank(raw: &[u8]) -> bool {
    raw.iter().all(u8::is_ascii_whitespace)
}

/// A prompt read from one input line, or why the line is not one.
fn parse_line(mode: InputMode, number: usize, raw: &[u8]) -> Result<Line, String> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let line = std::str::from_utf8(raw)
        .map_err(|e| format!("line {number}: invalid UTF-8 at byte {}", e.valid_up_to()))?;
    match mode {
        InputMode::Text => Ok(Line::Prompt(line.to_string(), None)),
        InputMode::Jsonl => {
            let parsed: JsonLine = serde_json::from_str(line).map_err(|e| {
                // serde's message without its own "at line 1 column C": one line number.
                let message = e.to_string();
                let message = message
                    .rfind(" at line ")
                    .map_or(message.as_str(), |i| &message[..i]);
                match e.column() {
                    0 => format!("line {number}: {message}"),
                    column => format!("line {number} column {column}: {message}"),
                }
            })?;
            match parsed {
                JsonLine {
                    prompt: Some(prompt),
                    session,
                    cancel: None,
                } => Ok(Line::Prompt(prompt, session)),
                JsonLine {
                    prompt: None,
                    session: None,
                    cancel: Some(id),
                } => Ok(Line::Cancel(id)),
                _ => Err(format!(
                    "line {number}: either {{\"prompt\": ..., \"session\": ...}} or {{\"cancel\": ID}}"
                )),
            }
        }
    }
}

/// What the reader thread hands over: one input line (raw bytes) or an error reading stdin.
type InputLine = std::io::Result<Vec<u8>>;

/// Reads stdin line by line (as bytes: invalid UTF-8 is the line's error, not the run's).
fn spawn_reader() -> Receiver<InputLine> {
    let (tx, rx) = bounded(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if tx.send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// One prompt's result line, with its id.
/// The printer's side: where results go, its thread (answered, failed, stdout closed) and
/// the channel that says stdout closed.
type Output = (
    Sender<Finished>,
    std::thread::JoinHandle<(usize, usize, bool)>,
    Receiver<()>,
);

/// One prompt's result line (`None`: a blank input line, which has none), with its id and
/// whether it failed.
type Finished = (usize, Option<serde_json::Value>, bool);

struct Run<'a> {
    cluster: &'a ClusterManager,
    options: &'a RunOptions,
    answer_timeout: Duration,
    sticky: bool,
}

/// The run's sessions: bounded, idle ones forgotten.
#[derive(Default)]
struct Sessions {
    map: HashMap<String, (Session, Instant)>,
}

impl Sessions {
    fn get(&mut self, cluster: &ClusterManager, key: String) -> Session {
        let now = Instant::now();
        if let Some((session, used)) = self.map.get_mut(&key) {
            *used = now;
            return session.clone();
        }
        self.map
            .retain(|_, (_, used)| now.duration_since(*used) < SESSION_IDLE);
        if self.map.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        let session = cluster.session(key.clone());
        self.map.insert(key, (session.clone(), now));
        session
    }
}

impl Run<'_> {
    /// Reads, submits and prints until the input ends, a signal arrives or stdout closes.
    /// At most two prompts per instance are outstanding; a slot frees when an answer
    /// arrives (not when it is printed), so one slow prompt never stops the input.
    fn pump(
        &self,
        startup: Startup,
        lines: Receiver<InputLine>,
        signals: &Receiver<Signal>,
        (done_tx, printer, closed_rx): Output,
    ) -> Result<Outcome, String> {
        let window = (2 * self.cluster.len()).max(2);
        let (slots_tx, slots_rx) = bounded::<()>(window);
        for _ in 0..window {
            let _ = slots_tx.send(());
        }
        let outstanding: std::sync::Arc<parking_lot::Mutex<BTreeMap<usize, CancelHandle>>> =
            Default::default();
        let mut sessions = Sessions::default();
        let Startup {
            mut pending,
            next_id: mut id,
            input_open,
            mut outcome,
            ..
        } = startup;
        'input: loop {
            // A free slot first, then a line; a signal or a closed stdout ends either wait.
            select! {
                recv(slots_rx) -> _ => {}
                recv(signals) -> s => { outcome.signal = s.ok(); break 'input; }
                recv(closed_rx) -> _ => { outcome.stdout_closed = true; break 'input; }
            }
            // Lines read while the instances started go first, with what is left of their
            // queue time.
            let (this, raw, deadline) = if let Some((this, raw, read)) = pending.pop_front() {
                let deadline = read + self.options.queue_timeout + self.answer_timeout;
                (this, raw, Some(deadline))
            } else {
                if !input_open {
                    break 'input;
                }
                let raw = select! {
                    recv(lines) -> line => match line {
                        Ok(Ok(raw)) => raw,
                        Ok(Err(e)) => {
                            outcome.ended_by = Some(format!("cannot read stdin: {e}"));
                            break 'input;
                        }
                        Err(_) => break 'input, // end of input
                    },
                    recv(signals) -> s => { outcome.signal = s.ok(); break 'input; }
                    recv(closed_rx) -> _ => { outcome.stdout_closed = true; break 'input; }
                };
                id += 1;
                (id - 1, raw, None)
            };
            if is_blank(&raw) {
                let _ = done_tx.send((this, None, false));
                let _ = slots_tx.send(());
                continue;
            }
            let parsed = match parse_line(self.options.input, this + 1, &raw) {
                Ok(Line::Cancel(target)) => {
                    match outstanding.lock().get(&target) {
                        Some(handle) => handle.cancel(),
                        None => eprintln!(
                            "aim: line {}: nothing to cancel: prompt {target} is not in flight",
                            this + 1
                        ),
                    }
                    let _ = done_tx.send((this, None, false));
                    let _ = slots_tx.send(());
                    continue;
                }
                Ok(Line::Prompt(prompt, session)) => Ok((prompt, session)),
                Err(reason) => Err(reason),
            };
            let submitted = parsed
                .map_err(|reason| (reason, "input"))
                .and_then(|(prompt, session)| {
                    let session = session.or_else(|| self.options.session.clone());
                    let mut request = Request::new(prompt)
                        .stream(self.options.stream)
                        .answer_timeout(self.answer_timeout);
                    if let Some(deadline) = deadline {
                        request = request.deadline(deadline);
                    }
                    match session {
                        Some(_) if !self.sticky => Err((
                            format!(
                                "line {}: sessions need sticky routing (-s sticky, or leave -s out with --input jsonl)",
                                this + 1
                            ),
                            "input",
                        )),
                        Some(key) => sessions
                            .get(self.cluster, key)
                            .submit(request)
                            .map_err(|e| (e.to_string(), e.kind().as_str())),
                        None => self
                            .cluster
                            .submit(request)
                            .map_err(|e| (e.to_string(), e.kind().as_str())),
                    }
                });
            match submitted {
                Ok(ticket) => {
                    outstanding.lock().insert(this, ticket.cancel_handle());
                    self.wait_in_background(
                        this,
                        ticket,
                        done_tx.clone(),
                        slots_tx.clone(),
                        std::sync::Arc::clone(&outstanding),
                    );
                }
                Err((reason, kind)) => {
                    let record = serde_json::json!({"id": this, "error": reason, "kind": kind});
                    let _ = done_tx.send((this, Some(record), true));
                    let _ = slots_tx.send(());
                }
            }
        }
        drop(done_tx);
        if outcome.stdout_closed {
            // Nobody reads the answers: stop the work at once.
            for handle in outstanding.lock().values() {
                handle.cancel();
            }
        } else if let Some(first) = outcome.signal {
            let left = outstanding.lock().len();
            eprintln!(
                "aim: {first}: no more input; finishing {left} prompts in flight (signal again to cancel them)"
            );
            let watch_outstanding = std::sync::Arc::clone(&outstanding);
            let signals = signals.clone();
            std::thread::spawn(move || {
                if let Ok(second) = signals.recv() {
                    eprintln!("aim: {second}: cancelling the prompts in flight");
                    for handle in watch_outstanding.lock().values() {
                        handle.cancel();
                    }
                }
            });
        }
        let (answered, failures, closed) =
            printer.join().map_err(|_| "the output thread panicked")?;
        outcome.answered = answered;
        outcome.failures = failures;
        outcome.stdout_closed |= closed;
        Ok(outcome)
    }

    /// Waits for `ticket` on a thread of its own (one per outstanding prompt: at most the
    /// window), printing its streamed pieces first when asked.
    fn wait_in_background(
        &self,
        id: usize,
        ticket: Ticket,
        done: Sender<Finished>,
        slot: Sender<()>,
        outstanding: std::sync::Arc<parking_lot::Mutex<BTreeMap<usize, CancelHandle>>>,
    ) {
        let stream = self.options.stream;
        std::thread::spawn(move || {
            if stream {
                for chunk in ticket.chunks() {
                    let line = serde_json::json!({"id": id, "chunk": chunk});
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            let answer = ticket.wait();
            outstanding.lock().remove(&id);
            let _ = slot.send(());
            let (record, failed) = match answer {
                Ok(r) => (answer_record(id, &r), false),
                Err(e) => {
                    let mut record =
                        serde_json::json!({"id": id, "error": e.to_string(), "kind": e.kind()});
                    if let aim::Error::Denied { denials, .. } = &e {
                        record["denials"] = serde_json::json!(denials);
                    }
                    if let Some(partial) = e.partial_answer() {
                        record["partial"] = serde_json::json!(partial);
                    }
                    if !e.stderr_lines().is_empty() {
                        record["stderr"] = serde_json::json!(e.stderr_lines());
                    }
                    (record, true)
                }
            };
            let _ = done.send((id, Some(record), failed));
        });
    }
}

/// Prints result lines, in id order or as they come; returns how many were answered, how
/// many failed and whether stdout was closed. Tells the pump at once when stdout closes.
fn print_results(
    done: Receiver<Finished>,
    unordered: bool,
    closed: Sender<()>,
) -> (usize, usize, bool) {
    let (mut answered, mut failures) = (0, 0);
    let mut next = 0usize;
    let mut waiting: BTreeMap<usize, Option<serde_json::Value>> = BTreeMap::new();
    let mut stdout_closed = false;
    let print = |record: &serde_json::Value| -> bool {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{record}").and_then(|()| out.flush()).is_ok()
    };
    for (id, record, failed) in done {
        if failed {
            failures += 1;
        } else if record.is_some() {
            answered += 1;
        }
        if stdout_closed {
            continue;
        }
        let ready: Vec<serde_json::Value> = if unordered {
            record.into_iter().collect()
        } else {
            waiting.insert(id, record);
            let mut ready = Vec::new();
            while let Some(record) = waiting.remove(&next) {
                ready.extend(record);
                next += 1;
            }
            ready
        };
        for record in ready {
            if !print(&record) {
                stdout_closed = true;
                let _ = closed.try_send(());
                break;
            }
        }
    }
    (answered, failures, stdout_closed)
}

/// One answer's output line: what every answer has, plus what the protocol reports
/// (`session_id`, `usage`, `cost_usd`), the tool's stderr and the session's context flags
/// when they apply.
fn answer_record(id: usize, r: &aim::Response) -> serde_json::Value {
    let mut record = serde_json::json!({"id": id, "instance": r.instance,
        "generation": r.generation, "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
        "context_lost": r.context_lost, "text": r.text});
    if let Some(host) = &r.host {
        record["host"] = host.as_str().into();
    }
    if !r.stderr.is_empty() {
        record["stderr"] = r.stderr.as_str().into();
    }
    if let Some(session) = &r.session_id {
        record["session_id"] = session.as_str().into();
    }
    if let Some(usage) = r.usage {
        record["usage"] = serde_json::json!(usage);
    }
    if let Some(cost) = r.cost_usd {
        record["cost_usd"] = cost.into();
    }
    if !r.denials.is_empty() {
        record["denials"] = serde_json::json!(r.denials);
    }
    if !r.files_edited.is_empty() {
        record["files_edited"] = serde_json::json!(r.files_edited);
    }
    if r.context_restored {
        record["context_restored"] = true.into();
    }
    if r.context_mixed {
        record["context_mixed"] = true.into();
    }
    if let Some(note) = &r.context_note {
        record["context_note"] = note.as_str().into();
    }
    if let Some(workspace) = &r.workspace {
        record["workspace"] = workspace.to_string_lossy().into();
        record["changed_files"] = serde_json::json!(r.changed_files);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_are_text_or_strict_json() {
        assert_eq!(
            parse_line(InputMode::Text, 1, b"{1: 2}\n").unwrap(),
            Line::Prompt("{1: 2}".into(), None)
        );
        assert_eq!(
            parse_line(InputMode::Jsonl, 1, br#"{"prompt":"hi","session":"a"}"#).unwrap(),
            Line::Prompt("hi".into(), Some("a".into()))
        );
        assert_eq!(
            parse_line(InputMode::Jsonl, 1, br#"{"cancel": 7}"#).unwrap(),
            Line::Cancel(7)
        );
        assert!(parse_line(InputMode::Jsonl, 1, br#"{"cancel": 7, "prompt": "x"}"#).is_err());
        assert!(parse_line(InputMode::Jsonl, 1, br#"{}"#).is_err());
        let unknown = parse_line(InputMode::Jsonl, 3, br#"{"prompt":"hi","sesion":"a"}"#);
        let unknown = unknown.unwrap_err();
        assert!(
            unknown.starts_with("line 3 column ") && unknown.contains(": unknown field `sesion`"),
            "{unknown}"
        );
        assert!(parse_line(InputMode::Jsonl, 1, b"{broken").is_err());
        let broken = parse_line(InputMode::Jsonl, 4, b"{x}").unwrap_err();
        assert_eq!(broken, "line 4 column 2: key must be a string");
        let bad = parse_line(InputMode::Text, 2, b"ok \xff bytes\n").unwrap_err();
        assert!(bad.contains("line 2: invalid UTF-8 at byte 3"), "{bad}");
    }

    #[test]
    fn exit_codes_say_how_the_run_ended() {
        let mut o = Outcome::default();
        assert_eq!(o.exit_code(), 0);
        o.failures = 2;
        assert_eq!(o.exit_code(), 1);
        o.stdout_closed = true;
        assert_eq!(o.exit_code(), 141);
        o.signal = Some(Signal::SIGINT);
        assert_eq!(o.exit_code(), 130);
        o.signal = Some(Signal::SIGTERM);
        assert_eq!(o.exit_code(), 143);
    }
}
