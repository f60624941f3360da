//! The Cloud KMS backend against a local Cloud KMS REST peer (drongo): key ring and key
//! creation, round trip with CRC32C checks, AAD binding. drongo's "ciphertext" is not real
//! encryption, so secrecy is tested on the local backend, not here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on unexpected values

use cloudact_core::kms::{gcp::GcpKms, Kms, KmsError};
use cloudact_e2e::KmsEmulator;
use secrecy::ExposeSecret;

#[tokio::test]
async fn round_trip_and_aad_binding_on_the_kms_emulator() {
    let emu = KmsEmulator::start();
    let key_name = emu.create_key("ring", "key").await;
    let kms = GcpKms::connect(&key_name, Some(&emu.endpoint)).await.unwrap();
    let secret = b"sk-admin-0123456789abcdef";
    let aad = b"credential:acme:openai";
    let ct = kms.encrypt(secret, aad).await.unwrap();
    assert!(!ct.is_empty());
    let pt = kms.decrypt(&ct, aad).await.unwrap();
    assert_eq!(pt.expose_secret().as_slice(), secret);
    // A ciphertext copied to another org's row fails to decrypt there.
    let err = kms.decrypt(&ct, b"credential:globex:openai").await.unwrap_err();
    assert!(matches!(err, KmsError::Tampered), "{err:?}");
    // Another key cannot decrypt it either.
    let other = GcpKms::connect(
        "projects/test-proj/locations/global/keyRings/ring/cryptoKeys/missing",
        Some(&emu.endpoint),
    )
    .await
    .unwrap();
    assert!(other.decrypt(&ct, aad).await.is_err());
    // Empty AAD round trip too.
    let ct = kms.encrypt(b"x", b"").await.unwrap();
    assert_eq!(kms.decrypt(&ct, b"").await.unwrap().expose_secret().as_slice(), b"x");
}

#[tokio::test]
async fn a_malformed_key_name_is_refused() {
    assert!(GcpKms::connect("my-key", Some("http://127.0.0.1:9")).await.is_err());
}
