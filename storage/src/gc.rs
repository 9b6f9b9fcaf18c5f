//! Online mark-and-sweep garbage collection, safe while pushes run.
//!
//! **Mark** (per repository): roots are tags and manifests younger than the grace period;
//! children of live indexes and attachments of live subjects (transitively) are live.
//! With `delete_untagged = false` every manifest is kept.
//!
//! **Sweep**, from the metadata, never by listing the object store:
//! 1. unreachable manifests (only with `delete_untagged`), with their edges and tags;
//! 2. `repository_blobs` links no manifest of the repository references, older than the
//!    grace period;
//! 3. `blobs` rows no link and no manifest references, older than the grace period and
//!    not pinned by an upload: each is replaced by a tombstone in the same transaction;
//! 4. the bytes of each tombstoned blob are deleted, then its tombstone.
//!
//! Steps 1–3 are one write transaction, so a manifest PUT (which checks its links in
//! its own transaction) either sees their effect or is seen by them. A link refuses a
//! tombstoned digest and an upload pins the digest before moving bytes to their
//! address ([`crate::uploads::Uploads`]), so bytes being deleted are never linked again
//! and bytes being placed are never deleted.
//!
//! One collector at a time: a lease in the metadata store (a second `collect` fails
//! with [`StorageError::Conflict`]). Tombstones left by a collector that died are
//! finished by the next one.

use std::sync::Arc;

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::meta::{now, GcPlan, MetadataStore};
use crate::uploads::Uploads;

/// How long a collector's lease lasts by default; it is renewed before every blob it
/// deletes.
pub const DEFAULT_LEASE_SECS: u64 = 600;
/// Pins older than this were left by a crash.
const STALE_PIN_SECS: i64 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Manifests, links and blobs created or touched this recently are kept.
    pub grace_secs: u64,
    /// Collect manifests no tag reaches.
    pub delete_untagged: bool,
    /// Attachment tags of a subject in the same repository follow the subject (see
    /// [`GcPlan::attachments_follow_subject`]).
    pub attachments_follow_subject: bool,
    /// Report, remove nothing.
    pub dry_run: bool,
    /// Also close upload sessions idle this long (`None`: leave them).
    pub expire_uploads_after_secs: Option<u64>,
    /// How long the collector's lease lasts between renewals. A collector that dies
    /// (kill -9, a lost machine) blocks the next one until its lease lapses, so this is
    /// also how long a crashed collection waits before another finishes its work.
    pub lease_secs: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace_secs: 3600,
            delete_untagged: false,
            attachments_follow_subject: true,
            dry_run: false,
            expire_uploads_after_secs: None,
            lease_secs: DEFAULT_LEASE_SECS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcManifest {
    pub repository: String,
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcLink {
    pub repository: String,
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcBlob {
    pub digest: Digest,
    pub size: u64,
}

/// What a collection removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub manifests: Vec<GcManifest>,
    pub links: Vec<GcLink>,
    pub blobs: Vec<GcBlob>,
    /// Sum of the sizes of `blobs`.
    pub bytes_freed: u64,
    /// Upload sessions closed (a dry run: that would be closed).
    pub uploads_expired: usize,
    /// Tombstones of an earlier, interrupted collection finished now.
    pub leftover_deletions: usize,
    /// Verdict rows no attachment names any more (a verdict stored while a tag move
    /// removed its attachment row), deleted (a dry run: found).
    pub orphan_verdicts: u64,
    /// Blobs whose rows were removed but whose bytes could not be deleted: their
    /// tombstones stay, and the next collection retries.
    pub failed_deletions: Vec<String>,
}

impl GcReport {
    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.links.is_empty() && self.blobs.is_empty()
    }
}

/// Runs one collection. The single entry point: a leader election for several
/// replicas wraps this.
pub async fn collect(
    meta: &Arc<dyn MetadataStore>,
    blobs: &BlobStore,
    options: &GcOptions,
) -> StorageResult<GcReport> {
    let holder = uuid::Uuid::new_v4().to_string();
    if !meta.gc_acquire(&holder, lease_secs(options)).await? {
        return Err(StorageError::Conflict(
            "another garbage collection is running".into(),
        ));
    }
    let result = run(meta, blobs, options, &holder).await;
    if let Err(e) = meta.gc_release(&holder).await {
        tracing::warn!(error = %e, "could not release the garbage collection lease");
    }
    result
}

