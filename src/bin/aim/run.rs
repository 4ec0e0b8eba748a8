//! `aim run`: prompts from stdin through a cluster, one JSON answer per line on stdout.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;

use aim::{ClusterManager, Session, Strategy, Ticket};

use crate::args::{ClusterArgs, Parser};
use crate::report::print_metrics_summary;

pub const USAGE: &str = "\
aim run [TOOL] [-n COUNT] [--strategy S] [--tools FILE] [--metrics-addr ADDR]

Launches COUNT instances of TOOL (default: the built-in demo agent, 2 instances), reads
prompts from stdin, one per line (or JSON lines with \"prompt\" and optional \"session\"),
and writes one JSON line per answer to stdout, in input order:
  {\"id\":0,\"instance\":1,\"generation\":1,\"elapsed_ms\":0.4,\"context_lost\":false,\"text\":\"...\"}
  (plus \"session_id\", \"usage\" and \"cost_usd\" when the tool reports them)
  {\"id\":1,\"error\":\"...\",\"kind\":\"timeout\"}
A metrics summary goes to stderr at the end. Exit code 1 if any prompt failed.

  -n, --count N         instances (default 2)
  -s, --strategy S      round-robin (default), least-busy or sticky
      --tools FILE      a JSON tools file (default: $AIM_TOOLS, if set)
      --start-at-once K start at most K instances at a time (default: all at once;
                        heavy agents such as aider on few cores: 1 or 2)
      --min-ready N     start answering once N instances are ready; the rest keep
                        starting (default: all must start, or the run fails)
      --raise-fd-limit  raise the soft open-file limit up to the hard one when COUNT
                        instances need it (about 5 descriptors each)
      --stream          also print each answer's text as it arrives, as JSON lines
                        tagged with the prompt id, before that prompt's answer line:
                          {\"id\":0,\"chunk\":\"...\"}
      --metrics-addr A  serve Prometheus metrics at http://A/metrics while running
                        (a bare port means 127.0.0.1:PORT)";

pub fn main(args: &[String]) -> Result<ExitCode, String> {
    let mut cluster_args = ClusterArgs::new(2, Strategy::RoundRobin);
    let mut p = Parser::new(args, USAGE);
    let mut stream = false;
    while let Some(arg) = p.next() {
        if arg == "-h" || arg == "--help" {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        if arg == "--stream" {
            stream = true;
            continue;
        }
        if !p.cluster_flag(arg, &mut cluster_args)? {
            return Err(p.unknown(arg));
        }
    }
    let cluster = cluster_args
        .builder()?
        .launch()
        .map_err(|e| e.to_string())?;
    let _server = match &cluster_args.metrics_addr {
        Some(addr) => Some(cluster.serve_metrics(addr).map_err(|e| e.to_string())?),
        None => None,
    };
    let outcome = pump(&cluster, stream);
    print_metrics_summary(&cluster.metrics());
    let report = cluster.shutdown();
    log::debug!("shut down in {:?}", report.took);
    let failures = outcome?;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line of input: plain text, or JSON with `prompt` and optional `session`.
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
    Ok((prompt, value["session"].as_str().map(str::to_string)))
}

/// A prompt on its way: its id, its ticket (or why it was refused), and the thread printing
/// its streamed pieces.
type Outstanding = (
    usize,
    aim::Result<Ticket>,
    Option<std::thread::JoinHandle<()>>,
);

/// Submits prompts as they are read; a printer thread writes answers in input order.
/// At most two prompts per instance are outstanding: reading stops while the window is full,
/// so a long input never queues prompts until they time out. Returns how many failed.
fn pump(cluster: &ClusterManager, stream: bool) -> Result<usize, String> {
    let window = (2 * cluster.len()).max(2);
    let (tx, rx) = crossbeam_channel::bounded::<Outstanding>(window);
    let printer = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let mut failures = 0usize;
        for (id, submitted, chunk_printer) in rx {
            let answer = submitted.and_then(Ticket::wait);
            // Every piece of a streamed answer is printed before the answer itself.
            if let Some(printer) = chunk_printer {
                let _ = printer.join();
            }
            let record = match answer {
                Ok(r) => answer_record(id, &r),
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
    let mut sessions: HashMap<String, Session> = HashMap::new();
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
                .submit(aim::Request::new(prompt).stream(stream)),
            Ok((prompt, None)) => cluster.submit(aim::Request::new(prompt).stream(stream)),
            Err(reason) => Err(aim::Error::InvalidPrompt {
                reason,
                prompt: line.clone(),
            }),
        };
        let chunk_printer = match &submitted {
            Ok(ticket) if stream => Some(print_chunks(id, ticket.chunks())),
            _ => None,
        };
        if tx.send((id, submitted, chunk_printer)).is_err() {
            break;
        }
    }
    drop(tx);
    let failures = printer.join().map_err(|_| "the output thread panicked")?;
    match input_error {
        Some(e) => Err(e),
        None => Ok(failures),
    }
}

/// Prints a streamed prompt's pieces as they arrive, on a thread of their own (at most the
/// window of outstanding prompts run at once); each ends when its answer does.
fn print_chunks(id: usize, chunks: aim::Chunks) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for chunk in chunks {
            let line = serde_json::json!({"id": id, "chunk": chunk});
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    })
}

/// One answer's output line: what every answer has, plus what the protocol reports
/// (`session_id`, `usage`, `cost_usd`) when it does.
fn answer_record(id: usize, r: &aim::Response) -> serde_json::Value {
    let mut record = serde_json::json!({"id": id, "instance": r.instance,
        "generation": r.generation, "elapsed_ms": r.elapsed.as_secs_f64() * 1000.0,
        "context_lost": r.context_lost, "text": r.text});
    if let Some(session) = &r.session_id {
        record["session_id"] = session.as_str().into();
    }
    if let Some(usage) = r.usage {
        record["usage"] = serde_json::json!(usage);
    }
    if let Some(cost) = r.cost_usd {
        record["cost_usd"] = cost.into();
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_lines_are_text_or_json() {
        assert_eq!(parse_input("hello").unwrap(), ("hello".into(), None));
        assert_eq!(
            parse_input(r#"{"prompt":"hi","session":"a"}"#).unwrap(),
            ("hi".into(), Some("a".into()))
        );
        assert!(parse_input(r#"{"text":"hi"}"#).is_err());
        assert!(parse_input("{broken").is_err());
    }
}
