//! Fault runs behind the `chaos` binary and their bounded CI versions (`tests/chaos.rs`).
//!
//! Each run drives real hub processes over real HTTP into the benchmark's receiver (which
//! verifies both signatures of every webhook and checks off each event), injects one kind of
//! fault, and ends with a [`Report`]: the figures measured and the guarantees checked. A run
//! that breaks a guarantee lists it under `failures`; the binary then exits 1 and the test fails.
//!
//! - [`crash`]: `kill -9` of the hub, again and again, while an open loop publishes;
//! - [`instances`]: 1, 2, … hubs on one PostgreSQL draining a backlog, optionally one killed
//!   mid-drain;
//! - [`db_outage`]: PostgreSQL unreachable mid-run (a [`FaultProxy`] cut, or a real server
//!   restart by command) while an open loop publishes;
//! - [`ordered`]: several hubs on one PostgreSQL delivering to an ordered, rate-limited
//!   subscription, one of them killed mid-run.
//!
//! "Accepted" means a `202` whose body arrived whole. A publish cut off by a kill has an unknown
//! outcome: it may or may not be delivered, and it is never counted as missing.

// A fault run's output is its report.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bench::{BenchReceiver, Phase, Publisher, SECRET};
use integrations_hub_testkit::{Backend, HubProcess, TestDb};

const EVENT_TYPE: &str = "bench.event";
/// Payload size of every event the runs publish.
const PAYLOAD_BYTES: usize = 512;
/// A run gives up waiting when no delivery arrived for this long (well beyond a lease).
const STALL: Duration = Duration::from_secs(30);

/// How to start a hub: the program, its arguments and extra `IH_*` variables.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub vars: Vec<(String, String)>,
}

impl Launch {
    /// The hub binary built beside the test executable.
    pub fn hub_binary() -> Self {
        Self {
            program: integrations_hub_testkit::hub_binary(),
            args: Vec::new(),
            vars: Vec::new(),
        }
    }

    /// Starts one hub on `db`; `extra` comes after the launch's own variables and wins.
    async fn start(&self, db: &TestDb, extra: &[(&str, String)]) -> HubProcess {
        let mut vars: Vec<(&str, &str)> = vec![
            ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
            ("IH_DATABASE_MAX_CONNECTIONS", "16"),
            ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
        ];
        vars.extend(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        vars.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        HubProcess::start_program(&self.program, &self.args, db, &vars).await
    }
}

/// Writes a hub's log to `$CHAOS_HUB_LOG_DIR/<name>.log` when that variable is set (to look at
/// what a hub did during a run).
fn keep_log(hub: &HubProcess, name: &str) {
    if let Some(dir) = std::env::var_os("CHAOS_HUB_LOG_DIR") {
        let path = std::path::Path::new(&dir).join(format!("{name}.log"));
        let _ = std::fs::create_dir_all(&dir);
        if let Err(e) = std::fs::write(&path, hub.log().join("\n")) {
            eprintln!("could not write {}: {e}", path.display());
        }
    }
}

/// What a run measured and which guarantees held.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub title: String,
    /// (what, value), in the order measured.
    pub figures: Vec<(String, String)>,
    /// Guarantees checked and held.
    pub held: Vec<String>,
    /// Guarantees broken, each with what was seen.
    pub failures: Vec<String>,
}

impl Report {
    fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    fn figure(&mut self, what: impl Into<String>, value: impl ToString) {
        self.figures.push((what.into(), value.to_string()));
    }

    /// Records a guarantee as held or broken.
    fn check(&mut self, ok: bool, guarantee: &str, seen: impl std::fmt::Display) {
        if ok {
            self.held.push(guarantee.to_owned());
        } else {
            self.failures.push(format!("{guarantee}: {seen}"));
        }
    }

    /// True when every guarantee checked held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as printed.
    pub fn render(&self) -> String {
        let mut out = format!("\n== {}\n", self.title);
        let width = self.figures.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (what, value) in &self.figures {
            let _ = writeln!(out, "  {what:<width$}  {value}");
        }
        for held in &self.held {
            let _ = writeln!(out, "  ok    {held}");
        }
        for failure in &self.failures {
            let _ = writeln!(out, "  FAIL  {failure}");
        }
        out
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        // A publish that hangs this long is a failure of its own.
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1024)
        .build()
        .expect("HTTP client")
}

