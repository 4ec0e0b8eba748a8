//! `aim soak`: concurrent senders, random SIGKILLs, a progress line, and a verdict that every
//! prompt is accounted for.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aim::{
    BackoffConfig, BreakerConfig, BudgetConfig, ClusterManager, InstanceState, Request, Strategy,
    SupervisionConfig,
};
use crossbeam_channel::{select, tick};

use crate::args::{ClusterArgs, Parser};

pub const USAGE: &str = "\
aim soak [TOOL] [-n COUNT] [--duration D] [--chaos-kill-every D] [--rate R] [--senders N]
         [--strategy S] [--prompt TEMPLATE] [--expect TEMPLATE] [--tools FILE]
         [--metrics-addr ADDR]

Runs a soak test: SENDERS threads send prompts to a cluster of COUNT instances of TOOL
(default: the built-in demo agent, 4 instances) for DURATION while a chaos thread SIGKILLs a
random ready instance every interval. A progress line is printed every second; at the end a
verdict checks that every prompt was answered or failed with an error other than `shutdown`
(none lost: a prompt dropped unanswered ends that way), that every
answer belongs to its own prompt (none crossed or duplicated), that no zombie is left, that
no file descriptor leaked, and reports the supervisor's memory growth. Exit code 1 if any
check fails.

  -n, --count N              instances (default 4)
  -d, --duration D           how long to send, e.g. 30s, 2m (default 10s)
  -k, --chaos-kill-every D   SIGKILL interval; 0 turns chaos off (default 1s)
  -r, --rate R               prompts per second over all senders (default: as fast as possible)
      --senders N            sender threads (default 8)
  -s, --strategy S           least-busy (default, unlike `aim run`; below), round-robin
                             or sticky
      --prompt TEMPLATE      the prompt; {id} becomes a unique id (default \"soak {id}\")
      --expect TEMPLATE      text each answer must contain (default \"{id}\" for the demo
                             agent, nothing for other tools)
      --tools FILE           a JSON tools file (default: $AIM_TOOLS, if set)
      --start-at-once K      start at most K instances at a time (default: all)
      --min-ready N          begin once N instances are ready (default: all)
      --raise-fd-limit       raise the soft open-file limit when the instances need it
      --max-rss SIZE         memory limit per instance (500M, 2G), as for `aim run`
      --metrics-addr A       serve Prometheus metrics at http://A/metrics while running
                             (a bare port means 127.0.0.1:PORT)

Least-busy is the default here, unlike `aim run` (round-robin): a soak keeps SENDERS prompts
in flight at once while chaos kills instances, and least-busy sends each prompt to the
instance with the fewest pending, so no queue grows behind a restarting instance. `aim run`
spreads its prompts in turn.

The soak tunes supervision for chaos: restarts back off from 50 ms to 2 s, a second of health
resets the backoff, and the restart budget and breaker are wide, so kills never exhaust them.";

struct SoakArgs {
    cluster: ClusterArgs,
    duration: Duration,
    chaos: Duration,
    rate: Option<f64>,
    senders: usize,
    prompt: String,
    expect: Option<String>,
}

fn parse(args: &[String]) -> Result<Option<SoakArgs>, String> {
    let mut a = SoakArgs {
        cluster: ClusterArgs::new(4, Strategy::LeastBusy),
        duration: Duration::from_secs(10),
        chaos: Duration::from_secs(1),
        rate: None,
        senders: 8,
        prompt: "soak {id}".into(),
        expect: None,
    };
    let mut expect_set = false;
    let mut p = Parser::new(args, USAGE);
    while let Some(arg) = p.next() {
        match arg {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "-d" | "--duration" => a.duration = p.duration(arg)?,
            "-k" | "--chaos-kill-every" => a.chaos = p.duration(arg)?,
            "-r" | "--rate" => {
                let rate: f64 = p.number(arg)?;
                if !(rate > 0.0 && rate.is_finite()) {
                    return Err("--rate must be a positive number".into());
                }
                a.rate = Some(rate);
            }
            "--senders" => a.senders = p.number(arg)?,
            "--prompt" => a.prompt = p.value(arg)?.to_string(),
            "--expect" => {
                a.expect = Some(p.value(arg)?.to_string()).filter(|e| !e.is_empty());
                expect_set = true;
            }
            _ if p.cluster_flag(arg, &mut a.cluster)? => {}
            _ => return Err(p.unknown(arg)),
        }
    }
    if a.senders == 0 {
        return Err("--senders must be at least 1".into());
    }
    if !expect_set && a.cluster.tool.as_deref().unwrap_or("demo") == "demo" {
        a.expect = Some("{id}".into());
    }
    Ok(Some(a))
}

fn supervision() -> SupervisionConfig {
    SupervisionConfig::default()
        .backoff(
            BackoffConfig::default()
                .base(Duration::from_millis(50))
                .max(Duration::from_secs(2))
                .reset_after(Duration::from_secs(1)),
        )
        .budget(BudgetConfig::default().max_restarts(u32::MAX))
        .breaker(BreakerConfig::default().failure_threshold(u32::MAX))
}

/// What one sender saw.
#[derive(Debug, Default)]
struct Tally {
    submitted: u64,
    answered: u64,
    failed: std::collections::BTreeMap<&'static str, u64>,
    crossed: u64,
    first_crossed: Option<String>,
}

struct Shared {
    stop: AtomicBool,
    answered: AtomicU64,
    failed: AtomicU64,
}

fn sender(
    cluster: ClusterManager,
    shared: Arc<Shared>,
    index: usize,
    prompt: String,
    expect: Option<String>,
    interval: Option<Duration>,
    stop_rx: crossbeam_channel::Receiver<()>,
) -> Tally {
    let mut tally = Tally::default();
    let mut next_at = Instant::now();
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(interval) = interval {
            next_at += interval;
            // Paces the sender; returns at once when the soak stops.
            if stop_rx.recv_deadline(next_at).is_ok() {
                break;
            }
        }
        let id = format!("{index}-{seq}");
        seq += 1;
        let text = prompt.replace("{id}", &id);
        tally.submitted += 1;
        match cluster.send(Request::new(text).timeout(Duration::from_secs(60))) {
            Ok(r) => {
                tally.answered += 1;
                shared.answered.fetch_add(1, Ordering::Relaxed);
                if let Some(expect) = &expect {
                    let wanted = expect.replace("{id}", &id);
                    if !contains_token(&r.text, &wanted) {
                        tally.crossed += 1;
                        tally
                            .first_crossed
                            .get_or_insert_with(|| format!("{wanted:?} got {:?}", r.text));
                    }
                }
            }
            Err(e) => {
                *tally.failed.entry(e.kind().as_str()).or_default() += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tally
}

/// `wanted` appears in `text` not followed by another digit (so `1-2` is not found in `1-23`).
fn contains_token(text: &str, wanted: &str) -> bool {
    text.match_indices(wanted).any(|(i, _)| {
        !text[i + wanted.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

fn chaos(
    cluster: ClusterManager,
    every: Duration,
    stop_rx: crossbeam_channel::Receiver<()>,
) -> u64 {
    let mut kills = 0;
    let mut rng = u64::from(std::process::id()) | 1;
    let ticker = tick(every);
    loop {
        select! {
            recv(ticker) -> _ => {}
            recv(stop_rx) -> _ => return kills,
        }
        let ready: Vec<i32> = cluster
            .status()
            .iter()
            .filter(|s| s.state == InstanceState::Ready && s.pid > 0)
            .map(|s| s.pid)
            .collect();
        if ready.is_empty() {
            continue;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let pid = ready[(rng % ready.len() as u64) as usize];
        if nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
        {
            kills += 1;
        }
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    aim::resident_memory_bytes(std::process::id() as i32, false).unwrap_or(0) / 1024
}

/// Zombies whose parent is this process (a reaping bug).
fn our_zombies() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| {
                    let rest = stat.rsplit(')').next().unwrap_or("");
                    let mut f = rest.split_whitespace();
                    f.next() == Some("Z") && f.next().and_then(|p| p.parse().ok()) == Some(me)
                })
                .unwrap_or(false)
        })
        .collect()
}

pub fn main(args: &[String]) -> Result<ExitCode, String> {
    let Some(a) = parse(args)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let signals = crate::signals::install()?;
    let fds_before = open_fds();
    let cluster = a
        .cluster
        .builder()?
        .supervision(supervision())
        .launch()
        .map_err(|e| e.to_string())?;
    let server = match &a.cluster.metrics_addr {
        Some(addr) => Some(cluster.serve_metrics(addr).map_err(|e| e.to_string())?),
        None => None,
    };
    let rss_start = rss_kib();
    eprintln!(
        "aim soak: {} x {} ({}), {} senders, {:?}, chaos {}",
        a.cluster.count,
        cluster.spec().name,
        cluster.router_name(),
        a.senders,
        a.duration,
        if a.chaos.is_zero() {
            "off".to_string()
        } else {
            format!("every {:?}", a.chaos)
        }
    );
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        answered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let interval = a
        .rate
        .map(|r| Duration::from_secs_f64(a.senders as f64 / r));
    let senders: Vec<_> = (0..a.senders)
        .map(|i| {
            let (cluster, shared, stop_rx) = (cluster.clone(), shared.clone(), stop_rx.clone());
            let (prompt, expect) = (a.prompt.clone(), a.expect.clone());
            std::thread::spawn(move || {
                sender(cluster, shared, i, prompt, expect, interval, stop_rx)
            })
        })
        .collect();
    let chaos_thread = (!a.chaos.is_zero()).then(|| {
        let (cluster, stop_rx) = (cluster.clone(), stop_rx.clone());
        let every = a.chaos;
        std::thread::spawn(move || chaos(cluster, every, stop_rx))
    });

    let started = Instant::now();
    let end = started + a.duration;
    let ticker = tick(Duration::from_secs(1));
    let mut last = 0u64;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut interrupted = None;
    while Instant::now() < end {
        select! {
            recv(ticker) -> _ => {}
            recv(signals) -> signal => {
                // Stop early: the verdict covers the time it ran.
                interrupted = signal.ok();
                break;
            }
            default(end.saturating_duration_since(Instant::now())) => break,
        }
        let answered = shared.answered.load(Ordering::Relaxed);
        let m = cluster.metrics();
        let line = format!(
            "[{:>5.1}s] {:>7}/s  answered {:>8}  failed {:>5}  p50 {:>7.2}ms  p99 {:>7.2}ms  restarts {:>4}  in flight {:>3}",
            started.elapsed().as_secs_f64(),
            answered - last,
            answered,
            shared.failed.load(Ordering::Relaxed),
            m.cluster.latency.p50_s.unwrap_or(0.0) * 1000.0,
            m.cluster.latency.p99_s.unwrap_or(0.0) * 1000.0,
            m.cluster.restarts,
            m.cluster.in_flight,
        );
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
        last = answered;
    }
    if tty {
        eprintln!();
    }
    shared.stop.store(true, Ordering::Relaxed);
    drop(stop_tx);
    let tallies: Vec<Tally> = senders
        .into_iter()
        .map(|h| h.join().map_err(|_| "a sender thread panicked".to_string()))
        .collect::<Result<_, _>>()?;
    let kills = match chaos_thread {
        Some(h) => h.join().map_err(|_| "the chaos thread panicked")?,
        None => 0,
    };
    let sending = started.elapsed();
    let metrics = cluster.metrics();
    let rss_end = rss_kib();
    drop(server);
    let report = cluster.shutdown();
    drop(cluster);
    let zombies = our_zombies();
    let fds_after = open_fds();

    let submitted: u64 = tallies.iter().map(|t| t.submitted).sum();
    let answered: u64 = tallies.iter().map(|t| t.answered).sum();
    let crossed: u64 = tallies.iter().map(|t| t.crossed).sum();
    let mut failed = std::collections::BTreeMap::<&str, u64>::new();
    for t in &tallies {
        for (k, v) in &t.failed {
            *failed.entry(k).or_default() += v;
        }
    }
    let failed_total: u64 = failed.values().sum();
    // A prompt the cluster dropped unanswered ends as a `shutdown` error while the cluster
    // is still running (the senders stop before the shutdown): that is a lost prompt. So is
    // one that never came back at all.
    let lost = submitted.saturating_sub(answered + failed_total)
        + failed.get("shutdown").copied().unwrap_or(0);
    let fd_leak = fds_after.saturating_sub(fds_before);
    let pass =
        lost == 0 && crossed == 0 && zombies.is_empty() && fd_leak == 0 && report.all_reaped();
    let c = &metrics.cluster;
    let ms = |s: Option<f64>| s.map(|s| s * 1000.0).unwrap_or(0.0);
    eprintln!("aim soak: {}", if pass { "PASS" } else { "FAIL" });
    eprintln!(
        "  prompts   {submitted} sent, {answered} answered, {failed_total} failed {failed:?}, {lost} lost, {crossed} crossed"
    );
    eprintln!(
        "  speed     {:.0} answers/s, p50 {:.2} ms, p99 {:.2} ms",
        answered as f64 / sending.as_secs_f64(),
        ms(c.latency.p50_s),
        ms(c.latency.p99_s)
    );
    eprintln!("  chaos     {kills} kills, {} restarts", c.restarts);
    eprintln!(
        "  cleanup   {} zombies, {} leaked fds ({fds_before} before, {fds_after} after), all reaped: {}",
        zombies.len(),
        fd_leak,
        report.all_reaped()
    );
    eprintln!(
        "  memory    supervisor RSS {rss_start} KiB -> {rss_end} KiB ({:+} KiB)",
        rss_end as i64 - rss_start as i64
    );
    if let Some(example) = tallies.iter().find_map(|t| t.first_crossed.as_ref()) {
        eprintln!("  first crossed answer: {example}");
    }
    println!(
        "{}",
        serde_json::json!({
            "verdict": if pass { "pass" } else { "fail" },
            "submitted": submitted, "answered": answered, "failed": failed_total,
            "failed_by_kind": failed, "lost": lost, "crossed": crossed,
            "kills": kills, "restarts": c.restarts,
            "answers_per_s": answered as f64 / sending.as_secs_f64(),
            "p50_ms": ms(c.latency.p50_s), "p99_ms": ms(c.latency.p99_s),
            "zombies": zombies.len(), "leaked_fds": fd_leak,
            "rss_start_kib": rss_start, "rss_end_kib": rss_end,
            "duration_s": sending.as_secs_f64(),
        })
    );
    if let Some(signal) = interrupted {
        eprintln!(
            "aim soak: stopped by {signal} after {:.1}s",
            sending.as_secs_f64()
        );
        return Ok(ExitCode::from(crate::signals::exit_code(signal)));
    }
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_do_not_match_longer_ids() {
        assert!(contains_token("You said: soak 1-2\n", "1-2"));
        assert!(!contains_token("You said: soak 1-23\n", "1-2"));
        assert!(contains_token("1-23 and 1-2", "1-2"));
    }

    #[test]
    fn soak_defaults_expect_ids_only_for_the_demo() {
        let a = parse(&[]).unwrap().unwrap();
        assert_eq!(a.expect.as_deref(), Some("{id}"));
        let a = parse(&["python".to_string()]).unwrap().unwrap();
        assert_eq!(a.expect, None);
        assert!(parse(&["--rate".into(), "-3".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
    }
}
