//! The test harness: the real hub (in-process on port 0, or as a process of its own), a fresh
//! database per test, a webhook receiver ([`receiver`]), and [`Api`], a client whose every call
//! states the status it expects.
//!
//! Every test runs against both backends through [`backend_tests!`]: SQLite in a temporary
//! directory, and PostgreSQL in a fresh database created for that test alone (dropped afterwards).
//! Postgres is found at `IH_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! When it is unreachable the Postgres variants are skipped with a plain notice on stderr, except
//! under `CI=true`, where a missing database fails the run.

use std::io::Write;
use std::sync::Once;
use std::time::Duration;

use integrations_hub::Config;
use sqlx::Connection;
use tokio::sync::oneshot;

pub use integrations_hub;

pub mod client;
pub mod fixtures;
pub mod receiver;

pub use client::{Api, send};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("IH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test that cannot run here for want of `what`: under CI (`CI=true`) that fails it, since CI
/// provides everything; elsewhere it prints a `SKIPPED` line saying why and how to get it, and
/// the caller returns without testing.
pub fn skip_unless_ci(test: &str, what: &str, how: &str) {
    assert!(!in_ci(), "CI=true: the {test} needs {what}, but: {how}");
    eprintln!("*** {test} SKIPPED: {what} missing ({how})");
}

static SKIP_NOTICE: Once = Once::new();

/// A database for one test. Dropping it removes it.
#[derive(Debug)]
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl TestDb {
    /// A fresh, empty database, or `None` when Postgres is wanted but unreachable (outside CI).
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("data/hub.db").display());
                Some(Self {
                    backend,
                    url,
                    _dir: Some(dir),
                    pg_name: None,
                })
            }
            Backend::Postgres => {
                let admin = admin_url();
                let connect = tokio::time::timeout(
                    Duration::from_secs(5),
                    sqlx::PgConnection::connect(&admin),
                )
                .await;
                let mut conn = match connect {
                    Ok(Ok(c)) => c,
                    failure => {
                        let why = match failure {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        if in_ci() {
                            panic!(
                                "CI=true: the Postgres suite must run, but {admin} is unreachable: {why}"
                            );
                        }
                        SKIP_NOTICE.call_once(|| {
                            // Written straight to stderr: the test harness captures eprintln!.
                            let _ = writeln!(
                                std::io::stderr(),
                                "\n*** Postgres suite SKIPPED: {admin} is unreachable ({why}).\n\
                                 *** These tests ran on SQLite only. Start PostgreSQL or set IH_TEST_POSTGRES_URL;\n\
                                 *** with CI=true this is a failure.\n"
                            );
                        });
                        return None;
                    }
                };
                let name = format!("ih_test_{}", uuid::Uuid::now_v7().simple());
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("CREATE DATABASE for the test");
                let mut url = url::Url::parse(&admin).expect("IH_TEST_POSTGRES_URL is a URL");
                url.set_path(&name);
                Some(Self {
                    backend,
                    url: url.to_string(),
                    _dir: None,
                    pg_name: Some(name),
                })
            }
        }
    }

    /// Deliveries not finished yet (pending or in flight), read straight from the database:
    /// how a test knows the engine has settled, including re-attempts after a crash.
    pub async fn unfinished_deliveries(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM deliveries WHERE status IN ('pending', 'in_flight')";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("open SQLite");
                sqlx::query_scalar(sql)
                    .fetch_one(&mut conn)
                    .await
                    .expect("count")
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("open Postgres");
                sqlx::query_scalar(sql)
                    .fetch_one(&mut conn)
                    .await
                    .expect("count")
            }
        }
    }

    /// Every stored subscription secret as `(key_id, secret column)`, read straight from the
    /// database: what someone with a copy of it would see.
    pub async fn stored_secrets(&self) -> Vec<(String, String)> {
        let sql = "SELECT key_id, secret FROM subscription_secrets ORDER BY id";
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("open SQLite");
                sqlx::query_as(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("read")
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("open Postgres");
                sqlx::query_as(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("read")
            }
        }
    }

    /// A SQLite database at `path` (created by the first hub started on it); the caller owns
    /// the folder.
    pub fn sqlite_file(path: &std::path::Path) -> TestDb {
        TestDb {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", path.display()),
            _dir: None,
            pg_name: None,
        }
    }

    /// Another handle on the same database (a second hub instance); it does not drop it.
    pub fn share(&self) -> TestDb {
        TestDb {
            backend: self.backend,
            url: self.url.clone(),
            _dir: None,
            pg_name: None,
        }
    }

    /// Drops the Postgres database now, terminating its connections (to test outages).
    pub async fn drop_now(&self) {
        if let Some(name) = &self.pg_name {
            let mut conn = sqlx::PgConnection::connect(&admin_url())
                .await
                .expect("admin connection");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .expect("DROP DATABASE");
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee: use a private one on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url()).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// A real hub serving on 127.0.0.1:0, stopped when dropped. Its API is reached through
/// [`Api`] (`hub.post_json(…)`, `hub.subscribe(…)`, …).
#[derive(Debug)]
pub struct TestHub {
    pub api: Api,
    db: Option<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// `IH_CONNECTORS_DIR` of this hub: a fresh directory unless the test set one.
    pub connectors_dir: std::path::PathBuf,
    _connectors_tmp: Option<tempfile::TempDir>,
}

impl TestHub {
    /// Starts a hub on a fresh database of `backend`; `None` if that backend is skipped.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, &[]).await
    }

    /// As [`TestHub::start`], with extra `IH_*` variables.
    pub async fn start_with(backend: Backend, vars: &[(&str, &str)]) -> Option<Self> {
        let db = TestDb::create(backend).await?;
        Some(Self::start_on(db, vars).await)
    }

    /// Starts a hub on an existing database (e.g. after a crash or a stop).
    pub async fn start_on(db: TestDb, vars: &[(&str, &str)]) -> Self {
        let mut all: Vec<(String, String)> = vec![
            ("IH_DATABASE_URL".into(), db.url.clone()),
            ("IH_DATABASE_MAX_CONNECTIONS".into(), "4".into()),
            ("IH_BIND".into(), "127.0.0.1:0".into()),
        ];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let connectors_tmp = if vars.iter().any(|(k, _)| *k == "IH_CONNECTORS_DIR") {
            None
        } else {
            let dir = tempfile::tempdir().expect("connectors directory");
            all.push(("IH_CONNECTORS_DIR".into(), dir.path().display().to_string()));
            Some(dir)
        };
        let config = Config::from_vars(all).expect("test configuration is valid");
        let connectors_dir = config.connectors.dir.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(integrations_hub::run(config, listener, async {
            let _ = rx.await;
        }));
        let hub = Self {
            api: Api::new(base),
            db: Some(db),
            shutdown: Some(tx),
            task: Some(task),
            connectors_dir,
            _connectors_tmp: connectors_tmp,
        };
        hub.wait_healthy().await;
        hub
    }

    pub fn db(&self) -> &TestDb {
        self.db
            .as_ref()
            .expect("database present until the hub is consumed")
    }

    /// Simulates a crash: the hub's task is aborted mid-flight (no drain, no lease release).
    /// Returns the database to start another hub on.
    pub async fn crash(mut self) -> TestDb {
        self.shutdown.take();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.db.take().expect("database")
    }

    async fn wait_healthy(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.http.get(self.url("/health")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("hub at {} did not become healthy", self.base);
    }

    /// Stops the hub gracefully; returns what `run` returned and the database.
    pub async fn stop(mut self) -> (anyhow::Result<()>, TestDb) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = match self.task.take() {
            Some(task) => task.await.expect("hub task panicked"),
            None => Ok(()),
        };
        (result, self.db.take().expect("database"))
    }
}

