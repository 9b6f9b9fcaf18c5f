//! Server-side verification: the wiring around [`signet_verify`], which holds the
//! cryptography as pure functions over bytes. Here: reading an attachment's bytes from
//! the stores ([`fetch`]), keeping verdicts (in memory and in the `verdicts` table, each
//! with the fingerprint of the trust configuration that reached it), the pull policy
//! ([`policy`]), the verdicts in the coverage extension ([`report`]) and the background
//! verifier ([`worker`]), which computes verdicts off the request path and again when a
//! reload (SIGHUP) changes the fingerprint; a reader finding no current verdict computes
//! and stores it itself, so answers never depend on who came first.

pub mod fetch;
pub mod policy;
pub mod report;
pub mod worker;

pub use signet_verify::{
    bundle, cosign, gpg, keyless, reference, rekor, requirements, sct, timestamp, trust,
    trusted_root, Verdict, VerdictKind,
};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use signet_storage::attachments::AttachmentFormat;
use signet_storage::meta::{ChangeToken, ManifestPut, StoredVerdict};
use signet_storage::{BlobStore, Digest, MetadataStore, RepoName};

pub use trust::{PolicyMode, Trust};

/// Verdicts kept in memory at most; the cache is emptied when full.
const CACHE_CAPACITY: usize = 4096;
/// Policy evaluations kept in memory at most; emptied when full.
const EVALUATIONS_CAPACITY: usize = 4096;

/// A verdict as the store keeps it.
fn to_stored(
    verdict: &Verdict,
    subject: &Digest,
    attachment: &Digest,
    fingerprint: &str,
) -> StoredVerdict {
    StoredVerdict {
        subject: subject.clone(),
        attachment: attachment.clone(),
        root: verdict.root.clone(),
        verdict: verdict.verdict,
        reason: verdict.reason.clone(),
        predicate_type: verdict.predicate_type.clone(),
        signer: verdict.signer.clone(),
        fingerprint: fingerprint.to_string(),
        checked_at: verdict.checked_at.unwrap_or_else(now),
    }
}

