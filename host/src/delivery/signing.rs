//! What a webhook carries and how it is signed: the body assembled around the stored payload
//! bytes, the seed's hex HMAC and the Standard Webhooks scheme.
//!
//! Both sign the exact body bytes that are sent. The Standard Webhooks header carries one
//! `v1,<base64>` entry per valid secret; the seed header has room for one signature, made with
//! the oldest secret still valid, so after a rotation it keeps verifying for receivers of the
//! previous secret until its grace period ends. Either way a receiver that has not switched to a
//! rotated secret yet still verifies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::ClaimedDelivery;

/// The webhook body: `{"id", "event_type", "created_at", "payload"}` with the payload's stored
/// bytes spliced in unchanged (never re-serialised).
pub fn webhook_body(delivery: &ClaimedDelivery) -> String {
    let event_type = serde_json::to_string(&delivery.event_type).unwrap_or_default();
    let created_at = serde_json::to_string(&delivery.event_created_at).unwrap_or_default();
    let mut body = String::with_capacity(delivery.payload.len() + 160);
    body.push_str("{\"id\":\"");
    body.push_str(&delivery.event_id.to_string());
    body.push_str("\",\"event_type\":");
    body.push_str(&event_type);
    body.push_str(",\"created_at\":");
    body.push_str(&created_at);
    body.push_str(",\"payload\":");
    body.push_str(&delivery.payload);
    body.push('}');
    body
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A new secret for a subscription created without one: `whsec_` + base64 of 24 random bytes,
/// the form Standard Webhooks libraries take as it is.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut key = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

/// The HMAC key of the Standard Webhooks scheme: for `whsec_<base64>` the decoded bytes, as
/// every Standard Webhooks library does; for any other secret its UTF-8 bytes.
pub fn standard_key(secret: &str) -> Vec<u8> {
    secret
        .strip_prefix("whsec_")
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .filter(|key| !key.is_empty())
        .unwrap_or_else(|| secret.as_bytes().to_vec())
}

/// The secret `X-Webhook-Signature` is made with: the oldest valid one (see the module's doc).
pub fn seed_secret(secrets: &[String]) -> Option<&str> {
    secrets.last().map(String::as_str)
}

/// `X-Webhook-Signature`: hex HMAC-SHA256 of `{timestamp}.{body}` keyed with the secret's UTF-8
/// bytes — what the seed's Python snippet computes.
pub fn seed_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    ))
}

/// One Standard Webhooks signature entry: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn standard_signature_entry(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(
        key,
        &[
            msg_id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    );
    format!("v1,{}", STANDARD.encode(digest))
}

