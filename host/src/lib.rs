//! Integrations Hub: stores your product's events durably and delivers them, signed, to
//! webhook subscribers and to sandboxed WebAssembly connectors.
//!
//! Code map, top layer first; a module imports only from layers below its own (checked by
//! `layers::tests`; `ARCHITECTURE.md` has the invariants):
//! - [`server`]: [`run`], the entry point shared by the binary and the tests; [`telemetry`];
//!   [`kit`]: the connector author kit behind `integrations-hub connector new|test`.
//! - [`api`]: the HTTP surface, one router per resource; [`error`], its one error type.
//! - [`delivery`]: the engine that gets events out: claims, attempts, the retry policy.
//! - [`connectors`]: the WebAssembly connector platform (the only module importing wasmtime).
//! - [`store`]: the storage trait, its algorithms and its two dialects; all SQL lives there.
//!   [`egress`]: the one outbound HTTP client and the SSRF policy. [`metrics`]: the registry.
//! - [`model`]: the domain types and rules every layer speaks; [`config`]: the `IH_*`
//!   settings, each declared once.

pub mod api;
pub mod config;
pub mod connectors;
pub mod delivery;
pub mod egress;
pub mod error;
pub mod kit;
pub mod metrics;
pub mod model;
pub mod server;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use server::{run, shutdown_signal};

/// The layering rule, checked over the source.
#[cfg(test)]
mod layers {
    /// Each module's layer: a module may import (`crate::…`) only from lower layers.
    const LAYERS: &[(&str, u8)] = &[
        ("model", 0),
        ("config", 0),
        ("egress", 1),
        ("store", 1),
        ("metrics", 1),
        ("connectors", 2),
        ("delivery", 3),
        ("error", 4),
        ("api", 5),
        ("telemetry", 5),
        ("server", 6),
        ("kit", 6),
        ("main", 7),
    ];

    fn layer(module: &str) -> u8 {
        LAYERS
            .iter()
            .find(|(name, _)| *name == module)
            .map(|(_, layer)| *layer)
            .unwrap_or_else(|| panic!("module {module} has no layer in lib.rs's LAYERS"))
    }

    /// `(file, text)` of every source file under `dir`.
    fn sources(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).expect("source folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                found.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source file");
                found.push((path, text));
            }
        }
        found
    }

    /// The modules named by `crate::<module>` in `text`.
    fn imported(text: &str) -> Vec<&str> {
        text.match_indices("crate::")
            .map(|(at, _)| {
                let rest = &text[at + "crate::".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .filter(|m| !m.is_empty())
            .collect()
    }

    #[test]
    fn modules_import_only_from_layers_below() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut climbing = Vec::new();
        for (path, text) in sources(&src) {
            let relative = path.strip_prefix(&src).expect("under src");
            let module = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|m| m.trim_end_matches(".rs"))
                .expect("module name");
            if module == "lib" {
                continue;
            }
            for target in imported(&text) {
                if target != module && layer(target) >= layer(module) {
                    climbing.push(format!("{} imports crate::{target}", relative.display()));
                }
            }
        }
        climbing.sort();
        climbing.dedup();
        assert!(climbing.is_empty(), "imports that climb: {climbing:#?}");
    }

    /// Files of one module never import each other both ways (`super::a` in `b` and the reverse).
    #[test]
    fn sibling_files_do_not_import_each_other() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let files = sources(&src);
        let mut cycles = Vec::new();
        for (a, text_a) in &files {
            for (b, text_b) in &files {
                if a >= b || a.parent() != b.parent() {
                    continue;
                }
                let stem = |p: &std::path::Path| {
                    p.file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("")
                        .to_owned()
                };
                let uses = |text: &str, other: &str| {
                    text.contains(&format!("super::{other}::"))
                        || text.contains(&format!("super::{other};"))
                        || text.contains(&format!("super::{{{other}"))
                };
                if uses(text_a, &stem(b)) && uses(text_b, &stem(a)) {
                    cycles.push(format!("{} <-> {}", a.display(), b.display()));
                }
            }
        }
        assert!(cycles.is_empty(), "files importing each other: {cycles:#?}");
    }

    /// SQL stays in the store and wasmtime in the connectors (outside unit tests).
    #[test]
    fn sqlx_lives_in_the_store_and_wasmtime_in_the_connectors() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for (path, text) in sources(&src) {
            let relative = path.strip_prefix(&src).expect("under src").to_path_buf();
            let under = |dir: &str| relative.starts_with(dir);
            if relative.ends_with("lib.rs") {
                continue;
            }
            // Tests may build the errors they check.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            if text.contains("sqlx::") {
                assert!(under("store"), "{} uses sqlx", relative.display());
            }
            if text.contains("wasmtime::") || text.contains("wasmtime_wasi::") {
                assert!(under("connectors"), "{} uses wasmtime", relative.display());
            }
        }
    }
}
