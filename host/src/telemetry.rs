//! Logging: JSON lines by default (one object per line, for log shippers), or a readable format
//! for people (`IH_LOG_FORMAT=pretty`). The level comes from `IH_LOG_LEVEL`, which also accepts
//! full tracing filters such as `info,integrations_hub=debug`.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(config: &Config) {
    // sqlx logs every statement at info; that is noise unless asked for explicitly.
    let directives = if config.log_level.contains('=') {
        config.log_level.clone()
    } else {
        format!("{},sqlx=warn", config.log_level)
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
}
