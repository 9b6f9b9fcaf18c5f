//! The metadata store: repositories, manifests, tags, edges, upload sessions, and what
//! is derived from them.
//!
//! One trait per concern (`store/`: [`Repositories`], [`BlobLinks`], [`Manifests`],
//! [`AtomicSignatures`], [`UploadSessions`], [`Collection`], [`SyncJobs`],
//! [`RevokedTokens`], [`Verdicts`], [`Transfer`], [`Retention`]), [`MetadataStore`] all of them; one SQL
//! implementation (`sql/`: the query layer in `sql/query.rs`, a file per trait, the
//! exported schema in `sql/schema.rs`) that runs on each engine (SQLite, PostgreSQL); the
//! decisions that are not SQL (`rules`); and one test suite (`suite`, with the
//! `testing` feature) that every engine must pass.

mod change_token;
/// The migrations of each engine, embedded by `build.rs` from `storage/migrations/`.
mod migrations {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}
mod postgres;
pub(crate) mod rules;
pub(crate) mod schema;
mod sql;
mod sqlite;
mod store;
#[cfg(feature = "testing")]
pub mod suite;
mod wal_index;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::blobs::{StagedPart, UploadProgress};
use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::names::{RepoName, Tag};

pub use change_token::ChangeToken;
pub use postgres::{PostgresEngine, PostgresMetadata, STALE_BOUND};
pub use sql::SqlMetadata;
pub use sqlite::{SqliteEngine, SqliteMetadata};
pub use store::{
    AtomicSignatures, BlobLinks, Collection, Events, Inventory, InventoryManifest, ManifestSeen,
    Manifests, ProtectedTags, Repositories, Retention, Retired, RevokedTokens, SyncJobs, TagSeen,
    Transfer, UploadSessions, Verdicts,
};

/// A manifest as stored: exact bytes plus what was derived from them at push time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub content: Bytes,
    /// `artifactType`, or the config's media type: what the referrers API reports.
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: BTreeMap<String, String>,
}

impl ManifestRecord {
    /// The record of `content` (which hashes to `digest` and parses as `parsed`): what
    /// a push derives from the bytes.
    pub fn derived(
        digest: Digest,
        parsed: &crate::manifest::ParsedManifest,
        content: Bytes,
    ) -> Self {
        ManifestRecord {
            digest,
            media_type: parsed.media_type.clone(),
            artifact_type: parsed.effective_artifact_type(),
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            annotations: parsed.annotations.clone(),
            content,
        }
    }
}

/// What [`Repositories::usage_under`] counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub repositories: u64,
    pub bytes: u64,
}

/// Everything one manifest PUT writes, in one transaction.
#[derive(Debug, Clone)]
pub struct ManifestPut {
    pub repo: RepoName,
    pub manifest: ManifestRecord,
    /// Blobs the manifest references; each must be in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests (of an index); each must be in the repository.
    pub children: Vec<Digest>,
    /// The sizes the manifest's descriptors declare (`ParsedManifest::declared_sizes`):
    /// each of `blobs` and `children` must have the size its descriptors say.
    pub sizes: Vec<(Digest, u64)>,
    /// The tags to point at this manifest: the one it was pushed by, or those a PUT by
    /// digest names (`?tag=`). All move in one transaction, or none does.
    pub tags: Vec<Tag>,
    /// A condition on each tag's current target (`If-Match`/`If-None-Match`), checked in
    /// the same transaction that moves it.
    pub condition: Option<TagCondition>,
    /// Those of `tags` an immutable-tag rule protects: each may be created, or pushed
    /// again at this same manifest, but not moved ([`StorageError::TagImmutable`]),
    /// checked in the same transaction.
    pub immutable: Vec<Tag>,
}

impl ManifestPut {
    /// What a push of `content` (which hashes to `digest` and parses as `parsed`) stores
    /// in `repo`: the manifest, its blobs, children and their declared sizes; no tag
    /// moves and no condition until the caller sets them.
    pub fn derived(
        repo: RepoName,
        digest: Digest,
        parsed: &crate::manifest::ParsedManifest,
        content: Bytes,
    ) -> Self {
        ManifestPut {
            repo,
            blobs: parsed.required_blobs(),
            children: parsed.required_children(),
            sizes: parsed.declared_sizes(),
            manifest: ManifestRecord::derived(digest, parsed, content),
            tags: Vec::new(),
            condition: None,
            immutable: Vec::new(),
        }
    }

