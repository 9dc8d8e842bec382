//! Bounded versions of the `chaos` runs (see `RELIABILITY.md`): the same code as
//! `cargo run --release -p integrations-hub-tools --bin chaos -- all`, smaller, so CI proves
//! each guarantee on every change. Each fails when its guarantee breaks.

use std::time::Duration;

use integrations_hub_testkit::{Backend, backend_tests};
use integrations_hub_tools::chaos::{
    self, BadEndpointsOptions, CrashOptions, DbOutageOptions, InstancesOptions, Launch,
    OrderedOptions, Outage, Report,
};

backend_tests!(
    kill_9_twice_under_load_loses_no_accepted_event,
    bad_endpoints_fail_within_their_bounds_beside_a_healthy_one
);

fn assert_passed(report: &Report) {
    let rendered = report.render();
    eprintln!("{rendered}");
    assert!(report.passed(), "{rendered}");
    assert!(!report.held.is_empty(), "nothing was checked\n{rendered}");
}

async fn kill_9_twice_under_load_loses_no_accepted_event(backend: Backend) {
    let options = CrashOptions {
        backend,
        kills: 2,
        every: Duration::from_secs(1),
        rate: 500.0,
        launch: Launch::hub_binary(),
    };
    if let Some(report) = chaos::crash(&options).await {
        assert_passed(&report);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_lose_nothing_and_never_overlap() {
    let options = InstancesOptions {
        max_instances: 3,
        events: 900,
        delay: Duration::from_millis(10),
        concurrency: 8,
        kill_one: true,
        launch: Launch::hub_binary(),
    };
    if let Some(report) = chaos::instances(&options).await {
        assert_passed(&report);
        assert_eq!(report.figures.len(), 4, "1, 2, 3 and 3-with-a-kill runs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_off_mid_run_gets_503s_then_recovers_without_loss() {
    let options = DbOutageOptions {
        outage: Outage::Proxy(Duration::from_secs(6)),
        rate: 100.0,
        seconds: 12.0,
        launch: Launch::hub_binary(),
    };
    if let Some(report) = chaos::db_outage(&options).await {
        assert_passed(&report);
    }
}

async fn bad_endpoints_fail_within_their_bounds_beside_a_healthy_one(backend: Backend) {
    let options = BadEndpointsOptions {
        backend,
        rate: 100.0,
        seconds: 3.0,
        timeout: Duration::from_secs(1),
        launch: Launch::hub_binary(),
    };
    if let Some(report) = chaos::bad_endpoints(&options).await {
        assert_passed(&report);
        // One recorded failure per misbehaviour, each checked.
        assert!(report.held.len() >= chaos::Misbehaviour::ALL.len() + 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_rate_limited_subscription_keeps_order_and_rate_through_a_kill() {
    let options = OrderedOptions {
        events: 600,
        keys: 20,
        instances: 3,
        per_second: 200,
        burst: 20,
        launch: Launch::hub_binary(),
    };
    if let Some(report) = chaos::ordered(&options).await {
        assert_passed(&report);
    }
}