async fn subscribe(client: &reqwest::Client, base: &str, url: &str) {
    let response = client
        .post(format!("{base}/api/v1/subscriptions"))
        .json(&serde_json::json!({
            "url": url, "secret": SECRET, "events": [EVENT_TYPE],
        }))
        .send()
        .await
        .expect("create subscription");
    assert_eq!(response.status().as_u16(), 201, "creating a subscription");
}

/// A port free right now, so a restarted hub can come back on the address publishers use.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn outcomes_line(outcomes: &std::collections::BTreeMap<String, usize>) -> String {
    outcomes
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `kill -9` under load.
#[derive(Debug, Clone)]
pub struct CrashOptions {
    pub backend: Backend,
    /// How many times the hub is killed (and restarted at once).
    pub kills: usize,
    /// Time between kills (and before the first, and after the last).
    pub every: Duration,
    /// Open-loop publish rate, events/s.
    pub rate: f64,
    pub launch: Launch,
}

/// Publishes at `rate` while the hub is killed with SIGKILL `kills` times and restarted on the
/// same address and database; then waits until every accepted event was delivered.
pub async fn crash(options: &CrashOptions) -> Option<Report> {
    let db = TestDb::create(options.backend).await?;
    let receiver = BenchReceiver::start().await;
    let client = client();
    let extra = [
        ("IH_BIND", format!("127.0.0.1:{}", free_port())),
        // Short leases, so what a killed hub held is attempted again within seconds.
        ("IH_DELIVERY_TIMEOUT_SECONDS", "2".to_owned()),
    ];
    let mut hub = options.launch.start(&db, &extra).await;
    subscribe(&client, &hub.base, &receiver.url(0)).await;

    let seconds = options.every.as_secs_f64() * (options.kills + 1) as f64;
    let events = (options.rate * seconds).round() as usize;
    let phase = Phase {
        name: "crash",
        first_seq: 0,
        events,
        subscriptions: 1,
    };
    receiver.begin(phase);
    let publisher = Publisher::new(&hub.base, &client, PAYLOAD_BYTES, phase);
    let outcomes = publisher.outcomes();
    let rate = options.rate;
    let publishing = tokio::spawn(async move { publisher.open_loop(rate).await });

    let mut downtimes = Vec::new();
    let name = format!("crash-{}", backend_name(options.backend));
    for kill in 0..options.kills {
        tokio::time::sleep(options.every).await;
        let killed = Instant::now();
        keep_log(&hub, &format!("{name}-{kill}"));
        hub.kill9();
        hub = options.launch.start(&db, &extra).await;
        downtimes.push(killed.elapsed());
    }
    let last_restart = Instant::now();
    let refused = publishing.await.expect("publisher task");
    let missing = receiver.wait_none_missing(&refused, STALL).await;
    let settled = last_restart.elapsed();
    let tally = receiver.tally(&refused);
    keep_log(&hub, &format!("{name}-{}", options.kills));
    drop(hub);

    let outcomes = outcomes.snapshot();
    let accepted = events - refused.len();
    let unknown_delivered = tally.delivered.saturating_sub(accepted);
    let mut report = Report::new(format!(
        "crash: kill -9 ×{} under {rate} events/s ({})",
        options.kills,
        backend_name(options.backend)
    ));
    report.figure("events scheduled", events);
    report.figure("publish outcomes", outcomes_line(&outcomes));
    report.figure("accepted (202 received whole)", accepted);
    report.figure(
        "kill → serving again (each)",
        downtimes
            .iter()
            .map(|d| millis(*d))
            .collect::<Vec<_>>()
            .join(", "),
    );
    report.figure(
        "delivered (accepted + unknown outcome)",
        format!(
            "{} (of which {unknown_delivered} had no answer)",
            tally.delivered
        ),
    );
    report.figure("duplicate deliveries (at-least-once)", tally.duplicates);
    report.figure("last restart → everything delivered", millis(settled));
    report.check(
        missing == 0,
        "every accepted event is delivered",
        format!("{missing} accepted events never arrived"),
    );
    report.check(
        tally.bad_signatures == 0,
        "every delivery is correctly signed",
        format!("{} bad signatures", tally.bad_signatures),
    );
    let server_errors: usize = outcomes
        .iter()
        .filter(|(kind, _)| kind.starts_with('5') && kind.as_str() != "503")
        .map(|(_, n)| n)
        .sum();
    report.check(
        server_errors == 0,
        "no publish answered with a server error other than 503",
        outcomes_line(&outcomes),
    );
    Some(report)
}

