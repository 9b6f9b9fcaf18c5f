//! Server-side verification: the trust configuration ([`trust`]), verdicts on cosign
//! `.sig` and DSSE `.att` attachments ([`cosign`]), on atomic GPG signatures ([`gpg`]),
//! the docker-reference rule ([`reference`]), the verdicts in the coverage extension
//! ([`report`]) and the pull policy with its requirements ([`policy`],
//! [`requirements`]). Storage knows nothing of it.

pub mod bundle;
pub mod cosign;
pub mod gpg;
pub mod keyless;
pub mod policy;
pub mod reference;
pub mod rekor;
pub mod report;
pub mod requirements;
pub mod sct;
pub mod timestamp;
pub mod trust;
pub mod trusted_root;

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use signet_storage::{BlobStore, Digest, MetadataStore};

pub use trust::{PolicyMode, Trust};

/// Verdicts kept in memory at most; the cache is emptied when full.
const CACHE_CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    Valid,
    Invalid,
    NoTrustRoot,
    Unsupported,
}

/// One attachment's verdict, as shown under `verification` in the coverage extension.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Verdict {
    pub verdict: VerdictKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(rename = "predicateType", skip_serializing_if = "Option::is_none")]
    pub predicate_type: Option<String>,
}

impl Verdict {
    pub fn valid(root: &str, predicate_type: Option<String>) -> Self {
        Verdict {
            verdict: VerdictKind::Valid,
            root: Some(root.to_string()),
            reason: None,
            predicate_type,
        }
    }

    pub fn invalid(reason: impl Into<String>) -> Self {
        Verdict {
            verdict: VerdictKind::Invalid,
            root: None,
            reason: Some(reason.into()),
            predicate_type: None,
        }
    }

    pub fn no_trust_root() -> Self {
        Verdict {
            verdict: VerdictKind::NoTrustRoot,
            root: None,
            reason: Some("no trust root applies to this repository".into()),
            predicate_type: None,
        }
    }

    pub fn unsupported(reason: impl Into<String>) -> Self {
        Verdict {
            verdict: VerdictKind::Unsupported,
            root: None,
            reason: Some(reason.into()),
            predicate_type: None,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.verdict == VerdictKind::Valid
    }

    /// One line for humans: `valid (root release)`, `invalid: bad signature: …`.
    pub fn summary(&self) -> String {
        match self.verdict {
            VerdictKind::Valid => {
                let mut s = format!("valid (root {}", self.root.as_deref().unwrap_or("?"));
                if let Some(p) = &self.predicate_type {
                    s.push_str(&format!(", predicate {p}"));
                }
                s + ")"
            }
            VerdictKind::Invalid => format!("invalid: {}", self.reason.as_deref().unwrap_or("?")),
            VerdictKind::NoTrustRoot => "no-trust-root".into(),
            VerdictKind::Unsupported => {
                format!("unsupported: {}", self.reason.as_deref().unwrap_or("?"))
            }
        }
    }
}

type CacheKey = (String, Digest, Digest, u64);

/// The loaded trust configuration and the verdicts already reached under it.
#[derive(Default)]
pub struct Verifier {
    pub trust: Trust,
    /// Bumped whenever the trust configuration changes; part of every cache key.
    pub generation: u64,
    cache: Mutex<HashMap<CacheKey, Verdict>>,
}

impl Verifier {
    pub fn new(trust: Trust) -> Self {
        Verifier {
            trust,
            generation: 1,
            cache: Mutex::default(),
        }
    }

    /// The verdict on `attachment` (of format `format`) as a signature of `subject` in
    /// `repo`, from the cache when it was reached before under this configuration.
    pub async fn verdict(
        &self,
        meta: &dyn MetadataStore,
        blobs: &BlobStore,
        repo: &str,
        subject: &Digest,
        attachment: &Digest,
        format: &str,
    ) -> Verdict {
        let key = (
            repo.to_string(),
            subject.clone(),
            attachment.clone(),
            self.generation,
        );
        if let Some(v) = self.cache.lock().expect("verdict cache").get(&key) {
            return v.clone();
        }
        let (verdict, cacheable) =
            cosign::verify_attachment(&self.trust, meta, blobs, repo, subject, attachment, format)
                .await;
        if !cacheable {
            return verdict;
        }
        let mut cache = self.cache.lock().expect("verdict cache");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, verdict.clone());
        verdict
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_verifier_caches_nothing_yet() {
        let v = Verifier::new(Trust::default());
        assert_eq!(v.cached(), 0);
        assert_eq!(v.trust.policy_for("any/repo"), PolicyMode::Off);
    }
}
