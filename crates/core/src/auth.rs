//! Key primitives: hashing, the root-key check, and the one org API key format
//! `{org_slug}_api_{22 url-safe characters from the OS CSPRNG}` (128 bits of entropy).

use aes_gcm::aead::{rand_core::RngCore, OsRng};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Lower-case hex SHA-256 of a key: how keys are looked up and stored.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new org API key. The caller shows it once and stores only its hash and ciphertext.
pub fn generate_org_api_key(org_slug: &str) -> SecretString {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!("{org_slug}_api_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The one fingerprint definition: the last 4 characters of the key itself.
pub fn key_fingerprint(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// Outcome of checking an `X-CA-Root-Key` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootCheck {
    Valid,
    Missing,
    Wrong,
    /// The service has no root key configured: admin routes are unavailable.
    NotConfigured,
}

/// Compares presented root keys against the configured one: both sides are hashed with
/// SHA-256 and the digests compared in constant time. The key itself is not kept.
#[derive(Clone)]
pub struct RootKeyVerifier {
    digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for RootKeyVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootKeyVerifier")
            .field("configured", &self.digest.is_some())
            .finish()
    }
}

impl RootKeyVerifier {
    pub fn new(root_key: Option<&SecretString>) -> Self {
        RootKeyVerifier {
            digest: root_key.map(|k| Sha256::digest(k.expose_secret().as_bytes()).into()),
        }
    }

    pub fn check(&self, presented: Option<&str>) -> RootCheck {
        let Some(expected) = &self.digest else {
            return RootCheck::NotConfigured;
        };
        let Some(presented) = presented else {
            return RootCheck::Missing;
        };
        let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(got.ct_eq(expected)) {
            RootCheck::Valid
        } else {
            RootCheck::Wrong
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_one_format_and_are_random() {
        let a = generate_org_api_key("acme_corp");
        let b = generate_org_api_key("acme_corp");
        let a = a.expose_secret();
        assert!(a.starts_with("acme_corp_api_"));
        let random = &a["acme_corp_api_".len()..];
        assert_eq!(random.len(), 22);
        assert!(random
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b.expose_secret());
        assert_eq!(key_fingerprint(a), &a[a.len() - 4..]);
    }

    #[test]
    fn hash_is_lower_hex_sha256() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn root_key_check() {
        let key = SecretString::from("r".repeat(40));
        let v = RootKeyVerifier::new(Some(&key));
        assert_eq!(v.check(Some(&"r".repeat(40))), RootCheck::Valid);
        assert_eq!(v.check(Some("nope")), RootCheck::Wrong);
        assert_eq!(v.check(None), RootCheck::Missing);
        assert_eq!(RootKeyVerifier::new(None).check(Some("x")), RootCheck::NotConfigured);
        assert!(!format!("{v:?}").contains('r'.to_string().repeat(5).as_str()));
    }
}
