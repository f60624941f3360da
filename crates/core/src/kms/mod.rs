//! The key service trait: encrypt and decrypt small secrets (org API keys, provider
//! credentials). Two backends: [`local::LocalKms`] (AES-256-GCM with a key file, the
//! default) and Cloud KMS (production).
//!
//! Callers pass associated data (AAD) that binds a ciphertext to where it belongs (for
//! example `org_api_key:{org}`), so a ciphertext copied to another org's row fails to decrypt.

pub mod gcp;
pub mod local;

use async_trait::async_trait;
use secrecy::SecretBox;

/// Key service failures.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("ciphertext is malformed: {0}")]
    Malformed(String),
    #[error("ciphertext was made with key version {0}, which this key service does not have")]
    UnknownKeyVersion(u32),
    #[error("decryption failed: the ciphertext was altered, or belongs to another key or context")]
    Tampered,
    #[error("key file problem: {0}")]
    KeyFile(String),
    #[error("key service unavailable: {0}")]
    Unavailable(String),
    #[error("key service error: {0}")]
    Backend(String),
}

/// Decrypted bytes; never printed, zeroed on drop.
pub type Plaintext = SecretBox<Vec<u8>>;

/// Encrypts and decrypts secrets. `Send + Sync`, held as `Arc<dyn Kms>`.
#[async_trait]
pub trait Kms: Send + Sync {
    /// `local` or `gcp`.
    fn backend_name(&self) -> &'static str;
    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError>;
    async fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Plaintext, KmsError>;
}
