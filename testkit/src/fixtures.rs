//! Values the tests share, defined once.

/// The signing secret of the subscriptions tests create. Tests that look for secrets in
/// responses and logs search for this string.
pub const SECRET: &str = "subscription-secret-8e4f-never-shown";

/// Settings for tests whose receiver is on loopback and whose retries should come quickly.
pub const FAST: &[(&str, &str)] = &[
    ("IH_ALLOW_PRIVATE_DESTINATIONS", "true"),
    ("IH_DELIVERY_BACKOFF_BASE_SECONDS", "0.05"),
    ("IH_DELIVERY_POLL_INTERVAL_SECONDS", "0.2"),
    ("IH_DELIVERY_TIMEOUT_SECONDS", "2"),
];

/// [`FAST`] and then `extra` (later values win).
pub fn fast<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all: Vec<(&str, &str)> = FAST.to_vec();
    all.extend_from_slice(extra);
    all
}