/// Several instances on one PostgreSQL.
#[derive(Debug, Clone)]
pub struct InstancesOptions {
    /// Runs with 1, 2, … up to this many instances.
    pub max_instances: usize,
    /// Backlog each run drains.
    pub events: usize,
    /// How long the receiver takes to answer each webhook.
    pub delay: Duration,
    /// `IH_DELIVERY_CONCURRENCY` of each instance.
    pub concurrency: usize,
    /// One more run with `max_instances`, killing one of them mid-drain.
    pub kill_one: bool,
    pub launch: Launch,
}

/// Drains a backlog with 1…`max_instances` hubs sharing one PostgreSQL database (a fresh one
/// per run), and optionally once more while one of them is killed.
pub async fn instances(options: &InstancesOptions) -> Option<Report> {
    let mut report = Report::new(format!(
        "instances: {} events, receiver answers in {}, concurrency {} per instance (postgres)",
        options.events,
        millis(options.delay),
        options.concurrency
    ));
    let mut runs: Vec<(usize, bool)> = (1..=options.max_instances).map(|n| (n, false)).collect();
    if options.kill_one {
        runs.push((options.max_instances, true));
    }
    for (n, kill) in runs {
        let run = drain_with_instances(options, n, kill).await?;
        let label = if kill {
            format!("{n} instances, one killed mid-drain")
        } else {
            format!("{n} instance(s)")
        };
        report.figure(
            label.clone(),
            format!(
                "{:.0} deliveries/s end to end, {:.0} steady; {} duplicates; {} overlaps",
                run.per_second, run.steady, run.duplicates, run.overlaps
            ),
        );
        report.check(
            run.missing == 0,
            &format!("{label}: every accepted event is delivered"),
            format!("{} missing", run.missing),
        );
        report.check(
            run.overlaps == 0,
            &format!("{label}: no attempt runs twice at the same time"),
            format!("{} overlapping attempts", run.overlaps),
        );
        if !kill {
            report.check(
                run.duplicates == 0,
                &format!("{label}: no event delivered twice without a crash"),
                format!("{} duplicates", run.duplicates),
            );
        }
        report.check(
            run.bad_signatures == 0,
            &format!("{label}: every delivery is correctly signed"),
            format!("{} bad signatures", run.bad_signatures),
        );
    }
    Some(report)
}

struct DrainRun {
    per_second: f64,
    steady: f64,
    duplicates: usize,
    overlaps: usize,
    missing: usize,
    bad_signatures: usize,
}

async fn drain_with_instances(
    options: &InstancesOptions,
    n: usize,
    kill: bool,
) -> Option<DrainRun> {
    let db = TestDb::create(Backend::Postgres).await?;
    let receiver = BenchReceiver::start_with_delay(options.delay).await;
    let client = client();
    let extra = [
        ("IH_DELIVERY_CONCURRENCY", options.concurrency.to_string()),
        ("IH_DELIVERY_TIMEOUT_SECONDS", "5".to_owned()),
    ];
    let mut hubs = Vec::new();
    for _ in 0..n {
        hubs.push(options.launch.start(&db, &extra).await);
    }
    subscribe(&client, &hubs[0].base, &receiver.url(0)).await;
    let phase = Phase {
        name: "instances",
        first_seq: 0,
        events: options.events,
        subscriptions: 1,
    };
    receiver.begin(phase);
    let started = Instant::now();
    // Every instance takes an equal share of the publishes, by batch.
    let share = options.events.div_ceil(n);
    let mut publishing = tokio::task::JoinSet::new();
    for (i, hub) in hubs.iter().enumerate() {
        let first = i * share;
        let events = share.min(options.events.saturating_sub(first));
        let part = Phase {
            first_seq: first as u64,
            events,
            ..phase
        };
        let publisher = Publisher::new(&hub.base, &client, PAYLOAD_BYTES, part);
        publishing.spawn(async move { publisher.closed_loop(2, 500).await });
    }
    let mut refused = Vec::new();
    while let Some(done) = publishing.join_next().await {
        refused.extend(done.expect("publisher task"));
    }
    if kill {
        // Mid-drain: a third of the backlog delivered.
        while receiver.distinct() < options.events / 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(victim) = hubs.pop() {
            victim.kill9();
        }
    }
    let missing = receiver.wait_none_missing(&refused, STALL).await;
    let finished = receiver.last_arrival().unwrap_or_else(Instant::now);
    // Stragglers (a killed instance's leases expiring) would show as duplicates or overlaps.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = receiver.tally(&refused);
    drop(hubs);
    Some(DrainRun {
        per_second: tally.delivered as f64 / finished.duration_since(started).as_secs_f64(),
        steady: tally.steady_per_second,
        duplicates: tally.duplicates,
        overlaps: receiver.overlaps(),
        missing,
        bad_signatures: tally.bad_signatures,
    })
}

