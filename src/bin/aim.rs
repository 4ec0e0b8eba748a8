//! The `aim` command: run prompts through a cluster of interactive tools.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use aim::{ToolProcessPool, ToolRegistry};

const USAGE: &str = "\
aim: supervise a cluster of interactive command-line tools

USAGE:
    aim run [TOOL] [-n COUNT] [--tools FILE]   prompts from stdin, one JSON answer per line
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
    tools_file: Option<String>,
}

fn parse_common(args: &[String]) -> Result<Common, String> {
    let mut common = Common {
        tool: "demo".into(),
        count: 2,
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

fn run_prompts(common: &Common) -> Result<ExitCode, String> {
    let spec = registry(common)?
        .resolve(&common.tool)
        .map_err(|e| e.to_string())?;
    let pool = ToolProcessPool::new(spec, common.count).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut failures = 0;
    for (id, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
        let answer = pool.send_to(id % pool.len(), line);
        let record = match &answer {
            Ok(r) => serde_json::json!({"id": id, "instance": r.instance,
                "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0, "text": r.text}),
            Err(e) => {
                failures += 1;
                serde_json::json!({"id": id, "error": e.to_string(), "kind": e.kind()})
            }
        };
        let mut out = stdout.lock();
        let _ = writeln!(out, "{record}");
    }
    pool.shutdown();
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
