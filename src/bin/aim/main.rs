//! The `aim` command: run prompts through a cluster of interactive tools, soak-test one, list
//! the known tools.

mod args;
mod report;
mod run;
mod signals;
mod soak;

use std::process::ExitCode;

const USAGE: &str = "\
aim: supervise a cluster of interactive command-line tools

USAGE:
    aim run [TOOL] [OPTIONS]    prompts from stdin, one JSON answer per line on stdout
    aim soak [TOOL] [OPTIONS]   soak test with chaos: nothing may be lost
    aim tools [ID] [--tools FILE]  list the known tools, or print one as a tools file
    aim help [COMMAND]          this text, or a command's

TOOL defaults to `demo`, the built-in demo agent, so every command works with nothing
installed. Logs go to stderr; set RUST_LOG=aim=debug for more.";

const TOOLS_USAGE: &str = "\
aim tools [ID] [--tools FILE]

Without ID, lists the known tools (the built-ins plus those in FILE, default: $AIM_TOOLS if
set): id, protocol, command. With ID, prints that tool's full spec as a tools file (JSON)
to copy and change, e.g.:
  aim tools aider > my-tools.json   # edit, then: aim run aider --tools my-tools.json";

fn main() -> ExitCode {
    aim::demo::serve_if_requested();
    // Fork the guardian while this process is small; it kills every tool we start if we die.
    let _ = aim::start_guardian();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // A soak kills instances on purpose: their exits are expected, not warnings.
    let default_level = if args.first().map(String::as_str) == Some("soak") {
        "aim=error"
    } else {
        "aim=warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .init();
    match dispatch(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("aim: {message}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(args: &[String]) -> Result<ExitCode, String> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(ExitCode::SUCCESS);
    };
    match command.as_str() {
        "run" => run::main(rest),
        "relay" => Ok(ExitCode::from(aim::run_relay(rest) as u8)),
        "soak" => soak::main(rest),
        "tools" => tools(rest),
        "help" | "--help" | "-h" => {
            let text = match rest.first().map(String::as_str) {
                Some("run") => run::USAGE,
                Some("soak") => soak::USAGE,
                Some("tools") => TOOLS_USAGE,
                _ => USAGE,
            };
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!(
            "unknown command {other:?} (run, soak, tools; see `aim help`)"
        )),
    }
}

fn tools(args: &[String]) -> Result<ExitCode, String> {
    let mut cluster_args = args::ClusterArgs::new(1, aim::Strategy::RoundRobin);
    let mut p = args::Parser::new(args, TOOLS_USAGE);
    let mut id = None;
    while let Some(arg) = p.next() {
        match arg {
            "-h" | "--help" => {
                println!("{TOOLS_USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            "--tools" => cluster_args.tools_file = Some(p.value(arg)?.to_string()),
            other if !other.starts_with('-') && id.is_none() => id = Some(other.to_string()),
            _ => return Err(p.unknown(arg)),
        }
    }
    let registry = cluster_args.registry()?;
    if let Some(id) = id {
        let spec = registry.get(&id).map_err(|e| e.to_string())?;
        let file = serde_json::json!({ id: spec });
        let text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    for spec in registry.iter() {
        println!(
            "{:10} {:18} {} {}",
            spec.name,
            protocol_label(spec),
            spec.program,
            spec.args.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `aider`, or for the framed protocol `framed:` and the framing (`framed:prompt`).
fn protocol_label(spec: &aim::ToolSpec) -> String {
    let kind = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    match spec.protocol {
        aim::protocol::ProtocolKind::Framed => {
            format!("framed:{}", kind(serde_json::to_value(&spec.framing)))
        }
        other => kind(serde_json::to_value(other)),
    }
}