/// Ordered, rate-limited delivery with several instances, one killed.
#[derive(Debug, Clone)]
pub struct OrderedOptions {
    pub events: usize,
    /// Ordering keys the events are spread over (`seq % keys`).
    pub keys: u64,
    pub instances: usize,
    /// The subscription's rate limit.
    pub per_second: u32,
    pub burst: u32,
    pub launch: Launch,
}

/// Publishes `events` over `keys` ordering keys (in sequence order, so publish order is
/// sequence order per key) to an ordered, rate-limited subscription served by `instances` hubs
/// on one PostgreSQL, kills one a third of the way through, and checks that nothing is lost,
/// that no key's deliveries arrive out of order (a redelivered head may repeat), and that no
/// one-second window holds more than the rate plus the burst.
pub async fn ordered(options: &OrderedOptions) -> Option<Report> {
    let mut report = Report::new(format!(
        "ordered: {} events over {} keys to an ordered subscription limited to {}/s + {} burst, \
         {} instances, one killed (postgres)",
        options.events, options.keys, options.per_second, options.burst, options.instances
    ));
    let db = TestDb::create(Backend::Postgres).await?;
    let receiver = BenchReceiver::start().await;
    let client = client();
    let extra = [("IH_DELIVERY_TIMEOUT_SECONDS", "5".to_owned())];
    let mut hubs = Vec::new();
    for _ in 0..options.instances.max(1) {
        hubs.push(options.launch.start(&db, &extra).await);
    }
    let response = client
        .post(format!("{}/api/v1/subscriptions", hubs[0].base))
        .json(&serde_json::json!({
            "url": receiver.url(0), "secret": SECRET, "events": [EVENT_TYPE], "ordered": true,
            "rate_limit": {"per_second": options.per_second, "burst": options.burst},
        }))
        .send()
        .await
        .expect("create subscription");
    assert_eq!(response.status().as_u16(), 201, "creating a subscription");
    let phase = Phase {
        name: "ordered",
        first_seq: 0,
        events: options.events,
        subscriptions: 1,
    };
    receiver.begin(phase);
    let started = Instant::now();
    // One connection, batches in sequence: publish order is sequence order.
    let publisher =
        Publisher::new(&hubs[0].base, &client, PAYLOAD_BYTES, phase).with_keys(options.keys);
    let refused = publisher.closed_loop(1, 500).await;
    while receiver.distinct() < options.events / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if hubs.len() > 1
        && let Some(victim) = hubs.pop()
    {
        victim.kill9();
    }
    let missing = receiver.wait_none_missing(&refused, STALL).await;
    let finished = receiver.last_arrival().unwrap_or_else(Instant::now);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = receiver.tally(&refused);
    let arrivals = receiver.sequence();
    drop(hubs);

    let mut last: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut out_of_order = 0;
    for (seq, _) in &arrivals {
        let key = seq % options.keys.max(1);
        if let Some(previous) = last.insert(key, *seq)
            && previous > *seq
        {
            out_of_order += 1;
        }
    }
    let times: Vec<Instant> = arrivals.iter().map(|(_, at)| *at).collect();
    let busiest = (0..times.len())
        .map(|i| {
            let end = times[i] + Duration::from_secs(1);
            times[i..].iter().take_while(|t| **t < end).count()
        })
        .max()
        .unwrap_or(0);
    let seconds = finished.duration_since(started).as_secs_f64();
    report.figure(
        "delivered",
        format!(
            "{} events in {seconds:.1} s ({:.0}/s), {} duplicates (redelivered after the kill)",
            tally.delivered,
            tally.delivered as f64 / seconds,
            tally.duplicates
        ),
    );
    report.figure("busiest second", format!("{busiest} deliveries"));
    report.check(
        missing == 0,
        "every accepted event is delivered",
        format!("{missing} missing"),
    );
    report.check(
        out_of_order == 0,
        "no key's deliveries arrive out of publish order",
        format!("{out_of_order} out of order"),
    );
    let ceiling = (options.per_second + options.burst) as usize;
    report.check(
        busiest <= ceiling,
        &format!("no one-second window holds more than {ceiling} deliveries"),
        format!("{busiest} in the busiest"),
    );
    report.check(
        tally.bad_signatures == 0,
        "every delivery is correctly signed",
        format!("{} bad signatures", tally.bad_signatures),
    );
    Some(report)
}

