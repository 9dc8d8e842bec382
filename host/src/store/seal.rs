//! Subscription secrets at rest: sealed with AES-256-GCM under the operator's keys
//! (`IH_ENCRYPTION_KEY`). The first key seals; every key opens, so a key rotates by putting the
//! new one first and letting [`super::Store::reseal_secrets`] re-seal what the old one sealed.
//!
//! A stored secret is `(key_id, text)`: an empty `key_id` means plain text (a hub without keys,
//! or rows from before keys were set); otherwise `text` is base64 of nonce ‖ ciphertext ‖ tag,
//! bound to its subscription (the subscription id is the associated data, so a sealed secret
//! copied onto another subscription does not open).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::config::EncryptionKey;

/// The operator's keys, the sealing one first.
pub struct Keyring {
    keys: Vec<(String, LessSafeKey)>,
    random: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

/// A key's id: the first 8 hex digits of its SHA-256, stored beside what it sealed. Shown in
/// logs and errors so an operator can tell which key is missing without the key being shown.
pub fn key_id(key: &EncryptionKey) -> String {
    hex::encode(&Sha256::digest(key.expose())[..4])
}

impl Keyring {
    pub fn new(keys: &[EncryptionKey]) -> Self {
        let keys = keys
            .iter()
            .map(|key| {
                let unbound = UnboundKey::new(&AES_256_GCM, key.expose())
                    .unwrap_or_else(|_| unreachable!("AES-256-GCM takes a 32-byte key"));
                (key_id(key), LessSafeKey::new(unbound))
            })
            .collect();
        Self {
            keys,
            random: SystemRandom::new(),
        }
    }

    /// No keys: secrets are stored as they are given (a loopback hub in development).
    pub fn plain() -> Self {
        Self::new(&[])
    }

    /// The id of the key that seals, or `None` when secrets are stored plain.
    pub fn sealing_key(&self) -> Option<&str> {
        self.keys.first().map(|(id, _)| id.as_str())
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// `secret` as it is stored for `subscription`: `(key_id, text)`.
    pub fn seal(&self, subscription: Uuid, secret: &str) -> StoreResult<(String, String)> {
        let Some((id, key)) = self.keys.first() else {
            return Ok((String::new(), secret.to_owned()));
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| StoreError::Sealing("the system's random source failed".into()))?;
        let mut sealed = secret.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(subscription.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| StoreError::Sealing("a secret could not be sealed".into()))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        Ok((id.clone(), STANDARD.encode(stored)))
    }

    /// The secret that `(key_id, text)` holds for `subscription`.
    pub fn open(&self, subscription: Uuid, key_id: &str, text: &str) -> StoreResult<String> {
        if key_id.is_empty() {
            return Ok(text.to_owned());
        }
        let Some((_, key)) = self.keys.iter().find(|(id, _)| id == key_id) else {
            return Err(StoreError::Sealing(format!(
                "a subscription secret is sealed with key {key_id}, which IH_ENCRYPTION_KEY does not hold \
                 (it holds: {}); add that key back, after the new one",
                self.described()
            )));
        };
        let corrupt = || {
            StoreError::Corrupt(format!(
                "the sealed secret of subscription {subscription} does not open"
            ))
        };
        let mut bytes = STANDARD.decode(text).map_err(|_| corrupt())?;
        if bytes.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let sealed = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| corrupt())?;
        let mut sealed = sealed;
        let plain = key
            .open_in_place(nonce, Aad::from(subscription.as_bytes()), &mut sealed)
            .map_err(|_| corrupt())?;
        String::from_utf8(plain.to_vec()).map_err(|_| corrupt())
    }

    /// Opens a stored secret written as `key_id:text` (how a claim reads them in one column).
    pub fn open_joined(&self, subscription: Uuid, joined: &str) -> StoreResult<String> {
        let (key_id, text) = joined.split_once(':').unwrap_or(("", joined));
        self.open(subscription, key_id, text)
    }

    fn described(&self) -> String {
        if self.keys.is_empty() {
            "no keys".to_owned()
        } else {
            self.key_ids().collect::<Vec<_>>().join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> EncryptionKey {
        EncryptionKey::new([byte; 32])
    }

    #[test]
    fn sealed_secrets_open_with_any_key_of_the_ring_and_only_for_their_subscription() {
        let (sub, other) = (Uuid::new_v4(), Uuid::new_v4());
        let old = Keyring::new(&[key(1)]);
        let (id, text) = old.seal(sub, "whsec_secret").expect("seal");
        assert_eq!(id, key_id(&key(1)));
        assert!(!text.contains("whsec_secret"));
        assert_ne!(
            old.seal(sub, "whsec_secret").expect("seal").1,
            text,
            "fresh nonce"
        );

        let rotated = Keyring::new(&[key(2), key(1)]);
        assert_eq!(
            rotated.open(sub, &id, &text).expect("old key opens"),
            "whsec_secret"
        );
        assert_eq!(rotated.sealing_key(), Some(key_id(&key(2)).as_str()));
        assert!(matches!(
            rotated.open(other, &id, &text),
            Err(StoreError::Corrupt(_))
        ));

        let mut tampered = STANDARD.decode(&text).expect("base64");
        *tampered.last_mut().expect("tag") ^= 1;
        let tampered = STANDARD.encode(tampered);
        assert!(matches!(
            rotated.open(sub, &id, &tampered),
            Err(StoreError::Corrupt(_))
        ));

        let without = Keyring::new(&[key(2)]);
        let e = without.open(sub, &id, &text).expect_err("key 1 is gone");
        assert!(matches!(e, StoreError::Sealing(_)));
        assert!(e.to_string().contains(&id), "{e}");
    }

    #[test]
    fn without_keys_secrets_stay_as_given() {
        let plain = Keyring::plain();
        let sub = Uuid::new_v4();
        assert_eq!(
            plain.seal(sub, "s:1").expect("seal"),
            (String::new(), "s:1".to_owned())
        );
        assert_eq!(plain.open_joined(sub, ":s:1").expect("open"), "s:1");
        assert!(plain.sealing_key().is_none());
    }
}
