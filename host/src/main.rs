//! The `integrations-hub` binary: `serve` (the default), `migrate`, and the connector author kit
//! (`connector new`, `connector test`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use integrations_hub::config::settings;
use integrations_hub::{Config, kit, run, shutdown_signal, store, telemetry};

/// Integrations Hub — signed webhooks and WebAssembly connectors for your product's events.
#[derive(Debug, Parser)]
#[command(
    name = "integrations-hub",
    version,
    after_help = "The hub is configured by IH_* environment variables (or the flags of `serve`, which override them); see the README."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the hub (the default)
    Serve(Flags),
    /// Apply database migrations and exit
    Migrate(Flags),
    /// Write and try connectors (the author kit)
    #[command(subcommand)]
    Connector(ConnectorCommand),
    /// Ask a running hub whether it is ready (exit 0) or not (exit 1): for HEALTHCHECK
    Health {
        /// The hub's address (default: from IH_BIND, a wildcard bind asked on loopback)
        #[arg(long)]
        url: Option<String>,
        /// Ask only whether the process answers (/livez), not the database (/readyz)
        #[arg(long)]
        live: bool,
    },
}

/// One flag per setting of `config/settings.rs` (`--delivery-max-attempts` for
/// `IH_DELIVERY_MAX_ATTEMPTS`, …), derived from the declarations, never listed twice: the values
/// given, as `(IH_NAME, value)`.
#[derive(Debug, Clone, Default)]
struct Flags(Vec<(String, String)>);

/// The settings that have a flag (all but the per-connector families), with the flag's name.
fn flagged() -> impl Iterator<Item = (&'static settings::Setting, String)> {
    settings::ALL
        .iter()
        .filter(|s| s.kind != settings::Kind::PerConnector)
        .map(|s| (s, s.name.to_ascii_lowercase().replace('_', "-")))
}

impl clap::FromArgMatches for Flags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(
            flagged()
                .filter_map(|(s, flag)| {
                    let value = matches.get_one::<String>(&flag)?;
                    Some((s.variable(), value.clone()))
                })
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for Flags {
    fn augment_args(command: clap::Command) -> clap::Command {
        flagged().fold(command, |command, (s, flag)| {
            let default = match s.default {
                "" => String::new(),
                d => format!(" [default: {d}]"),
            };
            command.arg(
                clap::Arg::new(flag.clone())
                    .long(flag)
                    .value_name("VALUE")
                    .help(format!("{} [env: {}]{default}", s.help, s.variable())),
            )
        })
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
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
    Test(kit::TestArgs),
    /// Make an ed25519 key for signing components: writes the private key, prints the public
    /// key to list in IH_COMPONENTS_TRUSTED_KEYS
    Keygen {
        /// Where to write the private key (PKCS#8 PEM; must not exist)
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a component (connector) with an ed25519 private key; the signature goes inside the
    /// file, replacing an earlier one
    Sign {
        /// The component (.wasm)
        file: PathBuf,
        /// The private key (PKCS#8 PEM from `connector keygen` or `openssl genpkey -algorithm
        /// ed25519`)
        #[arg(long)]
        key: PathBuf,
        /// Write the signed component here instead of replacing FILE
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Say who signed a component (exit 1 when it is unsigned or its signature does not verify)
    Verify {
        /// The component (.wasm)
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (migrate, flags) = match cli.command.unwrap_or(Command::Serve(Flags::default())) {
        Command::Serve(flags) => (false, flags),
        Command::Migrate(flags) => (true, flags),
        Command::Connector(command) => return connector(command).await,
        Command::Health { url, live } => return health(url, live).await,
    };
    // A flag overrides its variable: it comes later into the same map.
    let config = match Config::from_vars(std::env::vars().chain(flags.0)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("integrations-hub: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // Held to the end: dropping it flushes the last traces.
    let _telemetry = telemetry::init(&config);
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
            tracing::error!(error = causes(&e), "integrations-hub failed");
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
        ConnectorCommand::Keygen { out } => match kit::keygen(&out) {
            Ok(public) => {
                println!("wrote the private key to {}; keep it secret", out.display());
                println!("public key: {public}");
                println!("trust it with: IH_COMPONENTS_TRUSTED_KEYS={public}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("integrations-hub connector keygen: {why}");
                ExitCode::from(2)
            }
        },
        ConnectorCommand::Sign { file, key, out } => match kit::sign(&file, &key, out.as_deref()) {
            Ok(key_id) => {
                let out = out.as_deref().unwrap_or(&file);
                println!("signed {} with key {key_id}", out.display());
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("integrations-hub connector sign: {why}");
                ExitCode::from(2)
            }
        },
        ConnectorCommand::Verify { file } => match kit::verify(&file) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("integrations-hub connector verify: {why}");
                ExitCode::FAILURE
            }
        },
        ConnectorCommand::Test(args) => match kit::test_connector(&args).await {
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
        },
    }
}

/// `integrations-hub health`: one probe of a running hub; the answer's body goes to stdout.
#[allow(clippy::print_stdout)]
async fn health(url: Option<String>, live: bool) -> ExitCode {
    let base = url.unwrap_or_else(|| {
        let bind = std::env::var("IH_BIND")
            .ok()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| settings::BIND.default.to_owned());
        let bind = bind
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        format!("http://{bind}")
    });
    let path = if live { "/livez" } else { "/readyz" };
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build();
    let answer = match client {
        Ok(client) => client.get(&url).send().await,
        Err(e) => {
            eprintln!("integrations-hub health: {e}");
            return ExitCode::FAILURE;
        }
    };
    match answer {
        Ok(response) => {
            let ok = response.status().is_success();
            let status = response.status();
            println!("{}", response.text().await.unwrap_or_default());
            if ok {
                ExitCode::SUCCESS
            } else {
                eprintln!("integrations-hub health: {url} answered {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("integrations-hub health: no answer from {url}: {e}");
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

/// `error` and its causes, each said once: a cause whose text its error already quotes is not
/// repeated (sqlx's errors and ours quote their sources).
fn causes(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}
