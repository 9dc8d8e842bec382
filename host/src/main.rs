//! The `integrations-hub` binary: `serve` (the default) or `migrate`.

use std::process::ExitCode;

use anyhow::Context;
use integrations_hub::{Config, run, shutdown_signal, store, telemetry};

const USAGE: &str = "\
Integrations Hub — signed webhooks and WebAssembly connectors for your product's events

Usage: integrations-hub [COMMAND]

Commands:
  serve      Start the hub (default)
  migrate    Apply database migrations and exit

Configuration comes from IH_* environment variables; see the README.";

#[tokio::main]
async fn main() -> ExitCode {
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "serve".to_owned());
    match command.as_str() {
        "serve" | "migrate" => {}
        "-h" | "--help" | "help" => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        "-V" | "--version" => {
            eprintln!("integrations-hub {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("integrations-hub: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let result = if command == "migrate" {
        store::migrate(&config)
            .await
            .context("applying migrations")
            .map(|()| tracing::info!("migrations applied"))
    } else {
        serve(config).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "integrations-hub failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| {
            format!(
                "binding IH_BIND={} (is another process using the port?)",
                config.bind
            )
        })?;
    run(config, listener, shutdown_signal()).await
}
