//! Query benchmark: how fast the visibility API answers on a large database.
//!
//! ```text
//! cargo run --release -p integrations-hub-tools --bin bench-queries -- [events] [runs] [sqlite|postgres|both]
//! ```
//!
//! Seeds a fresh database (default 1,000,000 events, 2,000,000 attempts, 1 % dead letters, over
//! 7 days; PostgreSQL at `IH_TEST_POSTGRES_URL`), starts a hub on it and times every list,
//! filter and statistics call of the API over HTTP (default 20 runs each), printing p50, p95 and
//! max against the 50 ms p95 target. Figures, not assertions.

// A benchmark's output is its report.
#![allow(clippy::print_stdout)]

use integrations_hub_testkit::Backend;
use integrations_hub_tools::queries;

/// The p95 each call should stay within.
const TARGET_MS: f64 = 50.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let runs: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let backends = match args.next().as_deref() {
        Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Postgres],
        _ => vec![Backend::Sqlite, Backend::Postgres],
    };
    for backend in backends {
        println!("\n[{backend:?}] {events} events, {runs} runs per call");
        let Some(timings) = queries::run(backend, events, runs).await? else {
            println!("  not available (IH_TEST_POSTGRES_URL)");
            continue;
        };
        println!(
            "  {:<44} {:>9} {:>9} {:>9}",
            "call", "p50 ms", "p95 ms", "max ms"
        );
        for t in timings {
            let verdict = if t.call.starts_with('(') {
                ""
            } else if t.p95_ms <= TARGET_MS {
                "ok"
            } else {
                "SLOW"
            };
            println!(
                "  {:<44} {:>9.1} {:>9.1} {:>9.1} {verdict}",
                t.call, t.p50_ms, t.p95_ms, t.max_ms
            );
        }
    }
    Ok(())
}