    /// Whether storing it may index attachments: the manifest names a subject (an OCI
    /// referrer), or it goes under an attachment tag (cosign's `.sig`/`.att`/`.sbom`,
    /// the referrers fallback).
    pub fn carries_attachments(&self) -> bool {
        self.manifest.subject.is_some()
            || self
                .tags
                .iter()
                .any(|t| crate::attachments::AttachmentTag::parse(t.as_str()).is_some())
    }
}

/// A precondition on where a tag points before it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagCondition {
    /// The tag exists and points at one of these (`If-Match`); empty means any (`*`).
    PointsAt(Vec<Digest>),
    /// The tag does not point at any of these (`If-None-Match`); empty means it does not
    /// exist at all (`*`).
    NotAt(Vec<Digest>),
}

impl TagCondition {
    pub fn check(&self, current: Option<&str>) -> StorageResult<()> {
        let names = |ds: &[Digest], c: &str| ds.iter().any(|d| d.to_string() == c);
        let ok = match (self, current) {
            (TagCondition::PointsAt(_), None) => false,
            (TagCondition::PointsAt(ds), Some(c)) => ds.is_empty() || names(ds, c),
            (TagCondition::NotAt(_), None) => true,
            (TagCondition::NotAt(ds), Some(c)) => !ds.is_empty() && !names(ds, c),
        };
        if ok {
            Ok(())
        } else {
            Err(StorageError::PreconditionFailed(format!(
                "the tag points at {}",
                current.unwrap_or("nothing")
            )))
        }
    }
}

/// One entry of the attachment index, with what the attachment manifest says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRecord {
    pub subject: Digest,
    pub attachment: Digest,
    pub kind: crate::attachments::AttachmentKind,
    pub source: crate::attachments::AttachmentSource,
    pub format: crate::attachments::AttachmentFormat,
    pub artifact_type: Option<String>,
    pub tag: Option<String>,
    /// The manifest whose presence keeps the row (a BuildKit attestation's: its index).
    pub carrier: Digest,
    pub created_at: i64,
    /// Of the attachment manifest; `None` for an atomic signature.
    pub media_type: Option<String>,
    pub size: Option<u64>,
    pub annotations: BTreeMap<String, String>,
}

/// A manifest read back for a GET or HEAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub content: Bytes,
}

/// One entry of a referrers listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// One tag with the manifest it points at, for listings that show more than names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDetail {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// When the tag last moved (seconds since the epoch).
    pub pushed_at: i64,
    /// The manifest's exact bytes, for what callers derive from them (platforms).
    pub content: Bytes,
}

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    pub id: String,
    pub repo: RepoName,
    /// Bytes received so far (the sum of the parts' sizes).
    pub size: u64,
    pub parts: Vec<StagedPart>,
    /// Where the bytes are staged and the running hashes over them; `None` for a
    /// session opened before sessions kept them (its parts are read again at the end).
    pub progress: Option<UploadProgress>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A "simple signing" (atomic) signature: an opaque GPG-signed blob, named by an id
/// unique for its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomicSignature {
    /// 32 lowercase hex characters.
    pub id: String,
    pub content: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStored {
    Created,
    /// The same signature was already stored: nothing changed.
    AlreadyPresent,
}

/// A verification verdict as stored: what the trust configuration with `fingerprint`
/// said of `attachment` as a signature or attestation of `subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVerdict {
    pub subject: Digest,
    pub attachment: Digest,
    /// The trust root the verdict names; `None` when no root decided it.
    pub root: Option<String>,
    /// `valid`, `invalid`, `no-trust-root` or `unsupported`.
    pub verdict: crate::attachments::VerdictKind,
    pub reason: Option<String>,
    pub predicate_type: Option<String>,
    /// Who signed, as the evidence names it (a certificate identity, a key fingerprint).
    pub signer: Option<String>,
    pub fingerprint: String,
    /// Seconds since the epoch.
    pub checked_at: i64,
}

/// A signature or attestation without a verdict under a given trust configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedAttachment {
    pub repo: String,
    pub subject: Digest,
    pub attachment: Digest,
    pub format: crate::attachments::AttachmentFormat,
}

/// A page request: entries strictly after `last`, at most `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct Page<'a> {
    pub last: Option<&'a str>,
    pub limit: Option<u32>,
}

/// A column value copied between stores ([`Transfer::export_repository`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportValue {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// The rows of one table, as exported: the columns other than the repository id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTable {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<ExportValue>>,
}

