//! Response shapes shared by several resources, mapped from [`crate::model`] so that the API's
//! schema (serde names, OpenAPI) stays out of the domain and the store.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::model;

/// Declares a response type that shows a model type (a struct, or an enum of struct variants):
/// the same fields, each converted with `Into` (so a model enum becomes its response shape) or
/// with the function after `=>`, under the API's serde names and schema. The field list is the
/// API's contract; the conversion is written by the macro, not by hand.
macro_rules! mirror {
    ($(#[$meta:meta])* pub struct $name:ident from $model:ty {
        $($(#[$field_meta:meta])* $field:ident: $ty:ty $(=> $convert:path)?),* $(,)?
    }) => {
        #[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl From<$model> for $name {
            fn from(m: $model) -> Self {
                Self { $($field: mirror!(@convert m.$field $(, $convert)?),)* }
            }
        }
    };
    ($(#[$meta:meta])* pub enum $name:ident from $model:ty {
        $($variant:ident { $($field:ident: $ty:ty),* }),* $(,)?
    }) => {
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
        $(#[$meta])*
        pub enum $name {
            $($variant { $($field: $ty),* },)*
        }

        impl From<$model> for $name {
            fn from(m: $model) -> Self {
                type Model = $model;
                match m {
                    $(Model::$variant { $($field),* } => Self::$variant {
                        $($field: $field.into()),*
                    },)*
                }
            }
        }
    };
    (@convert $value:expr) => {
        $value.into()
    };
    (@convert $value:expr, $convert:path) => {
        $convert($value)
    };
}
pub(super) use mirror;

mirror! {
    /// Where a delivery goes: a webhook, a connector's default instance (settings from
    /// `IH_<NAME>_<KEY>`), or a connector instance through a subscription.
    #[serde(tag = "kind", rename_all = "snake_case")]
    pub enum Destination from model::Destination {
        Webhook { subscription_id: Uuid, url: String },
        Connector { connector: String },
        Instance { subscription_id: Uuid, connector: String, instance: String },
    }
}

/// The domain's named states (`model::DeliveryStatus`, `model::CircuitState`) appear in
/// responses as their names: a string enum in the OpenAPI document, listing `ALL`.
macro_rules! named_states {
    ($($state:ident: $doc:literal),*) => {$(
        impl Serialize for model::$state {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl utoipa::PartialSchema for model::$state {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($doc))
                    .enum_values(Some(model::$state::ALL.map(model::$state::as_str)))
                    .into()
            }
        }

        impl ToSchema for model::$state {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($state).into()
            }
        }
    )*};
}

named_states!(
    DeliveryStatus: "Lifecycle of a delivery.",
    AttemptOutcome: "How an attempt ended.",
    ReportKind: "What a connector answered: ok, skipped (the delivery ends without sending), retry or permanent.",
    CircuitState: "State of a subscription's circuit breaker."
);

/// For `mirror!`: an optional model value as its response shape.
pub fn opt<T, U: From<T>>(value: Option<T>) -> Option<U> {
    value.map(U::from)
}

/// For `mirror!`: an empty string as `null`.
pub fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

mirror! {
    /// The circuit breaker as shown on a subscription.
    pub struct Circuit from model::Circuit {
        state: model::CircuitState,
        consecutive_failures: u32,
    }
}

#[cfg(test)]
mod tests {
    /// Every `$ref` in the OpenAPI document names a schema it defines; the domain's named states
    /// are string enums of their names.
    #[test]
    fn the_document_defines_every_schema_it_references() {
        let doc = serde_json::to_value(super::super::openapi()).expect("OpenAPI as JSON");
        let text = doc.to_string();
        let schemas = &doc["components"]["schemas"];
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(
                schemas.get(name).is_some(),
                "{name} is referenced, not defined"
            );
        }
        assert_eq!(
            schemas["DeliveryStatus"]["enum"],
            serde_json::json!(["pending", "in_flight", "succeeded", "dead", "cancelled"])
        );
        assert_eq!(
            schemas["CircuitState"]["enum"],
            serde_json::json!(["closed", "open", "half_open"])
        );
    }
}
