//! Logging and traces. Logs: JSON lines by default (one object per line, for log shippers), or a
//! readable format for people (`IH_LOG_FORMAT=pretty`); the level comes from `IH_LOG_LEVEL`,
//! which also accepts full tracing filters such as `info,integrations_hub=debug`.
//!
//! Traces: off unless the standard OpenTelemetry variables ask for them
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
//! `OTEL_TRACES_EXPORTER=otlp`; never with `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none`). Then the hub's spans (publish, claim, attempt, connector call,
//! HTTP request) are exported over OTLP/HTTP (protobuf) in batches, configured by the SDK's own
//! `OTEL_*` variables (endpoint, headers, timeout, `OTEL_SERVICE_NAME`, `OTEL_BSP_*`).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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

/// What must outlive the hub's run: the trace exporter, flushed when this is dropped.
#[derive(Debug, Default)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(traces) = self.traces.take()
            && let Err(e) = traces.shutdown()
        {
            tracing::warn!(error = %e, "flushing the last traces failed");
        }
    }
}

/// Whether the standard variables ask for trace export.
fn traces_wanted(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let is =
        |name: &str, value: &str| env(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value));
    if is("OTEL_SDK_DISABLED", "true") || is("OTEL_TRACES_EXPORTER", "none") {
        return false;
    }
    set("OTEL_EXPORTER_OTLP_ENDPOINT")
        || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        || is("OTEL_TRACES_EXPORTER", "otlp")
}

/// The OTLP/HTTP exporter and its batching provider, from the `OTEL_*` variables.
fn trace_provider() -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        resource = resource.with_service_name("integrations-hub");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Installs the global subscriber (and the trace exporter when asked for). Call once, before
/// anything logs; keep what it returns until the hub has stopped.
pub fn init(config: &Config) -> Telemetry {
    let filter = EnvFilter::try_new(directives(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let wanted = traces_wanted(|name| std::env::var(name).ok());
    let (traces, problem) = match wanted.then(trace_provider) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    // Only the hub's own spans, whatever the log level.
    let spans = Targets::new().with_target("integrations_hub", Level::INFO);
    let exported = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("integrations-hub"))
            .with_filter(spans)
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(exported)
        .init();
    if let Some(problem) = problem {
        tracing::warn!(
            problem,
            "OTEL_* asks for traces, but they cannot be exported; going on without"
        );
    } else if traces.is_some() {
        let protocol = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_default();
        if !protocol.is_empty() && protocol != "http/protobuf" {
            tracing::warn!(
                protocol,
                "only OTLP over http/protobuf is supported; exporting with it"
            );
        }
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    Telemetry { traces }
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

    #[test]
    fn traces_are_exported_only_when_the_standard_variables_ask() {
        let with = |vars: &'static [(&'static str, &'static str)]| {
            traces_wanted(|name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        assert!(!with(&[]));
        assert!(with(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318"
        )]));
        assert!(with(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )]));
        assert!(with(&[("OTEL_TRACES_EXPORTER", "otlp")]));
        assert!(!with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true")
        ]));
        assert!(!with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none")
        ]));
        assert!(!with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
    }
}
