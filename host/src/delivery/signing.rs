//! Webhook signatures (SPEC §6): the seed's hex HMAC and the Standard Webhooks scheme.
//!
//! Both sign the exact body bytes that are sent. The seed scheme signs with the newest secret
//! only; the Standard Webhooks header carries one `v1,<base64>` entry per valid secret, so a
//! receiver that has not switched to a rotated secret yet still verifies.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// `webhook-signature`: one entry per valid secret, newest first, space-separated. The key of a
/// secret is its UTF-8 bytes; receivers configure `whsec_` + base64(secret) in their library.
pub fn standard_signature(secrets: &[String], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| standard_signature_entry(s.as_bytes(), msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The secret as a Standard Webhooks library expects it (`whsec_` + base64 of its bytes).
pub fn standard_webhooks_secret(secret: &str) -> String {
    format!("whsec_{}", STANDARD.encode(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
