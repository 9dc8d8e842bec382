//! Logging: JSON lines by default (one object per line, for log shippers), or a readable format
//! for people (`IH_LOG_FORMAT=pretty`). The level comes from `IH_LOG_LEVEL`, which also accepts
//! full tracing filters such as `info,integrations_hub=debug`.

use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Targets that are noise at the hub's levels unless a filter names them: sqlx logs every
/// statement at info; wasmtime's compiler (cranelift) logs tens of thousands of lines per module
/// at debug.
const QUIET: [&str; 6] = [
    "sqlx",
    "cranelift_codegen",
    "cranelift_frontend",
    "wasmtime_internal_cranelift",
    "wasmtime_cranelift",
    "regalloc2",
];

/// The filter of `IH_LOG_LEVEL`, with [`QUIET`]'s targets at warn unless it names them.
pub fn directives(level: &str) -> String {
    let mut directives = level.to_owned();
    for target in QUIET {
        if !level.contains(target) {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    directives
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(config: &Config) {
    let filter = EnvFilter::try_new(directives(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_noise_stays_off_unless_its_target_is_named() {
        let plain = directives("debug");
        assert!(plain.starts_with("debug,"), "{plain}");
        assert!(
            plain.contains("cranelift_codegen=warn") && plain.contains("sqlx=warn"),
            "{plain}"
        );
        let asked = directives("debug,cranelift_codegen=debug");
        assert!(!asked.contains("cranelift_codegen=warn"), "{asked}");
        assert!(asked.contains("sqlx=warn"), "{asked}");
        EnvFilter::try_new(asked).expect("a valid filter");
    }
}
