//! What `GET /api/v1/connectors` shows of a connector: its status, provenance and grant, and,
//! for a bound one, its waiting deliveries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model;

/// Whether a connector receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorStatus {
    /// Loaded and configured: matching events are routed to it.
    Active,
    /// Loaded, but required configuration is missing: it receives nothing.
    Inactive,
    /// Could not be loaded (see `problem`).
    Failed,
    /// Bound to its event types (it was active once), but no file of this instance loads under
    /// its name: its deliveries wait until one does, or until it is unbound.
    Missing,
}

/// A connector as `GET /api/v1/connectors` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectorView {
    /// The manifest's name (the file name, without `.wasm`, when the file could not load).
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    /// Event types routed to it (`*` for all).
    pub events: Vec<String>,
    /// The hosts `http.send` may reach (the manifest's, or `IH_<NAME>_ALLOWED_HOSTS`).
    pub allowed_hosts: Vec<String>,
    pub status: ConnectorStatus,
    /// Why it is `inactive` or `failed`; for an `active` one, why a newer file at its source
    /// was not loaded (the version listed keeps serving).
    pub problem: Option<String>,
    /// The file it came from, or `builtin`.
    pub source: String,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// The version of the connector contract (`wit/connector.wit`) the component was built
    /// against: `0.2.0`, or `0.1.0` (still loaded unchanged).
    pub contract: Option<String>,
    /// When the listed version was loaded (absent for a `missing` one).
    pub loaded_at: Option<DateTime<Utc>>,
    /// Its deliveries not finished yet (waiting, due or in flight), when it is bound.
    pub pending: u64,
    /// Since when its event types get deliveries whether or not it is loaded (see `Missing`);
    /// absent for a connector that has never been active.
    pub bound_since: Option<DateTime<Utc>>,
    /// The key id (first 8 hex digits of the public key's SHA-256) of the valid ed25519
    /// signature the file carries (`integrations-hub connector sign`); absent when unsigned.
    pub signed_by: Option<String>,
    /// What the component is: a `connector`, or a `transform` (`GET /api/v1/transforms`).
    pub kind: ComponentKind,
}

/// The world a component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Connector,
    Transform,
}

impl ComponentKind {
    pub(super) fn of(prepared: &super::runtime::Prepared) -> Self {
        if prepared.is_transform() {
            Self::Transform
        } else {
            Self::Connector
        }
    }
}

impl ConnectorView {
    /// A bound connector that no file of this instance loads.
    pub fn missing(binding: &model::ConnectorBinding) -> Self {
        Self {
            name: binding.name.clone(),
            version: None,
            description: None,
            events: binding.events.clone(),
            allowed_hosts: Vec::new(),
            status: ConnectorStatus::Missing,
            problem: Some(
                "bound to its event types, but no file of this instance loads under this name: \
                 its deliveries wait until one does (or until it is unbound)"
                    .into(),
            ),
            source: String::new(),
            sha256: String::new(),
            contract: None,
            loaded_at: None,
            pending: binding.pending,
            bound_since: Some(binding.created_at),
            signed_by: None,
            kind: ComponentKind::Connector,
        }
    }
}