/// How the database goes away.
#[derive(Debug, Clone)]
pub enum Outage {
    /// The hub reaches PostgreSQL through a [`FaultProxy`], cut for this long: connections
    /// reset, new ones refused.
    Proxy(Duration),
    /// A shell command that takes the real server down and back (e.g. a restart).
    Command(String),
}

/// PostgreSQL going away mid-run.
#[derive(Debug, Clone)]
pub struct DbOutageOptions {
    pub outage: Outage,
    /// Open-loop publish rate, events/s.
    pub rate: f64,
    /// Length of the publishing; the outage starts after a third of it.
    pub seconds: f64,
    pub launch: Launch,
}

/// Publishes at `rate` while PostgreSQL goes away and comes back; checks that every publish
/// got a 202 (stored) or a 503 (not stored, try again), that the engine recovered by itself,
/// and that every accepted event was delivered.
pub async fn db_outage(options: &DbOutageOptions) -> Option<Report> {
    let db = TestDb::create(Backend::Postgres).await?;
    let proxy = match options.outage {
        Outage::Proxy(_) => Some(FaultProxy::start(postgres_addr(&db.url).await).await),
        Outage::Command(_) => None,
    };
    let url = match &proxy {
        Some(proxy) => {
            let mut url = url::Url::parse(&db.url).expect("database URL");
            url.set_ip_host(proxy.addr.ip()).expect("an IP host");
            url.set_port(Some(proxy.addr.port())).expect("a port");
            url.to_string()
        }
        None => db.url.clone(),
    };
    let receiver = BenchReceiver::start().await;
    let client = client();
    let hub = options.launch.start(&db, &[("IH_DATABASE_URL", url)]).await;
    subscribe(&client, &hub.base, &receiver.url(0)).await;

    let events = (options.rate * options.seconds).round() as usize;
    let phase = Phase {
        name: "db-outage",
        first_seq: 0,
        events,
        subscriptions: 1,
    };
    receiver.begin(phase);
    let publisher = Publisher::new(&hub.base, &client, PAYLOAD_BYTES, phase);
    let outcomes = publisher.outcomes();
    let rate = options.rate;
    let publishing = tokio::spawn(async move { publisher.open_loop(rate).await });
    let health = HealthWatch::start(client.clone(), format!("{}/health", hub.base));

    tokio::time::sleep(Duration::from_secs_f64(options.seconds / 3.0)).await;
    let down_at = Instant::now();
    let outage = match &options.outage {
        Outage::Proxy(length) => {
            let proxy = proxy.as_ref().expect("proxy started");
            proxy.down();
            tokio::time::sleep(*length).await;
            proxy.up().await;
            format!("connections cut for {}", millis(*length))
        }
        Outage::Command(command) => {
            let run = command.clone();
            let status = tokio::task::spawn_blocking(move || {
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&run)
                    .status()
            })
            .await
            .expect("outage command task");
            match status {
                Ok(s) if s.success() => format!("`{command}` took {}", millis(down_at.elapsed())),
                other => panic!("outage command `{command}` failed: {other:?}"),
            }
        }
    };
    let back_at = Instant::now();
    let refused = publishing.await.expect("publisher task");
    let missing = receiver.wait_none_missing(&refused, STALL).await;
    let tally = receiver.tally(&refused);
    let health = health.stop().await;
    let ready_again = health
        .healthy_after(back_at)
        .map(|t| t.duration_since(back_at));
    keep_log(&hub, "db-outage");
    drop(hub);

    let slowest = outcomes.slowest();
    let outcomes = outcomes.snapshot();
    let count = |kind: &str| outcomes.get(kind).copied().unwrap_or(0);
    let accepted = events - refused.len();
    let mut report = Report::new(format!(
        "database outage under {rate} events/s (postgres): {outage}"
    ));
    report.figure("events scheduled", events);
    report.figure("publish outcomes", outcomes_line(&outcomes));
    report.figure("accepted", accepted);
    report.figure("slowest publish answer", millis(slowest));
    report.figure(
        "/health answered 503 during the outage",
        format!("{} times", health.unhealthy),
    );
    report.figure(
        "back → /health 200",
        ready_again.map_or("never".to_owned(), millis),
    );
    report.figure(
        "503'd publishes delivered anyway (commit outcome lost with the connection)",
        tally.delivered.saturating_sub(accepted),
    );
    report.figure("duplicate deliveries", tally.duplicates);
    report.check(
        missing == 0,
        "every accepted (202) event is delivered after the outage",
        format!("{missing} accepted events never arrived"),
    );
    let unclean: usize = outcomes
        .iter()
        .filter(|(kind, _)| kind.as_str() != "202" && kind.as_str() != "503")
        .map(|(_, n)| n)
        .sum();
    report.check(
        unclean == 0,
        "every publish is answered 202 (stored) or 503 (not stored)",
        outcomes_line(&outcomes),
    );
    report.check(
        count("503") > 0 || health.unhealthy > 0,
        "the outage was seen (503s from the API or /health)",
        "no 503 at all: the outage did not happen?",
    );
    // The group committer's 10 s queue limit plus the pool's 5 s wait for a connection.
    report.check(
        slowest < Duration::from_secs(20),
        "every publish is answered within 20 s, even while the database is down",
        format!("the slowest took {}", millis(slowest)),
    );
    report.check(
        ready_again.is_some(),
        "the hub reports healthy again without a restart",
        "/health never answered 200 after the outage",
    );
    report.check(
        tally.bad_signatures == 0,
        "every delivery is correctly signed",
        format!("{} bad signatures", tally.bad_signatures),
    );
    Some(report)
}

