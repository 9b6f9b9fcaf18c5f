//! Upstream passwords of sync jobs created through the admin API, sealed at rest.
//!
//! Such jobs live in the metadata database (`sync_jobs`), which backups, `signet
//! migrate` and database administrators see. Their password is stored as
//! `sealed:v1:<base64 of nonce | AES-256-GCM ciphertext>`, with the job's name as the
//! associated data (a sealed password moved to another job does not open), under the key
//! in `[sync] secret_key_file`: 32 random bytes as 64 hex characters
//! (`openssl rand -hex 32`), the same file on every replica. Without that key, a job with
//! a password cannot be created through the API.

use std::path::Path;

use anyhow::Context as _;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine as _;

const PREFIX: &str = "sealed:v1:";

pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// The key of `[sync] secret_key_file`; `None` when none is configured.
    pub fn load(path: &str) -> anyhow::Result<Option<Sealer>> {
        if path.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(Path::new(path))
            .with_context(|| format!("[sync] secret_key_file {path:?} cannot be read"))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
            anyhow::anyhow!(
                "[sync] secret_key_file {path:?} must hold 64 hex characters (openssl rand -hex 32)"
            )
        })?;
        Ok(Some(Sealer::new(&key)))
    }

    pub fn new(key: &[u8; 32]) -> Sealer {
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key");
        Sealer {
            key: LessSafeKey::new(unbound),
        }
    }

    /// `secret` sealed for the job named `job`.
    pub fn seal(&self, job: &str, secret: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| anyhow::anyhow!("no randomness"))?;
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(job.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| anyhow::anyhow!("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// The secret of a value [`Sealer::seal`] made for `job`.
    pub fn open(&self, job: &str, stored: &str) -> anyhow::Result<String> {
        let encoded = stored
            .strip_prefix(PREFIX)
            .ok_or_else(|| anyhow::anyhow!("not a sealed value"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| anyhow::anyhow!("a sealed value that is not base64"))?;
        if bytes.len() < NONCE_LEN {
            anyhow::bail!("a sealed value too short to hold its nonce");
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| anyhow::anyhow!("a sealed value with a broken nonce"))?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(job.as_bytes()), &mut sealed)
            .map_err(|_| anyhow::anyhow!("the sealed password does not open with this key"))?;
        String::from_utf8(plain.to_vec()).map_err(|_| anyhow::anyhow!("not UTF-8"))
    }
}

/// Whether a stored value is sealed (jobs stored before sealing hold plain passwords).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_for_one_job_and_key() {
        let sealer = Sealer::new(&[7u8; 32]);
        let sealed = sealer.seal("nightly", "s3cret").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("s3cret"));
        assert_eq!(sealer.open("nightly", &sealed).unwrap(), "s3cret");
        // Each seal is new (fresh nonce); another job or key does not open it.
        assert_ne!(sealer.seal("nightly", "s3cret").unwrap(), sealed);
        assert!(sealer.open("other", &sealed).is_err());
        assert!(Sealer::new(&[8u8; 32]).open("nightly", &sealed).is_err());
        assert!(sealer.open("nightly", "s3cret").is_err());
    }

    #[test]
    fn loads_a_hex_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(Sealer::load(path.to_str().unwrap()).unwrap().is_some());
        std::fs::write(&path, "short").unwrap();
        assert!(Sealer::load(path.to_str().unwrap()).is_err());
        assert!(Sealer::load("").unwrap().is_none());
    }
}
