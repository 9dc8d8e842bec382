//! Fault runs: real hub processes under load, killed, multiplied or cut off from their database,
//! with a report of what was measured and which guarantees held. `RELIABILITY.md` gives the
//! figures and the command for each.
//!
//! ```text
//! cargo run --release -p integrations-hub-tools --bin chaos -- <run> [options]
//! ```
//!
//! The hubs it starts are this same executable re-run as `serve-hub` (see
//! [`integrations_hub_testkit::serve_hub`]). CI runs bounded versions in `tests/suite/chaos.rs`.

// A fault run's output is its report.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Duration;

use integrations_hub_testkit::Backend;
use integrations_hub_tools::chaos::{
    self, BadEndpointsOptions, CrashOptions, DbOutageOptions, InstancesOptions, Launch,
    OrderedOptions, Outage, Report,
};

const USAGE: &str = "\
chaos: fault runs against real hub processes; exits 1 when a guarantee breaks.

Usage: chaos <run> [options]

Runs:
  crash        kill -9 the hub repeatedly while events are published; every accepted event
               must be delivered in the end (duplicates counted)
  instances    drain a backlog with 1, 2, … instances on one PostgreSQL, then once more
               killing one mid-drain; nothing lost, no attempt run twice at the same time
  db-outage    PostgreSQL unreachable mid-run: publishes get 202 or 503, never a 202 that was
               not stored; the hub recovers by itself; every accepted event is delivered
  bad-endpoints  a healthy endpoint's latency alone, then beside endpoints that are slow,
               never answer, send endless bodies, drop or reset connections, redirect to a
               private address or answer garbage; each bad attempt must be a recorded failure
               within the timeout
  ordered      an ordered, rate-limited subscription served by several instances on one
               PostgreSQL, one killed -9 a third of the way: nothing lost, no key out of
               publish order, no second above the rate plus the burst
  all          every run above with its defaults

Options:
  --backend sqlite|postgres|both   crash: databases (default both)
  --kills N                        crash: how many kills (default 5)
  --every S                        crash: seconds between kills (default 3)
  --rate R                         crash, db-outage, bad-endpoints: open-loop events/s
                                   (default 3000, 1000 and 1000)
  --max-instances N                instances: up to N instances (default 3)
  --events N                       instances: backlog size (default 10000)
  --delay-ms MS                    instances: receiver's time per webhook (default 50)
  --concurrency N                  instances: IH_DELIVERY_CONCURRENCY each (default 16)
  --no-kill                        instances: skip the run that kills one instance
  --keys N                         ordered: ordering keys (default 200; --events sets the
                                   events, default 20000 for this run)
  --per-second N --burst N         ordered: the rate limit (default 500 + 50)
  --down S                         db-outage: seconds the proxy cuts PostgreSQL off (default 8)
  --command CMD                    db-outage: instead of the proxy, run CMD to take the real
                                   server down and back, e.g.
                                   'pg_ctlcluster --skip-systemctl-redirect 15 main restart'
  --seconds S                      db-outage: seconds of publishing (default 24);
                                   bad-endpoints: seconds per phase (default 10)
  --timeout S                      bad-endpoints: IH_DELIVERY_TIMEOUT_SECONDS (default 2)
  --quick                          the bounded sizes CI runs
  --hub-env KEY=VALUE              extra IH_* setting for every hub (repeatable)

PostgreSQL comes from IH_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres),
a fresh database per run.";

#[derive(Debug)]
struct Plan {
    runs: Vec<&'static str>,
    crash: CrashOptions,
    instances: InstancesOptions,
    outage: DbOutageOptions,
    bad: BadEndpointsOptions,
    ordered: OrderedOptions,
    backends: Vec<Backend>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-hub") {
        return integrations_hub_testkit::serve_hub();
    }
    let plan = match parse(&args) {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chaos: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!("machine: {}", integrations_hub_tools::bench::machine());
    let mut passed = true;
    for run in &plan.runs {
        let reports: Vec<Option<Report>> = runtime.block_on(async {
            match *run {
                "crash" => {
                    let mut reports = Vec::new();
                    for &backend in &plan.backends {
                        let options = CrashOptions {
                            backend,
                            ..plan.crash.clone()
                        };
                        reports.push(chaos::crash(&options).await);
                    }
                    reports
                }
                "instances" => vec![chaos::instances(&plan.instances).await],
                "ordered" => vec![chaos::ordered(&plan.ordered).await],
                "bad-endpoints" => {
                    let mut reports = Vec::new();
                    for &backend in &plan.backends {
                        let options = BadEndpointsOptions {
                            backend,
                            ..plan.bad.clone()
                        };
                        reports.push(chaos::bad_endpoints(&options).await);
                    }
                    reports
                }
                _ => vec![chaos::db_outage(&plan.outage).await],
            }
        });
        for report in reports {
            match report {
                Some(report) => {
                    println!("{}", report.render());
                    passed &= report.passed();
                }
                None => println!("\n== {run}: SKIPPED, PostgreSQL is not reachable"),
            }
        }
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        println!("FAILED: a guarantee broke (see FAIL above)");
        ExitCode::FAILURE
    }
}