/// The address of the PostgreSQL server in a database URL.
async fn postgres_addr(url: &str) -> SocketAddr {
    let url = url::Url::parse(url).expect("database URL");
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(5432);
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .expect("resolve the PostgreSQL host")
        .next()
        .expect("an address for the PostgreSQL host")
}

/// Polls `/health` every 100 ms and remembers what it answered.
struct HealthWatch {
    task: tokio::task::JoinHandle<HealthSeen>,
    running: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, Default)]
struct HealthSeen {
    unhealthy: usize,
    /// When each 200 was seen.
    healthy_at: Vec<Instant>,
}

impl HealthSeen {
    fn healthy_after(&self, t: Instant) -> Option<Instant> {
        self.healthy_at.iter().copied().find(|&at| at >= t)
    }
}

impl HealthWatch {
    fn start(client: reqwest::Client, url: String) -> Self {
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = running.clone();
        let task = tokio::spawn(async move {
            let mut seen = HealthSeen::default();
            while flag.load(std::sync::atomic::Ordering::Relaxed) {
                match client.get(&url).send().await.map(|r| r.status().as_u16()) {
                    Ok(200) => seen.healthy_at.push(Instant::now()),
                    Ok(_) => seen.unhealthy += 1,
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        });
        Self { task, running }
    }

    async fn stop(self) -> HealthSeen {
        self.running
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("health watch task")
    }
}

/// A proxy's accept loop and the connections it has spawned.
type Serving = (
    tokio::task::JoinHandle<()>,
    Arc<Mutex<tokio::task::JoinSet<()>>>,
);

/// A TCP proxy that can cut every connection and refuse new ones on cue: the database "going
/// away" for one client only, without touching the server other tests use.
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    /// The accept loop and the connections it spawned, while up.
    running: Mutex<Option<Serving>>,
}

impl FaultProxy {
    /// Starts forwarding 127.0.0.1:<port> to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = Self {
            addr,
            target,
            running: Mutex::new(None),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let connections = Arc::new(Mutex::new(tokio::task::JoinSet::new()));
        let target = self.target;
        let spawned = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut set = spawned.lock().expect("lock");
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *self.running.lock().expect("lock") = Some((accept, connections));
    }

    /// Cuts every connection and stops listening: new connections are refused.
    pub fn down(&self) {
        if let Some((accept, connections)) = self.running.lock().expect("lock").take() {
            accept.abort();
            connections.lock().expect("lock").abort_all();
        }
    }

