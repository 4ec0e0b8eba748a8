//! The `aim` command: run prompts through a cluster of interactive tools, soak-test one, list
//! the known tools.

mod args;
mod report;
mod run;
mod soak;

use std::process::ExitCode;

const USAGE: &str = "\
aim: supervise a cluster of interactive command-line tools

USAGE:
    aim run [TOOL] [OPTIONS]    prompts from stdin, one JSON answer per line on stdout
    aim soak [TOOL] [OPTIONS]   soak test with chaos: nothing may be lost
    aim tools [--tools FILE]    list the known tools
    aim help [COMMAND]          this text, or a command's

TOOL defaults to `demo`, the built-in demo agent, so every command works with nothing
installed. Logs go to stderr; set RUST_LOG=aim=debug for more.";

const TOOLS_USAGE: &str = "\
aim tools [--tools FILE]

Lists the known tools: the built-ins plus those in FILE (default: $AIM_TOOLS, if set).";

fn main() -> ExitCode {
    aim::demo::serve_if_requested();
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
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    }
}

fn tools(args: &[String]) -> Result<ExitCode, String> {
    let mut cluster_args = args::ClusterArgs::new(1, aim::Strategy::RoundRobin);
    let mut p = args::Parser::new(args, TOOLS_USAGE);
    while let Some(arg) = p.next() {
        match arg {
            "-h" | "--help" => {
                println!("{TOOLS_USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            "--tools" => cluster_args.tools_file = Some(p.value(arg)?.to_string()),
            _ => return Err(p.unknown(arg)),
        }
    }
    for spec in cluster_args.registry()?.iter() {
        let framing = serde_json::to_value(&spec.framing)
            .ok()
            .and_then(|v| v["kind"].as_str().map(str::to_string))
            .unwrap_or_default();
        println!(
            "{:10} {:8} {} {}",
            spec.name,
            framing,
            spec.program,
            spec.args.join(" ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