fn parse(args: &[String]) -> Result<Option<Plan>, String> {
    let program = std::env::current_exe().map_err(|e| format!("locating myself: {e}"))?;
    let launch = Launch {
        program,
        args: vec!["serve-hub".to_owned()],
        vars: Vec::new(),
    };
    let quick = args.iter().any(|a| a == "--quick");
    let mut plan = Plan {
        runs: Vec::new(),
        crash: CrashOptions {
            backend: Backend::Sqlite,
            kills: 5,
            every: Duration::from_secs(3),
            rate: 3000.0,
            launch: launch.clone(),
        },
        instances: InstancesOptions {
            max_instances: 3,
            events: 10_000,
            delay: Duration::from_millis(50),
            concurrency: 16,
            kill_one: true,
            launch: launch.clone(),
        },
        outage: DbOutageOptions {
            outage: Outage::Proxy(Duration::from_secs(8)),
            rate: 1000.0,
            seconds: 24.0,
            launch: launch.clone(),
        },
        bad: BadEndpointsOptions {
            backend: Backend::Sqlite,
            rate: 1000.0,
            seconds: 10.0,
            timeout: Duration::from_secs(2),
            launch: launch.clone(),
        },
        ordered: OrderedOptions {
            events: 20_000,
            keys: 200,
            instances: 3,
            per_second: 500,
            burst: 50,
            launch,
        },
        backends: vec![Backend::Sqlite, Backend::Postgres],
    };
    if quick {
        plan.crash.kills = 2;
        plan.crash.every = Duration::from_secs(1);
        plan.crash.rate = 500.0;
        plan.instances.events = 900;
        plan.instances.delay = Duration::from_millis(10);
        plan.instances.concurrency = 8;
        plan.outage.outage = Outage::Proxy(Duration::from_secs(6));
        plan.outage.rate = 100.0;
        plan.outage.seconds = 12.0;
        plan.bad.rate = 100.0;
        plan.bad.seconds = 3.0;
        plan.bad.timeout = Duration::from_secs(1);
        plan.ordered.events = 600;
        plan.ordered.keys = 20;
        plan.ordered.per_second = 200;
        plan.ordered.burst = 20;
    }
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => continue,
            "--no-kill" => {
                plan.instances.kill_one = false;
                continue;
            }
            "crash" => plan.runs.push("crash"),
            "instances" => plan.runs.push("instances"),
            "db-outage" => plan.runs.push("db-outage"),
            "bad-endpoints" => plan.runs.push("bad-endpoints"),
            "ordered" => plan.runs.push("ordered"),
            "all" => plan.runs.extend([
                "crash",
                "instances",
                "db-outage",
                "bad-endpoints",
                "ordered",
            ]),
            flag if flag.starts_with("--") => {
                let value = it
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value"))?
                    .as_str();
                apply(&mut plan, flag, value)?;
            }
            other => return Err(format!("unknown run {other:?}")),
        }
    }
    if plan.runs.is_empty() {
        return Err("which run? crash, instances, db-outage, bad-endpoints, ordered or all".into());
    }
    Ok(Some(plan))
}

fn apply(plan: &mut Plan, flag: &str, value: &str) -> Result<(), String> {
    let whole = || -> Result<usize, String> {
        value
            .parse::<usize>()
            .map_err(|_| format!("{flag} must be a whole number, got {value:?}"))
    };
    let positive = || -> Result<f64, String> {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("{flag} must be a number > 0, got {value:?}"))
    };
    match flag {
        "--backend" => {
            plan.backends = match value {
                "sqlite" => vec![Backend::Sqlite],
                "postgres" => vec![Backend::Postgres],
                "both" => vec![Backend::Sqlite, Backend::Postgres],
                other => return Err(format!("--backend {other:?}: sqlite, postgres or both")),
            }
        }
        "--kills" => plan.crash.kills = whole()?.clamp(1, 100),
        "--every" => plan.crash.every = Duration::from_secs_f64(positive()?),
        "--rate" => {
            let rate = positive()?;
            plan.crash.rate = rate;
            plan.outage.rate = rate;
            plan.bad.rate = rate;
        }
        "--max-instances" => plan.instances.max_instances = whole()?.clamp(1, 8),
        "--events" => {
            plan.instances.events = whole()?.clamp(1, 1_000_000);
            plan.ordered.events = plan.instances.events;
        }
        "--keys" => plan.ordered.keys = whole()?.clamp(1, 100_000) as u64,
        "--per-second" => plan.ordered.per_second = whole()?.clamp(1, 10_000) as u32,
        "--burst" => plan.ordered.burst = whole()?.clamp(0, 10_000) as u32,
        "--delay-ms" => plan.instances.delay = Duration::from_millis(whole()? as u64),
        "--concurrency" => plan.instances.concurrency = whole()?.clamp(1, 1024),
        "--down" => plan.outage.outage = Outage::Proxy(Duration::from_secs_f64(positive()?)),
        "--command" => plan.outage.outage = Outage::Command(value.to_owned()),
        "--seconds" => {
            let seconds = positive()?;
            plan.outage.seconds = seconds;
            plan.bad.seconds = seconds;
        }
        "--timeout" => plan.bad.timeout = Duration::from_secs_f64(positive()?),
        "--hub-env" => {
            let (k, v) = value
                .split_once('=')
                .ok_or_else(|| format!("--hub-env wants KEY=VALUE, got {value:?}"))?;
            for launch in [
                &mut plan.crash.launch,
                &mut plan.instances.launch,
                &mut plan.outage.launch,
                &mut plan.bad.launch,
                &mut plan.ordered.launch,
            ] {
                launch.vars.push((k.to_owned(), v.to_owned()));
            }
        }
        other => return Err(format!("unknown option {other:?}")),
    }
    Ok(())
}