    /// Listens again on the same address.
    pub async fn up(&self) {
        // The aborted accept loop drops its listener on its next poll: retry briefly.
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.serve(listener);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("the proxy could not listen on {} again", self.addr);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.down();
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Endpoints that misbehave, each in its own way, on one local port each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Answers 200, but only after 5× the delivery timeout.
    Slow,
    /// Reads the request and never answers.
    Hang,
    /// Answers 500 with an endless body.
    HugeBody,
    /// Sends `200 OK` with a 1,000-byte Content-Length, 100 bytes of it, and hangs up.
    DropMidResponse,
    /// Resets the connection as soon as it is accepted.
    Reset,
    /// Redirects to the cloud metadata address.
    RedirectToPrivate,
    /// Answers bytes that are not HTTP.
    Garbage,
}

impl Misbehaviour {
    pub const ALL: [Misbehaviour; 7] = [
        Misbehaviour::Slow,
        Misbehaviour::Hang,
        Misbehaviour::HugeBody,
        Misbehaviour::DropMidResponse,
        Misbehaviour::Reset,
        Misbehaviour::RedirectToPrivate,
        Misbehaviour::Garbage,
    ];

    fn name(self) -> &'static str {
        match self {
            Misbehaviour::Slow => "slow (answers after 5× the timeout)",
            Misbehaviour::Hang => "never answers",
            Misbehaviour::HugeBody => "500 with an endless body",
            Misbehaviour::DropMidResponse => "drops the connection mid-response",
            Misbehaviour::Reset => "resets the connection",
            Misbehaviour::RedirectToPrivate => "redirects to 169.254.169.254",
            Misbehaviour::Garbage => "answers garbage, not HTTP",
        }
    }
}

/// A local server for one [`Misbehaviour`].
struct BadEndpoint {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl BadEndpoint {
    async fn start(how: Misbehaviour, timeout: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a bad endpoint");
        let url = format!("http://{}/bad", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(misbehave(stream, how, timeout));
            }
        });
        Self { url, task }
    }
}

impl Drop for BadEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head and Content-Length body), so the hub's send completes.
async fn read_request(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            return true;
        }
    }
}

async fn misbehave(mut stream: tokio::net::TcpStream, how: Misbehaviour, timeout: Duration) {
    use tokio::io::AsyncWriteExt;
    if how == Misbehaviour::Reset {
        // SO_LINGER 0: closing sends RST instead of FIN.
        let _ = stream.set_zero_linger();
        return;
    }
    // Keep-alive: answer every request on the connection the same way.
    while read_request(&mut stream).await {
        match how {
            Misbehaviour::Slow => {
                tokio::time::sleep(timeout * 5).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
            Misbehaviour::Hang => {
                // Until the hub hangs up.
                std::future::pending::<()>().await;
            }
            Misbehaviour::HugeBody => {
                let head =
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 1073741824\r\n\r\n";
                if stream.write_all(head).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 64 * 1024];
                while stream.write_all(&block).await.is_ok() {}
                return;
            }
            Misbehaviour::DropMidResponse => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                    .await;
                let _ = stream.write_all(&[b'y'; 100]).await;
                return;
            }
            Misbehaviour::RedirectToPrivate => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data/\r\n\
                          content-length: 0\r\n\r\n",
                    )
                    .await;
            }
            Misbehaviour::Garbage => {
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
                return;
            }
            Misbehaviour::Reset => return,
        }
    }
}

/// Bad endpoints beside a healthy one.
#[derive(Debug, Clone)]
pub struct BadEndpointsOptions {
    pub backend: Backend,
    /// Open-loop publish rate of each phase, events/s.
    pub rate: f64,
    /// Length of each phase.
    pub seconds: f64,
    /// `IH_DELIVERY_TIMEOUT_SECONDS`.
    pub timeout: Duration,
    pub launch: Launch,
}

