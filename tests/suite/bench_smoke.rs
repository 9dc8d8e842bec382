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
        let names: Vec<&str> = report.phases.iter().map(|p| p.name).collect();
        assert_eq!(names, ["single", "batch", "latency", "low"], "{rendered}");
        for phase in &report.phases {
            // PostgreSQL's CPU is read from /proc when the server runs on this machine (as under
            // `.ci/run`); SQLite's is the hub's own.
            let db_cpu = phase.db_cpu_seconds_per_1000;
            match report.backend {
                integrations_hub_testkit::Backend::Postgres => {
                    assert!(db_cpu.is_none_or(|s| s >= 0.0), "{rendered}")
                }
                integrations_hub_testkit::Backend::Sqlite => assert_eq!(db_cpu, None),
            }
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

/// The query benchmark, small (2,000 events, a few runs per call), on both backends: its seed
/// must load into the real schema and every call it times must answer 200, so it cannot rot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_benchmark_seeds_and_times_every_call() {
    let mut measured = 0;
    for backend in [
        integrations_hub_testkit::Backend::Sqlite,
        integrations_hub_testkit::Backend::Postgres,
    ] {
        let timings = integrations_hub_tools::queries::run(backend, 2_000, 2)
            .await
            .expect("the query benchmark runs");
        let Some(timings) = timings else {
            continue;
        };
        measured += 1;
        assert!(timings.len() > 10, "{timings:?}");
        assert!(timings.iter().all(|t| t.p95_ms > 0.0), "{timings:?}");
    }
    assert!(measured >= 1);
}
