//! Local key service: AES-256-GCM with a master key file under `DATA_DIR`.
//!
//! Ciphertext layout: `b"CAK1"` | key version (u32, big endian) | 96-bit random nonce |
//! AES-GCM ciphertext and tag. The key file `{DATA_DIR}/kms/local_master_keys.json` holds every
//! key version (so rotation keeps old ciphertexts readable); it is created on first start with
//! mode 0600, atomically, so two services starting together agree on one key.

use std::{
    collections::BTreeMap,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::RwLock,
};

use aes_gcm::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    Aes256Gcm, Key, Nonce,
};
use async_trait::async_trait;
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use secrecy::SecretBox;
use serde::{Deserialize, Serialize};

use super::{Kms, KmsError, Plaintext};

const MAGIC: &[u8; 4] = b"CAK1";
const HEADER_LEN: usize = 4 + 4 + 12;

/// AES-256-GCM key service backed by a key file.
pub struct LocalKms {
    path: PathBuf,
    keys: RwLock<KeyRing>,
}

struct KeyRing {
    current: u32,
    ciphers: BTreeMap<u32, Aes256Gcm>,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    current: u32,
    keys: BTreeMap<u32, String>,
}

impl LocalKms {
    /// Opens the key file under `data_dir`, creating it (mode 0600) on first use.
    pub fn open(data_dir: &Path) -> Result<Self, KmsError> {
        let dir = data_dir.join("kms");
        std::fs::create_dir_all(&dir).map_err(|e| KmsError::KeyFile(format!("{}: {e}", dir.display())))?;
        let path = dir.join("local_master_keys.json");
        if !path.exists() {
            let mut keys = BTreeMap::new();
            keys.insert(1, B64.encode(Aes256Gcm::generate_key(OsRng)));
            write_new_key_file(&path, &KeyFile { current: 1, keys })?;
        }
        let ring = read_key_file(&path)?;
        Ok(LocalKms {
            path,
            keys: RwLock::new(ring),
        })
    }

    /// Path of the key file.
    pub fn key_file(&self) -> &Path {
        &self.path
    }

    /// Version new ciphertexts are made with.
    pub fn current_version(&self) -> Result<u32, KmsError> {
        Ok(self.keys.read().map_err(|_| poisoned())?.current)
    }

    /// Adds a new key version and makes it current; old versions still decrypt.
    pub fn rotate(&self) -> Result<u32, KmsError> {
        let mut file: KeyFile =
            serde_json::from_str(&std::fs::read_to_string(&self.path).map_err(|e| KmsError::KeyFile(e.to_string()))?)
                .map_err(|e| KmsError::KeyFile(e.to_string()))?;
        let next = file.keys.keys().max().copied().unwrap_or(0) + 1;
        file.keys.insert(next, B64.encode(Aes256Gcm::generate_key(OsRng)));
        file.current = next;
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        write_file_0600(&tmp, &file)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| KmsError::KeyFile(e.to_string()))?;
        *self.keys.write().map_err(|_| poisoned())? = read_key_file(&self.path)?;
        Ok(next)
    }

    /// Re-reads the key file (another process may have rotated).
    fn reload(&self) -> Result<(), KmsError> {
        *self.keys.write().map_err(|_| poisoned())? = read_key_file(&self.path)?;
        Ok(())
    }

    fn decrypt_sync(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        if ciphertext.len() < HEADER_LEN + 16 || &ciphertext[..4] != MAGIC {
            return Err(KmsError::Malformed("not a CloudAct local-KMS ciphertext".to_string()));
        }
        let mut version_bytes = [0u8; 4];
        version_bytes.copy_from_slice(&ciphertext[4..8]);
        let version = u32::from_be_bytes(version_bytes);
        let known = self.keys.read().map_err(|_| poisoned())?.ciphers.contains_key(&version);
        if !known {
            self.reload()?;
        }
        let ring = self.keys.read().map_err(|_| poisoned())?;
        let cipher = ring.ciphers.get(&version).ok_or(KmsError::UnknownKeyVersion(version))?;
        let nonce = Nonce::from_slice(&ciphertext[8..HEADER_LEN]);
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &ciphertext[HEADER_LEN..],
                    aad: &header_aad(&ciphertext[..8], aad),
                },
            )
            .map_err(|_| KmsError::Tampered)
    }
}

/// The header is authenticated too: changing the version byte is tampering.
fn header_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(header.len() + aad.len());
    v.extend_from_slice(header);
    v.extend_from_slice(aad);
    v
}

fn poisoned() -> KmsError {
    KmsError::Backend("key ring lock poisoned".to_string())
}