/// Measures the healthy endpoint's latency alone, then with every [`Misbehaviour`] subscribed
/// to the same events; checks that each bad endpoint's attempt is recorded as a failure within
/// the timeout, and that the healthy endpoint still gets every event.
pub async fn bad_endpoints(options: &BadEndpointsOptions) -> Option<Report> {
    let db = TestDb::create(options.backend).await?;
    let receiver = BenchReceiver::start().await;
    let client = client();
    let timeout_s = options.timeout.as_secs_f64();
    let hub = options
        .launch
        .start(
            &db,
            &[("IH_DELIVERY_TIMEOUT_SECONDS", format!("{timeout_s}"))],
        )
        .await;
    subscribe(&client, &hub.base, &receiver.url(0)).await;
    let mut report = Report::new(format!(
        "bad endpoints beside a healthy one, {} events/s, timeout {timeout_s} s ({})",
        options.rate,
        backend_name(options.backend)
    ));

    let events = (options.rate * options.seconds).round() as usize;
    let mut first_seq = 0;
    let mut latencies = Vec::new();
    for with_bad in [false, true] {
        let _bad: Vec<BadEndpoint> = if with_bad {
            let bad = attach_bad_endpoints(&client, &hub.base, options.timeout).await;
            check_bad_attempts(&client, &hub.base, &bad, options.timeout, &mut report).await;
            bad.into_iter().map(|(_, endpoint)| endpoint).collect()
        } else {
            Vec::new()
        };
        let phase = Phase {
            name: if with_bad { "with bad" } else { "healthy only" },
            first_seq,
            events,
            subscriptions: 1,
        };
        first_seq += events as u64;
        receiver.begin(phase);
        let publisher = Publisher::new(&hub.base, &client, PAYLOAD_BYTES, phase);
        let refused = publisher.open_loop(options.rate).await;
        let missing = receiver.wait_none_missing(&refused, STALL).await;
        let tally = receiver.tally(&refused);
        let l = tally.latency;
        report.figure(
            format!("healthy endpoint latency, {}", phase.name),
            format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50, l.p90, l.p99, l.max
            ),
        );
        latencies.push(l.p99);
        report.check(
            missing == 0 && refused.is_empty(),
            &format!("{}: the healthy endpoint gets every event", phase.name),
            format!("{missing} missing, {} publishes refused", refused.len()),
        );
    }
    if let [alone, beside_bad] = latencies[..] {
        report.figure(
            "healthy p99 beside bad endpoints / alone",
            format!("{:.2}×", beside_bad / alone.max(0.001)),
        );
    }
    keep_log(
        &hub,
        &format!("bad-endpoints-{}", backend_name(options.backend)),
    );
    drop(hub);
    Some(report)
}

/// Subscribes one endpoint of each misbehaviour to every event.
async fn attach_bad_endpoints(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> Vec<(Misbehaviour, BadEndpoint)> {
    let mut bad = Vec::new();
    for how in Misbehaviour::ALL {
        let endpoint = BadEndpoint::start(how, timeout).await;
        subscribe(client, base, &endpoint.url).await;
        bad.push((how, endpoint));
    }
    bad
}

/// Publishes one event and checks the first attempt at each bad endpoint: a recorded failure,
/// with an error, that took no longer than the timeout (plus a second of slack).
async fn check_bad_attempts(
    client: &reqwest::Client,
    base: &str,
    bad: &[(Misbehaviour, BadEndpoint)],
    timeout: Duration,
    report: &mut Report,
) {
    let response = client
        .post(format!("{base}/api/v1/events"))
        .json(&serde_json::json!({"event_type": EVENT_TYPE, "payload": {"seq": u64::MAX, "sent_us": 0}}))
        .send()
        .await
        .expect("publish the probe event");
    assert_eq!(
        response.status().as_u16(),
        202,
        "publishing the probe event"
    );
    let event: serde_json::Value = response.json().await.expect("event JSON");
    let id = event["id"].as_str().expect("event id").to_owned();
    let deadline = Instant::now() + timeout * 3 + Duration::from_secs(10);
    let attempts = loop {
        let attempts: serde_json::Value = client
            .get(format!("{base}/api/v1/admin/events/{id}/attempts"))
            .send()
            .await
            .expect("list attempts")
            .json()
            .await
            .expect("attempts JSON");
        let list = attempts["data"].as_array().cloned().unwrap_or_default();
        let covered = bad.iter().all(|(_, endpoint)| {
            list.iter()
                .any(|a| a["destination"]["url"] == endpoint.url.as_str())
        });
        if covered || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let bound_ms = timeout.as_millis() as u64 + 1000;
    for (how, endpoint) in bad {
        let first = attempts
            .iter()
            .find(|a| a["destination"]["url"] == endpoint.url.as_str());
        let Some(first) = first else {
            report.check(
                false,
                &format!("{}: an attempt is recorded", how.name()),
                "no attempt recorded",
            );
            continue;
        };
        let error = first["error"].as_str().unwrap_or_default();
        let took = first["duration_ms"].as_u64().unwrap_or(u64::MAX);
        report.figure(
            format!("attempt at an endpoint that {}", how.name()),
            format!("failed after {took} ms: {error}"),
        );
        report.check(
            first["outcome"] == "failed" && !error.is_empty() && took <= bound_ms,
            &format!(
                "{}: recorded as a failure with its cause, within {bound_ms} ms",
                how.name()
            ),
            format!("{first}"),
        );
    }
}