/// `webhook-signature`: one entry per valid secret, newest first, space-separated, each keyed
/// with [`standard_key`]; receivers configure [`standard_webhooks_secret`] in their library.
pub fn standard_signature(secrets: &[String], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| standard_signature_entry(&standard_key(s), msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The secret as a Standard Webhooks library expects it: a `whsec_<base64>` secret as it is,
/// any other as `whsec_` + base64 of its bytes.
pub fn standard_webhooks_secret(secret: &str) -> String {
    format!("whsec_{}", STANDARD.encode(standard_key(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Target;
    use chrono::{DateTime, Utc};

    #[test]
    fn body_splices_the_stored_payload_bytes() {
        let delivery = ClaimedDelivery {
            id: uuid::Uuid::nil(),
            event_id: uuid::Uuid::nil(),
            event_type: "request_submitted".into(),
            event_created_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
                .expect("date")
                .with_timezone(&Utc),
            payload: "{\"b\": 1, \"a\": [true]}".into(),
            attempts: 0,
            target: Target::Connector {
                name: "x".into(),
                instance: None,
            },
            traceparent: None,
        };
        let body = webhook_body(&delivery);
        assert_eq!(
            body,
            "{\"id\":\"00000000-0000-0000-0000-000000000000\",\"event_type\":\"request_submitted\",\
             \"created_at\":\"2026-01-02T03:04:05.123456Z\",\"payload\":{\"b\": 1, \"a\": [true]}}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("valid JSON");
        assert_eq!(parsed["payload"]["a"][0], true);
    }

    #[test]
    fn seed_signature_matches_the_python_snippet() {
        // python3 -c 'import hmac,hashlib; print(hmac.new(b"your-webhook-secret-key-min-16-chars",
        //   b"1700000000.{\"id\":\"e1\",\"payload\":{\"a\":1}}", hashlib.sha256).hexdigest())'
        let body = br#"{"id":"e1","payload":{"a":1}}"#;
        assert_eq!(
            seed_signature("your-webhook-secret-key-min-16-chars", 1_700_000_000, body),
            "2dbeb8b3ce88966eeefb11a87f7290141f5a21837a8e50442736f2b1ff3d747b"
        );
    }

    #[test]
    fn standard_webhooks_published_vector() {
        // From the Standard Webhooks specification (and Svix's libraries).
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        assert_eq!(
            standard_signature_entry(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn rotation_signs_with_every_valid_secret_newest_first() {
        let secrets = vec![
            "new-secret-0123456789".to_string(),
            "old-secret-0123456789".to_string(),
        ];
        let header = standard_signature(&secrets, "msg", 1, b"{}");
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0],
            standard_signature_entry(b"new-secret-0123456789", "msg", 1, b"{}")
        );
        assert_eq!(
            entries[1],
            standard_signature_entry(b"old-secret-0123456789", "msg", 1, b"{}")
        );
        assert_eq!(standard_webhooks_secret("abc"), "whsec_YWJj");
        assert_eq!(seed_secret(&secrets), Some("old-secret-0123456789"));
        assert_eq!(seed_secret(&secrets[..1]), Some("new-secret-0123456789"));
    }

    #[test]
    fn a_whsec_secret_is_used_as_standard_webhooks_libraries_use_it() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        assert_eq!(
            standard_signature(
                std::slice::from_ref(&secret),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(standard_webhooks_secret(&secret), secret);
        // Not base64 after the prefix: an ordinary secret.
        assert_eq!(standard_key("whsec_not base64!"), b"whsec_not base64!");
    }

    #[test]
    fn generated_secrets_are_fresh_whsec_secrets() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"), "{a}");
        assert_eq!(standard_key(&a).len(), 24);
        assert_eq!(standard_webhooks_secret(&a), a);
    }
}

/// Property tests: for any secrets, message id, timestamp and body, each signature verifies
/// with an independent HMAC over the documented input, and no other body verifies.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn verifies(key: &[u8], input: &[&[u8]], signature: &[u8]) -> bool {
        let mut mac = HmacSha256::new_from_slice(key).expect("any key length");
        for part in input {
            mac.update(part);
        }
        // `verify_slice` compares in constant time.
        mac.verify_slice(signature).is_ok()
    }

    proptest! {
        #[test]
        fn every_standard_entry_verifies_with_its_secret(
            secrets in proptest::collection::vec(".{0,48}", 1..4),
            id in "[ -~]{0,40}",
            timestamp in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 0..1024),
            flip in any::<prop::sample::Index>(),
        ) {
            let header = standard_signature(&secrets, &id, timestamp, &body);
            let entries: Vec<&str> = header.split(' ').collect();
            prop_assert_eq!(entries.len(), secrets.len());
            let ts = timestamp.to_string();
            for (entry, secret) in entries.iter().zip(&secrets) {
                // (`whsec_<base64>` secrets are keyed by their decoded bytes: unit tests above.)
                prop_assume!(!secret.starts_with("whsec_"));
                let encoded = entry.strip_prefix("v1,").expect("v1, prefix");
                let signature = STANDARD.decode(encoded).expect("base64");
                let input: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", &body];
                prop_assert!(verifies(secret.as_bytes(), &input, &signature));
                if !body.is_empty() {
                    let mut tampered = body.clone();
                    tampered[flip.index(body.len())] ^= 0x01;
                    let input: [&[u8]; 5] = [id.as_bytes(), b".", ts.as_bytes(), b".", &tampered];
                    prop_assert!(!verifies(secret.as_bytes(), &input, &signature));
                }
            }
        }

        #[test]
        fn the_seed_signature_is_hex_hmac_of_timestamp_dot_body(
            secret in ".{0,64}",
            timestamp in any::<i64>(),
            body in proptest::collection::vec(any::<u8>(), 0..1024),
        ) {
            let signature = seed_signature(&secret, timestamp, &body);
            prop_assert_eq!(signature.len(), 64);
            let raw = hex::decode(&signature).expect("hex");
            let ts = timestamp.to_string();
            let input: [&[u8]; 3] = [ts.as_bytes(), b".", &body];
            prop_assert!(verifies(secret.as_bytes(), &input, &raw));
        }

        #[test]
        fn the_whsec_form_decodes_back_to_the_secret(secret in ".{0,64}") {
            prop_assume!(!secret.starts_with("whsec_"));
            let whsec = standard_webhooks_secret(&secret);
            let decoded = STANDARD
                .decode(whsec.strip_prefix("whsec_").expect("whsec_ prefix"))
                .expect("base64");
            prop_assert_eq!(decoded, secret.into_bytes());
        }
    }
}
