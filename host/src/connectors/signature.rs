//! Signed components: `integrations-hub connector sign` appends an ed25519 signature to a
//! component as a custom section named [`SECTION`]; with `IH_COMPONENTS_TRUSTED_KEYS` set, the
//! registry loads only files signed by one of those keys.
//!
//! Invariants:
//! - the signature covers the SHA-256 of every byte before its section, so the file cannot be
//!   changed (a byte flipped, a section added) without the check failing; it must be the file's
//!   last section, and there is at most one;
//! - the section holds the signer's public key, so an untrusted signer is named (by key id) in
//!   the refusal; whether the key is trusted is the operator's list alone;
//! - signing again replaces the signature (a file is never signed twice).
//!
//! Keys are ed25519 PKCS#8 files in PEM (`connector keygen` writes one; `openssl genpkey
//! -algorithm ed25519` makes the same kind); public keys travel as base64 of their 32 bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};
use wasm_encoder::{ComponentSection, CustomSection};

/// The custom section holding the signature.
pub const SECTION: &str = "integrations-hub-signature";
/// What the section's data starts with: the format's version.
const FORMAT: u8 = 1;
/// Signed along with the digest, so the signature means nothing to another protocol.
const CONTEXT: &[u8] = b"integrations-hub component signature v1\n";
const PUBLIC_KEY_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;

/// An ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl PublicKey {
    /// The first 8 hex digits of the key's SHA-256: how messages name it.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..4])
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

/// What a file says about who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    Unsigned,
    /// A valid signature by this key.
    By(PublicKey),
    /// A signature section that does not verify, and why.
    Invalid(String),
}

/// Reads and verifies a component's signature (whoever the signer is).
pub fn inspect(bytes: &[u8]) -> Signed {
    match find(bytes) {
        Ok(None) => Signed::Unsigned,
        Ok(Some((signed, data))) => verify(signed, data),
        Err(why) => Signed::Invalid(why),
    }
}

/// Whether a file may load under the trust policy `trusted` (empty: every file may). `Ok`
/// carries the valid signer, if any, for the listing.
pub fn admit(bytes: &[u8], trusted: &[PublicKey]) -> Result<Option<PublicKey>, String> {
    let signed = inspect(bytes);
    if trusted.is_empty() {
        return Ok(match signed {
            Signed::By(key) => Some(key),
            _ => None,
        });
    }
    match signed {
        Signed::By(key) if trusted.contains(&key) => Ok(Some(key)),
        Signed::By(key) => Err(format!(
            "signed by key {}, which IH_COMPONENTS_TRUSTED_KEYS does not list",
            key.id()
        )),
        Signed::Unsigned => Err(
            "not signed, and IH_COMPONENTS_TRUSTED_KEYS admits signed components only \
             (`integrations-hub connector sign FILE --key KEY`)"
                .to_owned(),
        ),
        Signed::Invalid(why) => Err(format!("its signature does not verify: {why}")),
    }
}

/// `bytes` signed by `key`: any earlier signature removed, the new one appended.
pub fn sign(bytes: &[u8], key: &Ed25519KeyPair) -> Result<Vec<u8>, String> {
    if !wasmparser::Parser::is_component(bytes) {
        return Err("not a WebAssembly component (only components are signed)".to_owned());
    }
    let unsigned = match find(bytes)? {
        Some((signed, _)) => signed,
        None => bytes,
    };
    let mut data = Vec::with_capacity(1 + PUBLIC_KEY_LEN + SIGNATURE_LEN);
    data.push(FORMAT);
    data.extend_from_slice(key.public_key().as_ref());
    data.extend_from_slice(key.sign(&message(unsigned)).as_ref());
    let mut out = unsigned.to_vec();
    section(&data).append_to_component(&mut out);
    Ok(out)
}

/// A new ed25519 key: its PKCS#8 PEM text and its public key.
pub fn generate_key() -> Result<(String, PublicKey), String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "the system's random source failed".to_owned())?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| format!("the generated key does not read back: {e}"))?;
    let public = public_key(&pair);
    let body = STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok((pem, public))
}

/// Reads a private key: PKCS#8 in PEM (`-----BEGIN PRIVATE KEY-----`) or bare base64.
pub fn read_private_key(text: &str) -> Result<Ed25519KeyPair, String> {
    let body: String = (text.lines())
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|_| "not a PEM or base64 private key".to_owned())?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| {
        format!(
            "not an ed25519 PKCS#8 private key ({e}); make one with \
             `integrations-hub connector keygen`"
        )
    })
}

/// The public half of `key`.
pub fn public_key(key: &Ed25519KeyPair) -> PublicKey {
    let mut bytes = [0; PUBLIC_KEY_LEN];
    bytes.copy_from_slice(key.public_key().as_ref());
    PublicKey(bytes)
}

