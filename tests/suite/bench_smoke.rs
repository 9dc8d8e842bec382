//! The load benchmark, small: a few hundred events through every phase on both backends, so
//! the benchmark cannot rot and a lost, duplicated or badly signed delivery under concurrent
//! load fails the suite. The figures it prints mean nothing at this size; the README's come
//! from `cargo run --release -p integrations-hub-tools --bin bench-load`.

use integrations_hub_testkit::hub_binary;
use integrations_hub_tools::bench::{self, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_benchmark_delivers_every_event_exactly_once() {
    let options = Options::smoke(hub_binary(), Vec::new());
    let reports = bench::run(&options).await;
    let rendered = bench::render(&options, &reports);
    eprintln!("{rendered}");
    let mut measured = 0;
    for report in reports.iter().flatten() {
        measured += 1;
        for phase in &report.phases {
            assert_eq!(
                phase.publish_errors, 0,
                "{:?} {}: publishes refused\n{rendered}",
                report.backend, phase.name
            );
            assert_eq!(
                (
                    phase.delivered,
                    phase.missing,
                    phase.duplicates,
                    phase.bad_signatures
                ),
                (phase.expected, 0, 0, 0),
                "{:?} {}: delivered, missing, duplicated, badly signed\n{rendered}",
                report.backend,
                phase.name
            );
            assert!(phase.accepted_per_second > 0.0 && phase.end_to_end_per_second > 0.0);
            assert!(phase.hub_cpu_seconds >= 0.0 && phase.peak_rss_mib > 0.0);
        }
    }
    // SQLite always runs; Postgres too unless it is unreachable outside CI (then it was skipped
    // with a notice, and under CI=true `TestDb::create` has already failed the test).
    assert!(measured >= 1, "no backend was measured\n{rendered}");
}
