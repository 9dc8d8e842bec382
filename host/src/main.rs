//! The `integrations-hub` binary: `serve` (the default), `migrate`, and the connector author kit
//! (`connector new`, `connector test`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use integrations_hub::config::settings;
use integrations_hub::{Config, kit, run, shutdown_signal, store, telemetry};

/// Integrations Hub — signed webhooks and WebAssembly connectors for your product's events.
#[derive(Debug, Parser)]
#[command(
    name = "integrations-hub",
    version,
    after_help = "The hub is configured by IH_* environment variables; see the README."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the hub (the default)
    Serve,
    /// Apply database migrations and exit
    Migrate,
    /// Write and try connectors (the author kit)
    #[command(subcommand)]
    Connector(ConnectorCommand),
}

#[derive(Debug, Subcommand)]
enum ConnectorCommand {
    /// Write a standalone connector crate from the template, ready to build and test
    New {
        /// The connector's name: lower-case letters, digits, `-` and `_`
        name: String,
        /// Where to write it (default: ./NAME)
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a connector once in the hub's sandbox and print what it did (exit 1 unless the outcome
    /// is the expected one)
    Test {
        /// The component (.wasm)
        file: PathBuf,
        /// The event, as the publish API takes it: {"event_type": …, "payload": {…}}
        #[arg(long)]
        event: PathBuf,
        /// A setting, as an instance's (repeatable)
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Scripted HTTP answers (JSON list of {method, url, status, headers, body}, matched by
        /// URL prefix); without it, requests go to the granted hosts for real
        #[arg(long, value_name = "FIXTURES.json")]
        http: Option<PathBuf>,
        /// Replaces the manifest's allowed hosts (as IH_<NAME>_ALLOWED_HOSTS)
        #[arg(long, value_name = "HOSTS")]
        allow: Option<String>,
        /// Lets real requests reach private addresses (as IH_ALLOW_PRIVATE_DESTINATIONS)
        #[arg(long)]
        allow_private: bool,
        /// The attempt number the connector is told
        #[arg(long, default_value_t = 1)]
        attempt: u32,
        /// The attempt budget the connector is told
        #[arg(long, default_value_t = 5)]
        max_attempts: u32,
        /// The call's time budget (IH_CONNECTOR_TIMEOUT_SECONDS)
        #[arg(long, default_value = settings::CONNECTOR_TIMEOUT.default)]
        timeout_seconds: f64,
        /// The memory limit (IH_CONNECTOR_MEMORY_MB)
        #[arg(long, default_value = settings::CONNECTOR_MEMORY_MB.default)]
        memory_mb: u64,
        /// The outcome that passes: ok, skipped, retry, permanent or any
        #[arg(long, default_value = "ok")]
        expect: String,
        /// Print the report as one JSON object
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let migrate = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => false,
        Command::Migrate => true,
        Command::Connector(command) => return connector(command).await,
    };
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
    let result = if migrate {
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

/// The author kit's commands: their report is their output, so it goes to stdout.
#[allow(clippy::print_stdout)]
async fn connector(command: ConnectorCommand) -> ExitCode {
    match command {
        ConnectorCommand::New { name, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            match kit::new_connector(&name, &dir) {
                Ok(files) => {
                    println!("wrote {} files into {}", files.len(), dir.display());
                    println!(
                        "next: cd {} && cargo test && cargo build --release --target wasm32-wasip2",
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("integrations-hub connector new: {why}");
                    ExitCode::from(2)
                }
            }
        }
        ConnectorCommand::Test {
            file,
            event,
            config,
            http,
            allow,
            allow_private,
            attempt,
            max_attempts,
            timeout_seconds,
            memory_mb,
            expect,
            json,
        } => {
            if !(0.01..=300.0).contains(&timeout_seconds) {
                eprintln!("integrations-hub connector test: --timeout-seconds must be 0.01 to 300");
                return ExitCode::from(2);
            }
            let args = kit::TestArgs {
                file,
                event,
                config,
                http,
                allow,
                allow_private,
                attempt,
                max_attempts,
                timeout: Duration::from_secs_f64(timeout_seconds),
                memory_mb: memory_mb.clamp(1, 4096),
                json,
                expect,
            };
            match kit::test_connector(&args).await {
                Ok((report, passed)) => {
                    println!("{report}");
                    if passed {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(why) => {
                    eprintln!("integrations-hub connector test: {why}");
                    ExitCode::from(2)
                }
            }
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
