//! The hub as a whole: [`run`] wires storage, API and background work together and serves until
//! `shutdown` completes. Tests call it with a listener on port 0, exactly as `main` does with
//! the configured address.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store;

/// Runs one hub instance on `listener` until `shutdown` resolves, then stops accepting
/// connections and lets in-flight requests finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = store::connect(&config)
        .await
        .with_context(|| format!("opening the database {}", config.database_url.redacted()))?;
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(
        %addr,
        database = %store.backend(),
        auth = if config.api_keys.is_empty() { "off (loopback only)" } else { "api keys" },
        "integrations hub listening"
    );
    let state = AppState::new(config, store, Arc::new(Metrics::new()));
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
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
