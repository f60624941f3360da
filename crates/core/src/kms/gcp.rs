//! Cloud KMS key service (`KMS=gcp`) through Google's official REST client
//! `google-cloud-kms-v1`. Every request carries CRC32C checksums of what it sends, and every
//! response is verified as the API documents (`verified_*_crc32c` flags, and the checksum of
//! what came back), so corruption in transit is an error, never silently stored.
//! `KMS_ENDPOINT` (tests only) points the client at a local Cloud KMS REST peer with
//! anonymous credentials.

use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_kms_v1::client::KeyManagementService;
use secrecy::SecretBox;

use super::{Kms, KmsError, Plaintext};

/// Cloud KMS-backed [`Kms`].
pub struct GcpKms {
    client: KeyManagementService,
    key_name: String,
}

fn crc(data: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(data))
}

fn map_err(e: google_cloud_kms_v1::Error) -> KmsError {
    let text = e.to_string();
    let status = e.http_status_code();
    match status {
        Some(400) if text.to_ascii_lowercase().contains("decrypt") => KmsError::Tampered,
        Some(429) | Some(500..=599) => KmsError::Unavailable(text),
        None if e.is_timeout() || e.is_io() => KmsError::Unavailable(text),
        _ => KmsError::Backend(text),
    }
}

impl GcpKms {
    /// Connects with Application Default Credentials, or anonymously to `endpoint` (tests).
    pub async fn connect(key_name: &str, endpoint: Option<&str>) -> Result<Self, KmsError> {
        let key_ok = key_name.starts_with("projects/")
            && key_name.contains("/locations/")
            && key_name.contains("/keyRings/")
            && key_name.contains("/cryptoKeys/");
        if !key_ok {
            return Err(KmsError::Backend(format!(
                "KMS key name {key_name:?} must look like projects/P/locations/L/keyRings/R/cryptoKeys/K"
            )));
        }
        let mut builder = KeyManagementService::builder();
        if let Some(ep) = endpoint {
            builder = builder
                .with_endpoint(ep.to_string())
                .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
        }
        let client = builder
            .build()
            .await
            .map_err(|e| KmsError::Backend(format!("Cloud KMS client: {e}")))?;
        Ok(GcpKms {
            client,
            key_name: key_name.to_string(),
        })
    }

    /// The underlying client (tests create key rings and keys with it).
    pub fn client(&self) -> &KeyManagementService {
        &self.client
    }
}

#[async_trait]
impl Kms for GcpKms {
    fn backend_name(&self) -> &'static str {
        "gcp"
    }

    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        let resp = self
            .client
            .encrypt()
            .set_name(&self.key_name)
            .set_plaintext(Bytes::copy_from_slice(plaintext))
            .set_plaintext_crc32c(crc(plaintext))
            .set_additional_authenticated_data(Bytes::copy_from_slice(aad))
            .set_additional_authenticated_data_crc32c(crc(aad))
            .send()
            .await
            .map_err(map_err)?;
        if !resp.verified_plaintext_crc32c || (!aad.is_empty() && !resp.verified_additional_authenticated_data_crc32c) {
            return Err(KmsError::Backend(
                "Cloud KMS did not verify the request checksums; nothing was stored".into(),
            ));
        }
        if resp.ciphertext_crc32c != Some(crc(&resp.ciphertext)) {
            return Err(KmsError::Backend(
                "ciphertext checksum mismatch in the Cloud KMS response".into(),
            ));
        }
        Ok(resp.ciphertext.to_vec())
    }

    async fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Plaintext, KmsError> {
        let resp = self
            .client
            .decrypt()
            .set_name(&self.key_name)
            .set_ciphertext(Bytes::copy_from_slice(ciphertext))
            .set_ciphertext_crc32c(crc(ciphertext))
            .set_additional_authenticated_data(Bytes::copy_from_slice(aad))
            .set_additional_authenticated_data_crc32c(crc(aad))
            .send()
            .await
            .map_err(map_err)?;
        if resp.plaintext_crc32c != Some(crc(&resp.plaintext)) {
            return Err(KmsError::Backend(
                "plaintext checksum mismatch in the Cloud KMS response".into(),
            ));
        }
        Ok(SecretBox::new(Box::new(resp.plaintext.to_vec())))
    }
}