/// A stored verdict. (A row this version does not understand fails to read, and the
/// verdict is computed again.)
fn from_stored(row: &StoredVerdict) -> Verdict {
    Verdict {
        verdict: row.verdict,
        root: row.root.clone(),
        reason: row.reason.clone(),
        predicate_type: row.predicate_type.clone(),
        signer: row.signer.clone(),
        checked_at: Some(row.checked_at),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The trust configuration in force, replaced whole by a reload.
pub struct TrustHandle {
    current: RwLock<Arc<Trust>>,
    /// Bumped by every reload (even one that changes only policy modes or
    /// requirements, which the fingerprint leaves out).
    generation: AtomicU64,
}

impl Default for TrustHandle {
    fn default() -> Self {
        TrustHandle::new(Trust::default())
    }
}

impl TrustHandle {
    pub fn new(trust: Trust) -> Self {
        TrustHandle {
            current: RwLock::new(Arc::new(trust)),
            generation: AtomicU64::new(1),
        }
    }

    /// The configuration now; hold it for the whole of one decision, so a reload
    /// midway cannot mix two configurations.
    pub fn current(&self) -> Arc<Trust> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn policy_for(&self, repo: &str) -> PolicyMode {
        self.current().policy_for(repo)
    }

    /// Puts `trust` in force; true when its fingerprint differs from the old one's
    /// (verdicts must be reached again).
    pub fn replace(&self, trust: Trust) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let changed = current.fingerprint != trust.fingerprint;
        *current = Arc::new(trust);
        self.generation.fetch_add(1, Ordering::SeqCst);
        changed
    }
}

type CacheKey = (String, Digest, Digest, String);

/// A policy evaluation and what it was read under: the store's change token (see
/// [`crate::cache`]) and the trust generation.
struct CachedEvaluation {
    version: ChangeToken,
    generation: u64,
    evaluation: Option<policy::Evaluation>,
}

/// Every write goes through the store's write path (`signet_storage::Registry`), which
/// tells the verifier what it stored.
impl signet_storage::WriteHooks for Verifier {
    fn manifest_stored(&self, put: &ManifestPut) {
        Verifier::manifest_stored(self, put);
    }

    fn signature_stored(&self, _: &RepoName, _: &Digest, _: &str) {
        self.attachment_stored();
    }
}

/// The trust configuration in force and the verdicts already reached under it.
#[derive(Default)]
pub struct Verifier {
    pub trust: TrustHandle,
    cache: Mutex<HashMap<CacheKey, Verdict>>,
    evaluations: Mutex<HashMap<(String, String), CachedEvaluation>>,
    /// Wakes the background verifier early (the trust configuration changed, or an
    /// attachment was stored by this process).
    pub(crate) wake: tokio::sync::Notify,
    /// Where a verdict that changed is recorded (`verdict.changed`).
    pub(crate) events: crate::notify::EventLog,
}

impl Verifier {
    pub fn new(trust: Trust) -> Self {
        Verifier {
            trust: TrustHandle::new(trust),
            ..Verifier::default()
        }
    }

    /// An attachment (signature, attestation, SBOM, any referrer) was just stored: the
    /// background verifier looks for it now rather than at its next interval. Wakes
    /// coalesce, so a burst of pushes costs one scan.
    pub fn attachment_stored(&self) {
        self.wake.notify_one();
    }

    /// A manifest was just stored: wakes the verifier when it may be an attachment.
    pub fn manifest_stored(&self, put: &ManifestPut) {
        if put.carries_attachments() {
            self.attachment_stored();
        }
    }

    /// Puts a reloaded configuration in force and, when verdicts depend on the change,
    /// wakes the background verifier to reach them again.
    pub fn reload(&self, trust: Trust) -> bool {
        let changed = self.trust.replace(trust);
        // Evaluations are keyed by generation, verdicts by fingerprint: stale entries
        // are never served, and emptying the maps frees them now.
        self.evaluations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if changed {
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.wake.notify_one();
        }
        changed
    }

    /// The verdict on `attachment` (of format `format`) as a signature of `subject` in
    /// `repo` under the configuration in force: from memory, else the stored one when
    /// that configuration reached it, else computed now (and stored).
    pub async fn verdict(
        &self,
        meta: &dyn MetadataStore,
        blobs: &BlobStore,
        repo: &str,
        subject: &Digest,
        attachment: &Digest,
        format: AttachmentFormat,
    ) -> Verdict {
        let trust = self.trust.current();
        let key = (
            repo.to_string(),
            subject.clone(),
            attachment.clone(),
            trust.fingerprint.clone(),
        );
        if let Some(v) = self.cache.lock().expect("verdict cache").get(&key) {
            return v.clone();
        }
        if let Ok(name) = repo.parse::<RepoName>() {
            match meta.get_verdict(&name, subject, attachment).await {
                Ok(Some(row)) if row.fingerprint == trust.fingerprint => {
                    let v = from_stored(&row);
                    self.remember(key, &v);
                    return v;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%repo, %attachment, error = %e, "could not read a stored verdict")
                }
            }
        }
        self.compute(&trust, meta, blobs, repo, subject, attachment, format)
            .await
            .0
    }

    /// Verifies under `trust` whatever is stored, and stores the verdict unless a
    /// storage read failed (it may be transient). The bool: whether it was stored
    /// (false too when the attachment is no longer attached).
    #[allow(clippy::too_many_arguments)]
    pub async fn compute(
        &self,
        trust: &Trust,
        meta: &dyn MetadataStore,
        blobs: &BlobStore,
        repo: &str,
        subject: &Digest,
        attachment: &Digest,
        format: AttachmentFormat,
    ) -> (Verdict, bool) {
        let (mut verdict, cacheable) =
            fetch::verify_attachment(trust, meta, blobs, repo, subject, attachment, format).await;
        crate::ops::metrics::global()
            .verification_verdicts
            .with_label_values(&[verdict.verdict.as_str()])
            .inc();
        if !cacheable {
            return (verdict, false);
        }
        verdict.checked_at = Some(now());
        let stored = match repo.parse::<RepoName>() {
            Ok(name) => {
                let row = to_stored(&verdict, subject, attachment, &trust.fingerprint);
                let previous = if self.events.enabled() {
                    meta.get_verdict(&name, subject, attachment)
                        .await
                        .ok()
                        .flatten()
                } else {
                    None
                };
                let stored = meta.put_verdict(&name, &row).await.unwrap_or_else(|e| {
                    tracing::warn!(%repo, %attachment, error = %e, "could not store a verdict");
                    false
                });
                if stored && previous.as_ref().map(|p| p.verdict) != Some(row.verdict) {
                    self.events
                        .append(vec![verdict_changed(repo, &row, previous.as_ref())])
                        .await;
                }
                stored
            }
            Err(_) => false,
        };
        let key = (
            repo.to_string(),
            subject.clone(),
            attachment.clone(),
            trust.fingerprint.clone(),
        );
        self.remember(key, &verdict);
        (verdict, stored)
    }

    fn remember(&self, key: CacheKey, verdict: &Verdict) {
        let mut cache = self.cache.lock().expect("verdict cache");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, verdict.clone());
    }

    /// A policy evaluation of `reference` in `repo` read under database `version` and
    /// the trust generation in force, if one was kept.
    fn evaluation(
        &self,
        repo: &str,
        reference: &str,
        version: &ChangeToken,
    ) -> Option<Option<policy::Evaluation>> {
        let generation = self.trust.generation();
        let map = self.evaluations.lock().unwrap_or_else(|e| e.into_inner());
        let hit = map.get(&(repo.to_string(), reference.to_string()))?;
        (hit.version == *version && hit.generation == generation).then(|| hit.evaluation.clone())
    }

    fn keep_evaluation(
        &self,
        repo: &str,
        reference: &str,
        version: ChangeToken,
        generation: u64,
        evaluation: &Option<policy::Evaluation>,
    ) {
        let mut map = self.evaluations.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= EVALUATIONS_CAPACITY {
            map.clear();
        }
        map.insert(
            (repo.to_string(), reference.to_string()),
            CachedEvaluation {
                version,
                generation,
                evaluation: evaluation.clone(),
            },
        );
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.cache.lock().unwrap().len()
    }
}