impl std::ops::Deref for TestHub {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A connector component this build produced (`slack_connector`, `example_connector`,
/// `fixture_connector`), read from the directory the hub's `build.rs` built them into.
pub fn built_wasm(stem: &str) -> Vec<u8> {
    let dir = integrations_hub::connectors::BUILT_WASM_DIR;
    assert!(
        !dir.is_empty(),
        "the connectors were not built (is the wasm32-wasip2 target installed?)"
    );
    let path = std::path::Path::new(dir).join(format!("{stem}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The fixture connector renamed and re-versioned: its identity string is patched in place
/// (same length), which makes a different connector, or a new version, from one build.
pub fn fixture_wasm(name: &str, version: &str) -> Vec<u8> {
    const ORIGINAL: &str = "IH-FIXTURE-IDENTITY:name=fixture;version=1.0.0;...................";
    let mut bytes = built_wasm("fixture_connector");
    let mut identity = format!("IH-FIXTURE-IDENTITY:name={name};version={version};");
    assert!(identity.len() <= ORIGINAL.len(), "identity too long");
    while identity.len() < ORIGINAL.len() {
        identity.push('.');
    }
    let at = bytes
        .windows(ORIGINAL.len())
        .position(|w| w == ORIGINAL.as_bytes())
        .expect("the fixture's identity string is in the component");
    bytes[at..at + ORIGINAL.len()].copy_from_slice(identity.as_bytes());
    bytes
}

/// Writes a connector into a directory the way an operator should: to a temporary name, then
/// renamed into place, so the watcher never sees half a file.
pub fn deploy(dir: &std::path::Path, file: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, bytes).expect("write connector");
    std::fs::rename(&tmp, dir.join(file)).expect("rename connector into place");
}

/// The `integrations-hub` binary that `cargo test --workspace` builds beside the test executables.
pub fn hub_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let binary = profile_dir.join(format!("integrations-hub{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: run the whole suite with `cargo test --workspace`",
        binary.display()
    );
    binary
}

/// A hub running as its own process (so it can be killed with SIGKILL).
#[derive(Debug)]
pub struct HubProcess {
    pub api: Api,
    child: std::process::Child,
    _connectors: tempfile::TempDir,
    /// Everything the hub logged (JSON lines), up to [`LOG_LINES`].
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Log lines a [`HubProcess`] keeps; later ones are dropped (a benchmark logs millions).
const LOG_LINES: usize = 50_000;

impl HubProcess {
    /// Starts the binary on `db` with `vars`, and waits until it serves.
    pub async fn start(db: &TestDb, vars: &[(&str, &str)]) -> Self {
        Self::start_program(&hub_binary(), &[], db, vars).await
    }

    /// Starts `program args…` (the hub binary, or a program that runs the same `serve`) on `db`
    /// with `vars`, and waits until it serves.
    pub async fn start_program(
        program: &std::path::Path,
        args: &[String],
        db: &TestDb,
        vars: &[(&str, &str)],
    ) -> Self {
        Self::try_start_program(program, args, db, vars)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// Starts the binary on `db` with `vars`: the serving hub, or, when it exits or does not
    /// serve within 30 s, why and its whole log (to test a refused start).
    pub async fn try_start(db: &TestDb, vars: &[(&str, &str)]) -> Result<Self, String> {
        Self::try_start_program(&hub_binary(), &[], db, vars).await
    }

    async fn try_start_program(
        program: &std::path::Path,
        args: &[String],
        db: &TestDb,
        vars: &[(&str, &str)],
    ) -> Result<Self, String> {
        use std::io::BufRead;
        let connectors = tempfile::tempdir().expect("connectors directory");
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("IH_CONNECTORS_DIR", connectors.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("IH_DATABASE_URL", &db.url)
            .env("IH_BIND", "127.0.0.1:0")
            .env("IH_LOG_FORMAT", "json")
            .env("IH_DATABASE_MAX_CONNECTIONS", "4")
            .stderr(std::process::Stdio::piped());
        for (k, v) in vars {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start the hub binary");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        // Reads the log on a thread: first the listening address, then it drains the rest.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                {
                    let mut kept = kept.lock().expect("log lock");
                    if kept.len() < LOG_LINES {
                        kept.push(line.clone());
                    }
                }
                if let Some(sender) = tx.take() {
                    match serde_json::from_str::<serde_json::Value>(&line) {
                        Ok(entry) if entry["message"] == "integrations hub listening" => {
                            let _ =
                                sender.send(entry["addr"].as_str().unwrap_or_default().to_owned());
                        }
                        _ => tx = Some(sender),
                    }
                }
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(addr)) => addr,
            failed => {
                let why = if failed.is_err() {
                    "did not log its address within 30 s"
                } else {
                    "exited"
                };
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                let log = log.lock().expect("log lock").join("\n");
                return Err(format!("the hub {why} ({status}); its log:\n{log}"));
            }
        };
        Ok(Self {
            api: Api::new(format!("http://{addr}")),
            child,
            _connectors: connectors,
            log,
        })
    }

    /// The hub's `IH_CONNECTORS_DIR`.
    pub fn connectors_dir(&self) -> &std::path::Path {
        self._connectors.path()
    }

    /// What the hub has logged so far, one JSON object per line.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// The process id (for its CPU time and memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no lease release, nothing flushed.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::ops::Deref for HubProcess {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Generates a `sqlite` and a `postgres` test for each `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The hub, as `integrations-hub serve` runs it: configuration from `IH_*`, logs, `run`.
///
/// The benchmark and fault binaries re-run themselves with `serve-hub` to start hubs built
/// from the same library and profile as they are.
pub fn serve_hub() -> std::process::ExitCode {
    use anyhow::Context as _;
    let config = match integrations_hub::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = integrations_hub::telemetry::init(&config);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {}", config.bind))?;
        integrations_hub::run(config, listener, integrations_hub::shutdown_signal()).await
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
