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
//! its own transaction) either sees their effect or is seen by them. A large
//! collection repeats steps 2–4 in rounds of at most [`ROUND`] links and blobs, each
//! round its own transaction that decides anew, so memory stays flat. A link refuses a
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
use crate::meta::{now, GcPlan, GcResume, MetadataStore};
use crate::uploads::Uploads;

/// How long a collector's lease lasts by default; it is renewed while it deletes
/// bytes, a quarter of the way through (at least every 30 s).
pub const DEFAULT_LEASE_SECS: u64 = 600;
/// Pins older than this were left by a crash.
const STALE_PIN_SECS: i64 = 3600;
/// Blobs deleted between two checks of the lease (each batch's deletions run side by
/// side, `BlobStore::delete_each`).
const DELETE_BATCH: usize = 256;

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
    /// Links and blobs swept per round ([`ROUND`]).
    pub round: u32,
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
            round: ROUND,
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

/// Links and blobs swept per round of a collection by default, each round one write
/// transaction: a collection's memory stays the same however much it removes.
pub const ROUND: u32 = 10_000;
/// The most manifests, links and blobs a report names, each; the counts are exact.
pub const LISTED: usize = 10_000;

/// What a collection removed (or, for a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// The first [`LISTED`] of them; `manifests_count` counts them all.
    pub manifests: Vec<GcManifest>,
    pub links: Vec<GcLink>,
    pub blobs: Vec<GcBlob>,
    pub manifests_count: u64,
    pub links_count: u64,
    pub blobs_count: u64,
    /// Sum of the sizes of all the blobs removed.
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
        self.manifests_count == 0 && self.links_count == 0 && self.blobs_count == 0
    }

    /// Counts one round's removals and names them while the lists have room.
    fn add(&mut self, sweep: crate::meta::GcSweep) {
        self.manifests_count += sweep.manifests.len() as u64;
        self.links_count += sweep.links.len() as u64;
        self.blobs_count += sweep.blobs.len() as u64;
        self.bytes_freed += sweep.blobs.iter().map(|(_, size)| size).sum::<u64>();
        listed(
            &mut self.manifests,
            sweep.manifests,
            |(repository, digest)| GcManifest { repository, digest },
        );
        listed(&mut self.links, sweep.links, |(repository, digest)| {
            GcLink { repository, digest }
        });
        listed(&mut self.blobs, sweep.blobs, |(digest, size)| GcBlob {
            digest,
            size,
        });
    }
}