/// The `verdict.changed` event: an attachment's first verdict, or one that differs from
/// the verdict stored before (a trust reload turned it invalid, say).
fn verdict_changed(
    repo: &str,
    row: &signet_storage::meta::StoredVerdict,
    previous: Option<&signet_storage::meta::StoredVerdict>,
) -> signet_storage::events::NewEvent {
    use signet_storage::events::{EventData, EventType, NewEvent};
    NewEvent::new(
        EventType::VerdictChanged,
        EventData {
            repository: repo.to_string(),
            digest: Some(row.attachment.to_string()),
            subject: Some(row.subject.to_string()),
            verdict: Some(row.verdict.as_str().to_string()),
            previous: previous.map(|p| p.verdict.as_str().to_string()),
            root: row.root.clone(),
            reason: row.reason.clone(),
            actor: Some("signet".into()),
            detail: row
                .signer
                .as_ref()
                .map(|s| serde_json::json!({ "signer": s })),
            ..EventData::default()
        },
    )
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

    #[test]
    fn stored_verdicts_read_back_as_reached() {
        let subject = Digest::sha256_of(b"subject");
        let attachment = Digest::sha256_of(b"attachment");
        let mut v = Verdict::valid("release", Some("https://slsa.dev/provenance/v1".into()))
            .signed_by(Some("ci@example.com".into()));
        v.checked_at = Some(1_700_000_000);
        let row = to_stored(&v, &subject, &attachment, "fp");
        assert_eq!(row.verdict, VerdictKind::Valid);
        assert_eq!(from_stored(&row), v);
    }

    #[test]
    fn a_reload_changes_the_fingerprint_only_when_verdicts_depend_on_it() {
        let v = Verifier::new(Trust::default());
        let before = v.trust.generation();
        assert!(!v.reload(Trust::default()), "same roots, same fingerprint");
        assert!(v.trust.generation() > before);
        let policy_only = trust::TrustConfig {
            policy: PolicyMode::Enforce,
            ..Default::default()
        };
        assert!(!v.reload(Trust::load(&policy_only).unwrap()));
        assert_eq!(v.trust.policy_for("a/b"), PolicyMode::Enforce);
        let named = trust::TrustConfig {
            registry_names: vec!["registry.example.com".into()],
            ..Default::default()
        };
        assert!(v.reload(Trust::load(&named).unwrap()));
    }
}