/// Which rows of a repository an export holds ([`Transfer::export_repository`]). Every
/// table but the blob links has an owning manifest per row (a manifest's own row, the
/// tags pointing at it, its edges, its atomic signatures, the attachment rows it
/// carries); the selections other than `All` pick rows by that owner, and leave the
/// blob links out.
#[derive(Debug, Clone, Copy)]
pub enum ExportRows<'a> {
    /// Every row.
    All,
    /// The rows of at most `limit` manifests, those whose digests come first after
    /// `after` in digest order: one window of a walk through a repository that holds
    /// only a window's rows at a time.
    Window { after: Option<&'a str>, limit: u32 },
    /// The rows of these manifests.
    Of(&'a [Digest]),
    /// The rows whose owning manifest the repository does not hold.
    Unowned,
}

/// Everything a store holds of one repository (without the shared `blobs` rows), in the
/// order it must be imported: links, manifests with their exact bytes, tags, edges,
/// atomic signatures (oldest first) and attachment rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryExport {
    pub name: String,
    pub created_at: i64,
    pub tables: Vec<ExportTable>,
}

/// One row of the `blobs` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRow {
    pub digest: Digest,
    pub size: u64,
    pub created_at: i64,
}

/// The whole metadata store: every concern's trait. Consumers take the narrow trait they
/// need (`&dyn Manifests`, `&dyn Verdicts`, ...); `Arc<dyn MetadataStore>` upcasts to
/// each. One SQL implementation ([`SqlMetadata`]) serves both engines.
pub trait MetadataStore:
    Repositories
    + BlobLinks
    + Manifests
    + AtomicSignatures
    + UploadSessions
    + Collection
    + SyncJobs
    + RevokedTokens
    + Verdicts
    + Transfer
    + Retention
    + Events
{
}

impl<T> MetadataStore for T where
    T: Repositories
        + BlobLinks
        + Manifests
        + AtomicSignatures
        + UploadSessions
        + Collection
        + SyncJobs
        + RevokedTokens
        + Verdicts
        + Transfer
        + Retention
        + Events
        + ?Sized
{
}

/// What [`Collection::gc_sweep`] is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPlan {
    /// Unix seconds: manifests, links and blobs created or touched at or after it are
    /// kept (the grace period).
    pub cutoff: i64,
    /// Collect manifests that no tag reaches.
    pub delete_untagged: bool,
    /// An attachment tag (`sha256-<hex>.sig`, a referrers fallback tag) whose subject is
    /// a manifest of the repository is no root of its own: it lives and dies with its
    /// subject. False makes every tag a root.
    pub attachments_follow_subject: bool,
    /// Pins older than this (unix seconds) are left by a crash: ignored and removed.
    pub stale_pin_cutoff: i64,
    /// Decide, report, and roll back.
    pub dry_run: bool,
    /// A sweep examines at most this many links, or this many blobs (`None`: all), so
    /// a large collection goes in rounds of bounded memory and time;
    /// [`GcSweep::more`] says whether rows are left to examine.
    pub limit: Option<u32>,
    /// Where this round resumes: the last round's [`GcSweep::resume`], or the default
    /// for the first.
    pub resume: GcResume,
}

/// Where the next round of a collection starts. A round examines a window of links,
/// then of blobs, in key order ([`GcPlan::limit`] rows); the next goes on from its end,
/// so what earlier rounds examined and kept is not examined again (rounds would
/// otherwise walk every live row again each time, and a collection's time grow with the
/// square of the store). What turns to garbage behind the walk meanwhile waits for the
/// next collection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcResume {
    /// The last link a round examined: (repository id, blob digest).
    pub links_after: Option<(i64, String)>,
    /// Every garbage link is gone: rounds sweep blobs.
    pub links_done: bool,
    /// The last blob a round examined.
    pub blobs_after: Option<String>,
}

/// What [`Collection::gc_sweep`] removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSweep {
    /// (repository, manifest)
    pub manifests: Vec<(String, Digest)>,
    /// (repository, blob): links no manifest of the repository references.
    pub links: Vec<(String, Digest)>,
    /// (blob, size): rows now replaced by tombstones.
    pub blobs: Vec<(Digest, u64)>,
    /// A window ended before the end of its table: sweep again.
    pub more: bool,
    /// Where the next round starts ([`GcPlan::resume`]).
    pub resume: GcResume,
}

/// Opens the metadata store a URL names (`sqlite://path`, `sqlite::memory:`,
/// `postgres://...` or `postgresql://...`), running its migrations.
pub async fn open_metadata(url: &str) -> StorageResult<Arc<dyn MetadataStore>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteMetadata::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresMetadata::open(url).await?))
    } else {
        // Only the scheme: the rest of a URL may hold a password.
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        Err(StorageError::Other(format!(
            "unsupported metadata URL scheme {scheme:?} (expected sqlite:, postgres: or postgresql:)"
        )))
    }
}

/// Unix seconds: the clock every stored time is written by.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