fn write_file_0600(path: &Path, file: &KeyFile) -> Result<(), KmsError> {
    let body = serde_json::to_vec_pretty(file).map_err(|e| KmsError::KeyFile(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| KmsError::KeyFile(format!("{}: {e}", path.display())))?;
    f.write_all(&body)
        .and_then(|_| f.sync_all())
        .map_err(|e| KmsError::KeyFile(e.to_string()))
}

/// Writes a temporary file and hard-links it into place: linking fails if another process
/// got there first, in which case its key wins and ours is discarded.
fn write_new_key_file(path: &Path, file: &KeyFile) -> Result<(), KmsError> {
    let tmp = path.with_extension(format!("new{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_file_0600(&tmp, file)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(KmsError::KeyFile(format!("{}: {e}", path.display()))),
    }
}

fn read_key_file(path: &Path) -> Result<KeyRing, KmsError> {
    let meta = std::fs::metadata(path).map_err(|e| KmsError::KeyFile(format!("{}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "local KMS key file is readable by group or others; chmod 600 it");
    }
    let text = std::fs::read_to_string(path).map_err(|e| KmsError::KeyFile(format!("{}: {e}", path.display())))?;
    let file: KeyFile =
        serde_json::from_str(&text).map_err(|e| KmsError::KeyFile(format!("{}: {e}", path.display())))?;
    let mut ciphers = BTreeMap::new();
    for (version, b64) in &file.keys {
        let bytes = B64
            .decode(b64)
            .map_err(|e| KmsError::KeyFile(format!("key version {version}: {e}")))?;
        if bytes.len() != 32 {
            return Err(KmsError::KeyFile(format!("key version {version} is not 32 bytes")));
        }
        ciphers.insert(*version, Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)));
    }
    if !ciphers.contains_key(&file.current) {
        return Err(KmsError::KeyFile(format!(
            "current key version {} is missing",
            file.current
        )));
    }
    Ok(KeyRing {
        current: file.current,
        ciphers,
    })
}

#[async_trait]
impl Kms for LocalKms {
    fn backend_name(&self) -> &'static str {
        "local"
    }

    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        let ring = self.keys.read().map_err(|_| poisoned())?;
        let cipher = ring
            .ciphers
            .get(&ring.current)
            .ok_or(KmsError::UnknownKeyVersion(ring.current))?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&ring.current.to_be_bytes());
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &header_aad(&out, aad),
                },
            )
            .map_err(|_| KmsError::Backend("AES-GCM encryption failed".to_string()))?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    async fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Plaintext, KmsError> {
        self.decrypt_sync(ciphertext, aad).map(|p| SecretBox::new(Box::new(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[tokio::test]
    async fn round_trip_and_fresh_nonce_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open(dir.path()).unwrap();
        let secret = b"acme_api_0123456789abcdefXYZ";
        let a = kms.encrypt(secret, b"org:acme").await.unwrap();
        let b = kms.encrypt(secret, b"org:acme").await.unwrap();
        assert_ne!(a, b, "random nonce: same plaintext, different ciphertext");
        assert!(
            !a.windows(secret.len()).any(|w| w == secret),
            "no plaintext in the ciphertext"
        );
        assert_eq!(&a[..4], MAGIC);
        assert_eq!(
            u32::from_be_bytes([a[4], a[5], a[6], a[7]]),
            1,
            "key version in the header"
        );
        assert_eq!(
            kms.decrypt(&a, b"org:acme").await.unwrap().expose_secret().as_slice(),
            secret
        );
    }

    #[tokio::test]
    async fn tampering_wrong_context_and_wrong_key_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open(dir.path()).unwrap();
        let ct = kms.encrypt(b"secret", b"org:acme").await.unwrap();
        for i in [8, HEADER_LEN, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(kms.decrypt(&bad, b"org:acme").await, Err(KmsError::Tampered)),
                "byte {i}"
            );
        }
        let mut bad_version = ct.clone();
        bad_version[7] = 9;
        assert!(matches!(
            kms.decrypt(&bad_version, b"org:acme").await,
            Err(KmsError::UnknownKeyVersion(9))
        ));
        assert!(matches!(kms.decrypt(&ct, b"org:other").await, Err(KmsError::Tampered)));
        assert!(matches!(kms.decrypt(b"short", b"").await, Err(KmsError::Malformed(_))));
        let other_dir = tempfile::tempdir().unwrap();
        let other = LocalKms::open(other_dir.path()).unwrap();
        assert!(matches!(other.decrypt(&ct, b"org:acme").await, Err(KmsError::Tampered)));
    }

    #[tokio::test]
    async fn key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = LocalKms::open(dir.path()).unwrap();
        let mode = std::fs::metadata(first.key_file()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ct = first.encrypt(b"x", b"").await.unwrap();
        let second = LocalKms::open(dir.path()).unwrap();
        assert_eq!(second.decrypt(&ct, b"").await.unwrap().expose_secret().as_slice(), b"x");
    }

    #[tokio::test]
    async fn rotation_keeps_old_ciphertexts_readable_in_other_handles() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalKms::open(dir.path()).unwrap();
        let b = LocalKms::open(dir.path()).unwrap();
        let old = a.encrypt(b"old", b"").await.unwrap();
        assert_eq!(a.rotate().unwrap(), 2);
        let new = a.encrypt(b"new", b"").await.unwrap();
        assert_eq!(new[7], 2);
        assert_eq!(b.decrypt(&new, b"").await.unwrap().expose_secret().as_slice(), b"new");
        assert_eq!(b.decrypt(&old, b"").await.unwrap().expose_secret().as_slice(), b"old");
    }

    /// Runs itself as a second process: the parent encrypts, the child (this same test binary,
    /// started with `KMS_CHILD_DIR`) decrypts with its own handle on the same key file.
    #[tokio::test]
    async fn a_second_process_reads_what_the_first_wrote() {
        const TEST: &str = "kms::local::tests::a_second_process_reads_what_the_first_wrote";
        if let (Ok(dir), Ok(ct)) = (std::env::var("KMS_CHILD_DIR"), std::env::var("KMS_CHILD_CT")) {
            let kms = LocalKms::open(Path::new(&dir)).unwrap();
            let plain = kms.decrypt(&B64.decode(ct).unwrap(), b"ctx").await.unwrap();
            assert_eq!(plain.expose_secret().as_slice(), b"cross-process secret");
            println!("CHILD-DECRYPTED-OK");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let kms = LocalKms::open(dir.path()).unwrap();
        let ct = kms.encrypt(b"cross-process secret", b"ctx").await.unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("KMS_CHILD_DIR", dir.path())
            .env("KMS_CHILD_CT", B64.encode(&ct))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("CHILD-DECRYPTED-OK"),
            "child did not run the decrypt: {stdout}"
        );
    }
}