async fn run(
    meta: &Arc<dyn MetadataStore>,
    blobs: &BlobStore,
    options: &GcOptions,
    holder: &str,
) -> StorageResult<GcReport> {
    let mut report = GcReport {
        dry_run: options.dry_run,
        ..GcReport::default()
    };
    if let Some(idle) = options.expire_uploads_after_secs {
        let idle = idle.min(i64::MAX as u64) as i64;
        report.uploads_expired = if options.dry_run {
            meta.uploads_idle_since(now() - idle).await?.len()
        } else {
            Uploads::new(blobs.clone(), meta.clone())
                .expire(idle)
                .await?
        };
    }
    if !options.dry_run {
        // We hold the lease: a tombstone now is one a dead collector left behind.
        for digest in meta.blob_deletions().await? {
            if delete_bytes(meta, blobs, holder, options, &digest, &mut report).await? {
                report.leftover_deletions += 1;
            }
        }
    }

    let at = now();
    let plan = GcPlan {
        cutoff: at.saturating_sub(options.grace_secs.min(i64::MAX as u64) as i64),
        delete_untagged: options.delete_untagged,
        attachments_follow_subject: options.attachments_follow_subject,
        stale_pin_cutoff: at - STALE_PIN_SECS,
        dry_run: options.dry_run,
    };
    let sweep = meta.gc_sweep(&plan).await?;
    report.manifests = sweep
        .manifests
        .into_iter()
        .map(|(repository, digest)| GcManifest { repository, digest })
        .collect();
    report.links = sweep
        .links
        .into_iter()
        .map(|(repository, digest)| GcLink { repository, digest })
        .collect();
    report.blobs = sweep
        .blobs
        .into_iter()
        .map(|(digest, size)| GcBlob { digest, size })
        .collect();
    report.bytes_freed = report.blobs.iter().map(|b| b.size).sum();

    if !options.dry_run {
        for blob in report.blobs.clone() {
            delete_bytes(meta, blobs, holder, options, &blob.digest, &mut report).await?;
        }
    }
    // A verdict written while its attachment row went (on PostgreSQL, the two
    // transactions do not see each other) outlives it: harmless, and collected here.
    report.orphan_verdicts = if options.dry_run {
        meta.orphan_verdicts().await?.len() as u64
    } else {
        meta.delete_orphan_verdicts().await?
    };
    tracing::info!(
        dry_run = options.dry_run,
        manifests = report.manifests.len(),
        links = report.links.len(),
        blobs = report.blobs.len(),
        bytes = report.bytes_freed,
        uploads = report.uploads_expired,
        "garbage collection done"
    );
    Ok(report)
}

/// The lease length in the metadata store's unit, never below one second.
fn lease_secs(options: &GcOptions) -> i64 {
    options.lease_secs.clamp(1, i64::MAX as u64) as i64
}

/// Deletes the bytes of a tombstoned blob, then the tombstone. False when the bytes
/// could not be deleted (the tombstone stays for the next collection).
async fn delete_bytes(
    meta: &Arc<dyn MetadataStore>,
    blobs: &BlobStore,
    holder: &str,
    options: &GcOptions,
    digest: &Digest,
    report: &mut GcReport,
) -> StorageResult<bool> {
    // Another collector may only finish our tombstones once our lease has lapsed; stop
    // before deleting anything once it has.
    if !meta.gc_acquire(holder, lease_secs(options)).await? {
        return Err(StorageError::Conflict(
            "the garbage collection lease was lost".into(),
        ));
    }
    match blobs.delete(digest).await {
        Ok(()) => {
            meta.clear_blob_deletion(digest).await?;
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(%digest, error = %e, "could not delete a collected blob's bytes");
            report.failed_deletions.push(digest.to_string());
            Ok(false)
        }
    }
}