/// Appends to `list` as many of `items` as it has room for under [`LISTED`].
fn listed<T, U>(list: &mut Vec<U>, items: Vec<T>, name: impl Fn(T) -> U) {
    let room = LISTED.saturating_sub(list.len());
    list.extend(items.into_iter().take(room).map(name));
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
    let mut lease = Lease::held(holder, options);
    let mut cleared = Cleared::new();
    if !options.dry_run {
        // We hold the lease: a tombstone now is one a dead collector left behind.
        let leftover = meta.blob_deletions().await?;
        let failed = &mut report.failed_deletions;
        report.leftover_deletions +=
            delete_bytes(meta, blobs, &mut lease, &mut cleared, &leftover, failed).await?;
        cleared.flush(meta).await?;
    }

    let at = now();
    let mut plan = GcPlan {
        cutoff: at.saturating_sub(options.grace_secs.min(i64::MAX as u64) as i64),
        delete_untagged: options.delete_untagged,
        attachments_follow_subject: options.attachments_follow_subject,
        stale_pin_cutoff: at - STALE_PIN_SECS,
        dry_run: options.dry_run,
        // A dry run rolls back, so a second round would find the same rows again.
        limit: (!options.dry_run).then_some(options.round.max(1)),
        resume: GcResume::default(),
    };
    loop {
        let sweep = meta.gc_sweep(&plan).await?;
        if !options.dry_run {
            let swept: Vec<Digest> = sweep.blobs.iter().map(|(d, _)| d.clone()).collect();
            let failed = &mut report.failed_deletions;
            delete_bytes(meta, blobs, &mut lease, &mut cleared, &swept, failed).await?;
            cleared.flush(meta).await?;
        }
        let more = sweep.more;
        plan.resume = sweep.resume.clone();
        report.add(sweep);
        if !more {
            break;
        }
        // Unreachable manifests went in the first round; the next rounds only finish
        // the links and blobs left over the limit.
        plan.delete_untagged = false;
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
        manifests = report.manifests_count,
        links = report.links_count,
        blobs = report.blobs_count,
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

/// The collector's hold on the GC lease while it deletes bytes, renewed on a clock: a
/// renewal per blob would double the writes of a large collection.
struct Lease<'a> {
    holder: &'a str,
    secs: i64,
    renewed: Option<std::time::Instant>,
}

impl<'a> Lease<'a> {
    /// `collect` took the lease just before the sweep; the first deletion renews it.
    fn held(holder: &'a str, options: &GcOptions) -> Self {
        Self {
            holder,
            secs: lease_secs(options),
            renewed: None,
        }
    }

    /// Renews the lease once a quarter of it has run (at least every 30 s); an error
    /// when another collector holds it now.
    async fn keep(&mut self, meta: &Arc<dyn MetadataStore>) -> StorageResult<()> {
        let every = std::time::Duration::from_secs((self.secs as u64 / 4).min(30));
        if self.renewed.is_some_and(|at| at.elapsed() < every) {
            return Ok(());
        }
        // Another collector may only finish our tombstones once our lease has lapsed;
        // stop before deleting anything once it has.
        if !meta.gc_acquire(self.holder, self.secs).await? {
            return Err(StorageError::Conflict(
                "the garbage collection lease was lost".into(),
            ));
        }
        self.renewed = Some(std::time::Instant::now());
        Ok(())
    }
}

/// Tombstones whose bytes are gone, cleared a batch at a time: an upload of the same
/// digest waits for its tombstone, so a batch waits at most [`Cleared::AT_MOST`].
struct Cleared {
    digests: Vec<Digest>,
    since: std::time::Instant,
}

impl Cleared {
    const BATCH: usize = 256;
    const AT_MOST: std::time::Duration = std::time::Duration::from_millis(200);

    fn new() -> Self {
        Self {
            digests: Vec::new(),
            since: std::time::Instant::now(),
        }
    }

    async fn push(&mut self, meta: &Arc<dyn MetadataStore>, digest: Digest) -> StorageResult<()> {
        if self.digests.is_empty() {
            self.since = std::time::Instant::now();
        }
        self.digests.push(digest);
        if self.digests.len() >= Self::BATCH || self.since.elapsed() >= Self::AT_MOST {
            self.flush(meta).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, meta: &Arc<dyn MetadataStore>) -> StorageResult<()> {
        if !self.digests.is_empty() {
            meta.clear_blob_deletions(&self.digests).await?;
            self.digests.clear();
        }
        Ok(())
    }
}

/// Deletes the bytes of tombstoned blobs, a batch at a time, and queues the tombstones
/// of those deleted to be cleared; returns how many were. Bytes that could not be deleted
/// keep their tombstones for the next collection.
async fn delete_bytes(
    meta: &Arc<dyn MetadataStore>,
    blobs: &BlobStore,
    lease: &mut Lease<'_>,
    cleared: &mut Cleared,
    digests: &[Digest],
    failed: &mut Vec<String>,
) -> StorageResult<usize> {
    let mut deleted = 0;
    for batch in digests.chunks(DELETE_BATCH) {
        // Never a deletion once the lease is lost: checked before each batch.
        lease.keep(meta).await?;
        for (digest, outcome) in batch.iter().zip(blobs.delete_each(batch).await) {
            match outcome {
                Ok(()) => {
                    cleared.push(meta, digest.clone()).await?;
                    deleted += 1;
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "could not delete a collected blob's bytes");
                    failed.push(digest.to_string());
                }
            }
        }
    }
    Ok(deleted)
}