fn section(data: &[u8]) -> CustomSection<'_> {
    CustomSection {
        name: SECTION.into(),
        data: data.into(),
    }
}

fn message(unsigned: &[u8]) -> Vec<u8> {
    [CONTEXT, Sha256::digest(unsigned).as_slice()].concat()
}

/// A signed file: the bytes signed, and the signature section's data.
type Split<'a> = (&'a [u8], &'a [u8]);

/// The signed bytes and the signature section's data, when the file has one.
fn find(bytes: &[u8]) -> Result<Option<Split<'_>>, String> {
    let mut found = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(reader)) if reader.name() == SECTION => {
                found.push(reader.data());
            }
            Ok(_) => {}
            Err(e) => return Err(format!("the file is not a well-formed component ({e})")),
        }
    }
    let data = match found.as_slice() {
        [] => return Ok(None),
        [data] => *data,
        _ => return Err(format!("the file holds {} signature sections", found.len())),
    };
    let mut encoded = Vec::new();
    section(data).append_to_component(&mut encoded);
    match bytes.strip_suffix(encoded.as_slice()) {
        Some(signed) => Ok(Some((signed, data))),
        None => Err("the signature is not the file's last section".to_owned()),
    }
}

fn verify(signed: &[u8], data: &[u8]) -> Signed {
    let (Some((&FORMAT, rest)), true) = (data.split_first(), data.len() == 1 + 32 + 64) else {
        return Signed::Invalid("the signature section is not in a format this hub reads".into());
    };
    let (key, signature) = rest.split_at(PUBLIC_KEY_LEN);
    let mut public = [0; PUBLIC_KEY_LEN];
    public.copy_from_slice(key);
    let public = PublicKey(public);
    match UnparsedPublicKey::new(&ED25519, key).verify(&message(signed), signature) {
        Ok(()) => Signed::By(public),
        Err(_) => Signed::Invalid(format!(
            "the file changed after key {} signed it",
            public.id()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn key() -> Ed25519KeyPair {
        let (pem, _) = generate_key().expect("test value");
        read_private_key(&pem).expect("test value")
    }

    #[test]
    fn a_signed_file_verifies_and_names_its_signer() {
        let key = key();
        let signed = sign(EMPTY_COMPONENT, &key).expect("test value");
        assert!(wasmparser::Parser::is_component(&signed));
        assert_eq!(inspect(&signed), Signed::By(public_key(&key)));
        assert_eq!(inspect(EMPTY_COMPONENT), Signed::Unsigned);
        // Signing again replaces the signature.
        let other = self::key();
        let again = sign(&signed, &other).expect("test value");
        assert_eq!(again.len(), signed.len());
        assert_eq!(inspect(&again), Signed::By(public_key(&other)));
    }

    #[test]
    fn tampered_wrong_key_and_unsigned_files_are_refused_under_a_policy() {
        let key = key();
        let trusted = [public_key(&key)];
        let signed = sign(EMPTY_COMPONENT, &key).expect("test value");
        assert_eq!(admit(&signed, &trusted), Ok(Some(trusted[0])));

        // The last byte is the signature's own.
        let mut tampered = signed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let refused = admit(&tampered, &trusted).expect_err("refused");
        assert!(refused.contains("changed after key"), "{refused}");

        let stranger = sign(EMPTY_COMPONENT, &self::key()).expect("test value");
        let refused = admit(&stranger, &trusted).expect_err("refused");
        assert!(refused.contains("does not list"), "{refused}");

        let refused = admit(EMPTY_COMPONENT, &trusted).expect_err("refused");
        assert!(refused.contains("not signed"), "{refused}");

        // A section appended after the signature breaks it.
        let mut appended = signed.clone();
        let other = CustomSection {
            name: "producers-of-mischief".into(),
            data: b"x".as_slice().into(),
        };
        other.append_to_component(&mut appended);
        let refused = admit(&appended, &trusted).expect_err("refused");
        assert!(refused.contains("last section"), "{refused}");
        let mut twice = signed.clone();
        section(b"x").append_to_component(&mut twice);
        let refused = admit(&twice, &trusted).expect_err("refused");
        assert!(refused.contains("2 signature sections"), "{refused}");

        // Without a policy everything loads; a valid signer is still told.
        assert_eq!(admit(&tampered, &[]), Ok(None));
        assert_eq!(admit(&signed, &[]), Ok(Some(trusted[0])));
    }

    #[test]
    fn keys_read_back_and_bad_ones_are_explained() {
        let (pem, public) = generate_key().expect("test value");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(
            public_key(&read_private_key(&pem).expect("test value")),
            public
        );
        assert_eq!(public.to_string().len(), 44);
        assert!(read_private_key("nonsense!").is_err());
        assert!(sign(b"\0asm\x01\0\0\0", &key()).is_err());
    }
}
