//! The `aim` command: run prompts through a cluster of interactive tools.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use aim::{ClusterManager, Strategy, ToolRegistry};

const USAGE: &str = "\
aim: supervise a cluster of interactive command-line tools

USAGE:
    aim run [TOOL] [-n COUNT] [--strategy S] [--tools FILE]
        prompts from stdin (text lines, or JSON lines with \"prompt\" and \"session\"),
        one JSON answer per line on stdout, in input order
    aim tools [--tools FILE]                   list the known tools
    aim help                                   this text

TOOL defaults to `demo`, the built-in demo agent.";

fn main() -> ExitCode {
    aim::demo::serve_if_requested();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("aim=warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("aim: {message}");
            ExitCode::from(2)
        }
    }
}

struct Common {
    tool: String,
    count: usize,
    strategy: Strategy,
    tools_file: Option<String>,
}

fn parse_common(args: &[String]) -> Result<Common, String> {
    let mut common = Common {
        tool: "demo".into(),
        count: 2,
        strategy: Strategy::RoundRobin,
        tools_file: None,
    };
    let mut it = args.iter();
    let mut positional = 0;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-n" | "--count" => {
                let v = it.next().ok_or("-n needs a number")?;
                common.count = v.parse().map_err(|_| format!("not a count: {v}"))?;
            }
            "-s" | "--strategy" => {
                let v = it.next().ok_or("--strategy needs a name")?;
                common.strategy = v.parse().map_err(|e: aim::Error| e.to_string())?;
            }
            "--tools" => common.tools_file = Some(it.next().ok_or("--tools needs a file")?.clone()),
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}\n\n{USAGE}")),
            tool if positional == 0 => {
                common.tool = tool.to_string();
                positional += 1;
            }
            extra => return Err(format!("unexpected argument {extra}\n\n{USAGE}")),
        }
    }
    Ok(common)
}

fn registry(common: &Common) -> Result<ToolRegistry, String> {
    let registry = match &common.tools_file {
        Some(path) => ToolRegistry::from_path(path),
        None => ToolRegistry::from_env(),
    };
    registry.map_err(|e| e.to_string())
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    match command.as_str() {
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        "tools" => {
            let common = parse_common(rest)?;
            for spec in registry(&common)?.iter() {
                println!("{:10} {} {}", spec.name, spec.program, spec.args.join(" "));
            }
            Ok(ExitCode::SUCCESS)
        }
        "run" => run_prompts(&parse_common(rest)?),
        other => Err(format!("unknown command {other}\n\n{USAGE}")),
    }
}

/// One line of `aim run` input: plain text, or JSON with `prompt` and optional `session`.
fn parse_input(line: &str) -> Result<(String, Option<String>), String> {
    if !line.trim_start().starts_with('{') {
        return Ok((line.to_string(), None));
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON input line: {e}"))?;
    let prompt = value["prompt"]
        .as_str()
        .ok_or("a JSON input line needs a string field \"prompt\"")?
        .to_string();
    let session = value["session"].as_str().map(str::to_string);
    Ok((prompt, session))
}

fn run_prompts(common: &Common) -> Result<ExitCode, String> {
    let spec = registry(common)?
        .resolve(&common.tool)
        .map_err(|e| e.to_string())?;
    let cluster = ClusterManager::builder(spec)
        .count(common.count)
        .strategy(common.strategy)
        .launch()
        .map_err(|e| e.to_string())?;
    // Prompts are submitted as they are read; a printer thread writes answers in input order.
    let (tx, rx) = crossbeam_channel::bounded::<(usize, Result<aim::Ticket, aim::Error>)>(256);
    let printer = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let mut failures = 0usize;
        for (id, submitted) in rx {
            let record = match submitted.and_then(|ticket| ticket.wait()) {
                Ok(r) => serde_json::json!({"id": id, "instance": r.instance,
                    "generation": r.generation, "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
                    "context_lost": r.context_lost, "text": r.text}),
                Err(e) => {
                    failures += 1;
                    serde_json::json!({"id": id, "error": e.to_string(), "kind": e.kind()})
                }
            };
            let mut out = stdout.lock();
            let _ = writeln!(out, "{record}");
            let _ = out.flush();
        }
        failures
    });
    let mut sessions: std::collections::HashMap<String, aim::Session> = Default::default();
    let mut input_error = None;
    for (id, line) in std::io::stdin().lock().lines().enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                input_error = Some(format!("cannot read stdin: {e}"));
                break;
            }
        };
        let submitted = match parse_input(&line) {
            Ok((prompt, Some(key))) => sessions
                .entry(key.clone())
                .or_insert_with(|| cluster.session(key))
                .submit(prompt),
            Ok((prompt, None)) => cluster.submit(prompt),
            Err(message) => Err(aim::Error::InvalidPrompt {
                reason: message,
                prompt: line.clone(),
            }),
        };
        if tx.send((id, submitted)).is_err() {
            break;
        }
    }
    drop(tx);
    let failures = printer.join().map_err(|_| "the output thread panicked")?;
    let metrics = cluster.health();
    drop(sessions);
    let report = cluster.shutdown();
    eprintln!(
        "aim: {} instances, {} healthy at the end, {} prompts failed, shut down in {:?}",
        metrics.instances.len(),
        metrics.healthy,
        failures,
        report.took
    );
    if let Some(message) = input_error {
        return Err(message);
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
