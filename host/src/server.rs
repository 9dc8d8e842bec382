//! The hub as a whole: [`run`] wires storage, API and background work together and serves until
//! `shutdown` completes. Tests call it with a listener on port 0, exactly as `main` does with
//! the configured address.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::connectors::Connectors;
use crate::delivery::{Engine, Sender, maintenance};
use crate::egress;
use crate::metrics::Metrics;
use crate::store;

/// Runs one hub instance on `listener` until `shutdown` resolves, then stops accepting
/// connections and lets in-flight requests finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Held until `run` ends (returns, or is dropped): one hub per SQLite file.
    let _database_lock = store::hold_database(&config)
        .await
        .with_context(|| format!("opening the {}", config.database_url.describe()))?;
    let store = store::connect(&config)
        .await
        .with_context(|| format!("opening the {}", config.database_url.describe()))?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(
        %addr,
        database = %store.backend(),
        auth = if config.api_keys.is_empty() { "off (loopback only)" } else { "api keys" },
        secrets = match config.encryption_keys.first() {
            Some(key) => format!("sealed with key {}", store::key_id(key)),
            None => "stored unencrypted (no IH_ENCRYPTION_KEY; loopback only)".to_owned(),
        },
        "integrations hub listening"
    );
    let metrics = Arc::new(Metrics::new());
    let wake = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);

    // One HTTP client (keep-alive pool, SSRF guard, no redirects) for webhooks and connectors.
    let user_agent = format!("integrations-hub/{}", env!("CARGO_PKG_VERSION"));
    let policy = egress::Policy::from_config(&config);
    let client = egress::build(config.delivery.timeout, &policy, &user_agent)
        .context("building the delivery HTTP client")?;
    let connectors = Connectors::start(
        &config.connectors,
        config.delivery.concurrency,
        client.clone(),
        policy.clone(),
        metrics.clone(),
        Some(store.clone()),
    )
    .await
    .map_err(anyhow::Error::msg)
    .context("starting the connector runtime")?;
    for name in config.connectors.settings.keys() {
        if !connectors.reads_variable(name) {
            tracing::warn!("{}", crate::config::settings::unread_warning(name));
        }
    }
    let watcher = tokio::spawn(connectors.clone().watch(stop_rx.clone()));

    let sender = Sender::new(client, connectors.clone(), &config.delivery, policy.clone());
    let engine = Engine::new(
        store.clone(),
        config.delivery.clone(),
        metrics.clone(),
        wake.clone(),
        sender.clone(),
        connectors.clone(),
    );
    let engine = tokio::spawn(Arc::new(engine).run(stop_rx.clone()));
    let peers = tokio::spawn({
        let (store, wake, stop) = (store.clone(), wake.clone(), stop_rx.clone());
        async move { store.listen_for_work(wake, stop).await }
    });
    let stats = tokio::spawn(maintenance::refresh_stats(
        store.clone(),
        metrics.clone(),
        stop_rx.clone(),
    ));
    let retention = chrono::TimeDelta::days(i64::from(config.retention_days));
    let pruning = tokio::spawn(maintenance::prune(
        store.clone(),
        retention,
        stop_rx.clone(),
    ));

    let rollup = tokio::spawn(maintenance::roll_up(store.clone(), stop_rx.clone()));
    let notices = tokio::spawn(maintenance::publish_notices(
        store.clone(),
        wake.clone(),
        stop_rx.clone(),
    ));

    let state = AppState::new(config, store, metrics, wake, connectors, sender, stop_rx);
    let served = axum::serve(listener, api::router(state))
        .with_graceful_shutdown({
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                // Intake stops first; then the engine drains what it holds.
                let _ = stop_tx.send(true);
            }
        })
        .await
        .context("serving HTTP");
    // Also when serving failed: background work must not outlive `run`.
    let _ = stop_tx.send(true);
    for task in [engine, peers, stats, pruning, rollup, notices, watcher] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "a background task failed");
        }
    }
    served?;
    tracing::info!("integrations hub stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
}
