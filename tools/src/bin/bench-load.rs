//! Load benchmark: a real hub process, a local receiver that verifies every signature, and the
//! figures of the README's Performance section.
//!
//! ```text
//! cargo run --release -p integrations-hub-tools --bin bench-load -- [options]
//! ```
//!
//! See `--help` for the options and [`integrations_hub_tools::bench`] for what each phase does.
//! The hub it starts is this same executable re-run as `serve-hub`, which runs exactly what the
//! `integrations-hub` binary's `serve` runs (same library, same release profile), so one
//! `cargo run` builds and measures everything.

// A benchmark's output is its report.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

use integrations_hub_testkit::Backend;
use integrations_hub_tools::bench::{self, Options};

const USAGE: &str = "\
bench-load: publishes events to a real hub and measures delivery end to end.

Usage: bench-load [options]

  --backend sqlite|postgres|both   databases to measure (default both; Postgres from
                                   IH_TEST_POSTGRES_URL, a fresh database per run)
  --subscriptions K                subscriptions, each gets every event (default 1)
  --events N                       single-POST phase events (default 30000; 0 skips)
  --batch-events N                 batch phase events, the backlog to drain (default 100000)
  --batch-size N                   events per batch request, 1..1000 (default 500)
  --rate R                         open-loop rate of the latency phase, events/s (default 2500;
                                   0 skips the phase)
  --low-rate R                     open-loop rate of the low-rate phase, events/s (default 400;
                                   0 skips the phase)
  --seconds S                      length of each open-loop phase (default 10)
  --payload BYTES                  payload size (default 1024)
  --publishers N                   concurrent publishing connections (default 64)
  --quick                          a few hundred events: checks the benchmark works
  --hub-env KEY=VALUE              extra IH_* setting for the hub (repeatable)
  --hub PROGRAM                    measure the hub of another bench-load executable (its
                                   `serve-hub`), e.g. an older build, under this harness
  --filter JSON                    a payload filter on every subscription, e.g.
                                   '{\"payload.seq\": {\"$gte\": 0}}' (every event passes it)
  --transform JSON                 a transform on every subscription, one of transforms/, e.g.
                                   '{\"name\": \"require-field\", \"settings\": {\"pointer\": \"/seq\"}}'
                                   (a trivial one: every event passes, the hub's own body goes out)

Prints per phase: accepted events/s, deliveries/s end to end and in steady state,
publish-to-delivery latency p50/p90/p99/max, duplicates, missing, hub and PostgreSQL CPU
seconds per 1,000 deliveries (= ms per delivery; PostgreSQL's when it runs on this machine) and
hub peak RSS. The header names the machine. Exits 1 if a delivery went missing, was duplicated, or failed
signature verification.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-hub") {
        return integrations_hub_testkit::serve_hub();
    }
    let options = match parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench-load: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let reports = runtime.block_on(bench::run(&options));
    println!("{}", bench::render(&options, &reports));
    if reports.iter().flatten().all(bench::BackendReport::clean) {
        ExitCode::SUCCESS
    } else {
        println!("FAILED: deliveries went missing, were duplicated or had bad signatures");
        ExitCode::FAILURE
    }
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let program = std::env::current_exe().map_err(|e| format!("locating myself: {e}"))?;
    let hub_args = vec!["serve-hub".to_owned()];
    let mut options = if args.iter().any(|a| a == "--quick") {
        Options::smoke(program, hub_args)
    } else {
        Options::full(program, hub_args)
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--quick" {
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .as_str();
        let number = |what: &str| -> Result<usize, String> {
            value
                .parse::<usize>()
                .map_err(|_| format!("{what} must be a whole number, got {value:?}"))
        };
        match flag.as_str() {
            "--backend" => {
                options.backends = match value {
                    "sqlite" => vec![Backend::Sqlite],
                    "postgres" => vec![Backend::Postgres],
                    "both" => vec![Backend::Sqlite, Backend::Postgres],
                    other => return Err(format!("--backend {other:?}: sqlite, postgres or both")),
                }
            }
            "--subscriptions" => options.subscriptions = number(flag)?.clamp(1, 1000),
            "--events" => options.single_events = number(flag)?,
            "--batch-events" => options.batch_events = number(flag)?,
            "--batch-size" => {
                let n = number(flag)?;
                if !(1..=1000).contains(&n) {
                    return Err(format!("--batch-size must be 1..1000, got {n}"));
                }
                options.batch_size = n;
            }
            "--rate" | "--low-rate" => {
                let rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| format!("{flag} must be a number ≥ 0, got {value:?}"))?;
                match flag.as_str() {
                    "--rate" => options.rate = rate,
                    _ => options.low_rate = rate,
                }
            }
            "--hub" => {
                let program = std::path::PathBuf::from(value);
                if !program.is_file() {
                    return Err(format!("--hub {value:?} is not a file"));
                }
                options.hub_program = program;
            }
            "--seconds" => {
                options.latency_seconds = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| format!("--seconds must be a number > 0, got {value:?}"))?
            }
            "--payload" => options.payload_bytes = number(flag)?.clamp(64, 262_144),
            "--publishers" => options.publishers = number(flag)?.clamp(1, 1024),
            "--filter" => {
                let filter = serde_json::from_str(value)
                    .map_err(|e| format!("--filter is not JSON: {e}"))?;
                options.filter = Some(filter);
            }
            "--transform" => {
                let transform: serde_json::Value = serde_json::from_str(value)
                    .map_err(|e| format!("--transform is not JSON: {e}"))?;
                if !transform["name"].is_string() {
                    return Err("--transform wants {\"name\": …, \"settings\": {…}}".into());
                }
                options.transform = Some(transform);
            }
            "--hub-env" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--hub-env wants KEY=VALUE, got {value:?}"))?;
                options.hub_vars.push((k.to_owned(), v.to_owned()));
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(Some(options))
}
