//! Response shapes shared by several resources, mapped from [`crate::model`] so that the API's
//! schema (serde names, OpenAPI) stays out of the domain and the store.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::model;

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    Webhook { subscription_id: Uuid, url: String },
    Connector { connector: String },
}

impl From<model::Destination> for Destination {
    fn from(d: model::Destination) -> Self {
        match d {
            model::Destination::Webhook {
                subscription_id,
                url,
            } => Destination::Webhook {
                subscription_id,
                url,
            },
            model::Destination::Connector { connector } => Destination::Connector { connector },
        }
    }
}

/// Lifecycle of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    InFlight,
    Succeeded,
    Dead,
    Cancelled,
}

impl From<model::DeliveryStatus> for DeliveryStatus {
    fn from(s: model::DeliveryStatus) -> Self {
        match s {
            model::DeliveryStatus::Pending => DeliveryStatus::Pending,
            model::DeliveryStatus::InFlight => DeliveryStatus::InFlight,
            model::DeliveryStatus::Succeeded => DeliveryStatus::Succeeded,
            model::DeliveryStatus::Dead => DeliveryStatus::Dead,
            model::DeliveryStatus::Cancelled => DeliveryStatus::Cancelled,
        }
    }
}

/// State of a subscription's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// The circuit breaker as shown on a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Circuit {
    pub state: CircuitState,
    pub consecutive_failures: u32,
}

impl From<model::Circuit> for Circuit {
    fn from(c: model::Circuit) -> Self {
        Self {
            state: match c.state {
                model::CircuitState::Closed => CircuitState::Closed,
                model::CircuitState::Open => CircuitState::Open,
                model::CircuitState::HalfOpen => CircuitState::HalfOpen,
            },
            consecutive_failures: c.consecutive_failures,
        }
    }
}
