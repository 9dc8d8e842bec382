//! What the registry knows of connector instances: which components can serve one here, which
//! settings an instance may have, and the settings an invocation of one runs with.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Connectors, Entry, Shared};
use crate::config::Secret;
use crate::connectors::grant::Grant;

/// Most settings one instance may have, and the longest value.
pub const MAX_SETTINGS: usize = 64;
pub const MAX_SETTING_BYTES: usize = 8 * 1024;

impl Entry {
    /// Whether its component is loaded here (active or inactive): enough for an instance, which
    /// brings its own settings.
    fn serves_instances(&self) -> bool {
        self.loaded.is_some()
    }
}

impl Connectors {
    /// Names of the connectors whose component is loaded here (active or inactive): the engine
    /// claims instance deliveries for these only.
    pub fn loaded(&self) -> Vec<String> {
        self.names(Entry::serves_instances)
    }

    /// Whether connector `name`'s component is loaded here (see [`Connectors::loaded`]).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.has(name, Entry::serves_instances)
    }

    /// Checks an instance's settings against connector `name`'s manifest (every key declared,
    /// every required key present, values bounded), then asks the connector itself (its
    /// `validate`, WIT 0.2). Each problem is `(field, message)`; `Err` when the connector is not
    /// loaded here (its manifest is unknown).
    pub async fn check_settings(
        &self,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>, String> {
        let snapshot = self.current();
        let Some(loaded) = snapshot.entries.get(name).and_then(|e| e.loaded.clone()) else {
            return Err(format!(
                "connector {name:?} is not loaded in this hub: deploy its file first"
            ));
        };
        let declared = &loaded.manifest.config;
        let mut problems = Vec::new();
        if settings.len() > MAX_SETTINGS {
            problems.push((
                "settings".to_owned(),
                format!("at most {MAX_SETTINGS} settings"),
            ));
        }
        for (key, value) in settings {
            if !declared.iter().any(|k| &k.name == key) {
                let known: Vec<&str> = declared.iter().map(|k| k.name.as_str()).collect();
                problems.push((
                    format!("settings.{key}"),
                    format!("{name} has no setting {key:?} (it has {known:?})"),
                ));
            } else if value.len() > MAX_SETTING_BYTES {
                problems.push((
                    format!("settings.{key}"),
                    format!("longer than {MAX_SETTING_BYTES} bytes"),
                ));
            }
        }
        for key in declared.iter().filter(|k| k.required) {
            if !settings.contains_key(&key.name) {
                problems.push((
                    format!("settings.{}", key.name),
                    format!("is required by {name}: {}", key.description),
                ));
            }
        }
        if !problems.is_empty() {
            return Ok(problems);
        }
        // No HTTP while validating: the grant is withheld, as while the manifest is read.
        let shared = Self::instance_shared(&loaded.shared.name, None, settings);
        match self.runtime.call_validate(&loaded.pre, shared).await {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => problems.push((
                refused
                    .key
                    .filter(|key| declared.iter().any(|k| &k.name == key))
                    .map_or_else(|| "settings".to_owned(), |key| format!("settings.{key}")),
                format!("{name} refused these settings: {}", refused.message),
            )),
            Err(why) => problems.push((
                "settings".to_owned(),
                format!("{name} could not check these settings: its validate {why}"),
            )),
        }
        Ok(problems)
    }

    /// The keys of connector `name` whose values are secret, or `None` when it is not loaded
    /// here (then every value must be treated as secret).
    pub fn secret_keys(&self, name: &str) -> Option<Vec<String>> {
        let snapshot = self.current();
        let loaded = snapshot.entries.get(name)?.loaded.clone()?;
        let keys = loaded.manifest.config.iter().filter(|k| k.secret);
        Some(keys.map(|k| k.name.clone()).collect())
    }

    /// What an invocation of an instance of `shared`'s connector sees: the connector's grant,
    /// the instance's settings (never the environment's).
    pub(super) fn instance_shared(
        name: &str,
        grant: Option<Grant>,
        settings: &BTreeMap<String, String>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            name: name.to_owned(),
            grant,
            settings: settings
                .iter()
                .map(|(key, value)| (key.clone(), Secret::new(value.clone())))
                .collect(),
        })
    }
}
