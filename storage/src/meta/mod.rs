//! The metadata store: repositories, manifests, tags, edges and upload sessions.
//!
//! One trait, one SQL implementation of it ([`sql`]) that runs on each engine (SQLite,
//! PostgreSQL), the decisions that are not SQL ([`rules`]), and one test suite
//! ([`suite`]) that every engine must pass.

mod change_token;
mod postgres;
pub(crate) mod rules;
mod sql;
mod sqlite;
pub mod suite;
mod wal_index;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::blobs::{StagedPart, UploadProgress};
use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::names::{Reference, RepoName, Tag};

pub use change_token::ChangeToken;
pub use postgres::{PostgresEngine, PostgresMetadata};
pub use sql::SqlMetadata;
pub use sqlite::{SqliteEngine, SqliteMetadata};

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

/// What [`MetadataStore::usage_under`] counts.
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
    /// cosign | sigstore-bundle | notation | atomic | oci
    pub format: String,
    pub artifact_type: Option<String>,
    pub tag: Option<String>,
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
    pub verdict: String,
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
    /// As in [`AttachmentRecord::format`].
    pub format: String,
}

/// A page request: entries strictly after `last`, at most `limit` of them.
#[derive(Debug, Clone, Default)]
pub struct Page<'a> {
    pub last: Option<&'a str>,
    pub limit: Option<u32>,
}

/// A column value copied between stores ([`MetadataStore::export_repository`]).
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

#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Cheap round trip to the database, for readiness checks.
    async fn ping(&self) -> StorageResult<()>;

    /// A token that changes whenever the store commits (see [`ChangeToken`]); `None`
    /// where the engine has no such signal: then nothing may be cached.
    fn change_token(&self) -> Option<ChangeToken>;
    async fn list_repositories(&self, page: Page<'_>) -> StorageResult<Vec<String>>;
    async fn repository_exists(&self, repo: &RepoName) -> StorageResult<bool>;
    /// What the repositories below `prefix` (`prefix/...`) hold: how many there are, and
    /// the bytes of the distinct blobs linked into them (pull-through quotas).
    async fn usage_under(&self, prefix: &RepoName) -> StorageResult<Usage>;

    /// Size of `digest` if the repository may serve it.
    async fn blob_in_repository(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>>;
    /// Size of `digest` if any repository holds it.
    async fn blob_size(&self, digest: &Digest) -> StorageResult<Option<u64>>;
    /// Records the blob and lets the repository serve it (creating the repository).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> StorageResult<()>;
    /// Stops the repository serving the blob. False when it did not.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool>;

    /// Stores a manifest, its edges and its tag in one transaction. Fails with
    /// [`StorageError::MissingReferences`] when referenced blobs or children are absent.
    async fn put_manifest(&self, put: &ManifestPut) -> StorageResult<()>;
    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<Option<StoredManifest>>;
    /// Deletes a manifest, the tags pointing at it and its edges, and with
    /// `with_attachments` its attachments (recursively), in one transaction. Returns
    /// what was deleted: empty when the manifest was absent.
    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_attachments: bool,
    ) -> StorageResult<Vec<Digest>>;
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<bool>;
    /// Tags in lexical order; `None` when the repository does not exist.
    async fn list_tags(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> StorageResult<Option<Vec<String>>>;
    /// Like [`MetadataStore::list_tags`], each tag with its manifest and push time.
    async fn list_tag_details(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> StorageResult<Option<Vec<TagDetail>>>;
    /// Referrers of `subject`: manifests whose `subject` it is, entries of its fallback
    /// tag, and with `include_tag_attachments` its cosign tag attachments.
    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        include_tag_attachments: bool,
    ) -> StorageResult<Vec<Referrer>>;
    /// Every attachment of `subject`, however it arrived, oldest first.
    async fn list_attachments(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> StorageResult<Vec<AttachmentRecord>>;
    /// The manifests of the repository that `manifest` is an attachment of: subjects of
    /// the attachment rows it makes or carries (its `subject` field, a cosign tag, a
    /// referrers fallback index it is or holds), each of them a manifest present in the
    /// repository. Atomic signatures, which are not manifests, are left out.
    async fn attached_to(&self, repo: &RepoName, manifest: &Digest) -> StorageResult<Vec<Digest>>;
    /// Indexes in the repository that list `child` directly.
    async fn parents_of(&self, repo: &RepoName, child: &Digest) -> StorageResult<Vec<Digest>>;

    /// Atomic signatures of a manifest, in the order they were added.
    async fn list_atomic_signatures(
        &self,
        repo: &RepoName,
        manifest: &Digest,
    ) -> StorageResult<Vec<AtomicSignature>>;
    /// Stores a signature of a manifest present in the repository ([`StorageError::NotFound`]
    /// otherwise). The same id with other content is a [`StorageError::Conflict`].
    async fn put_atomic_signature(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        signature: &AtomicSignature,
    ) -> StorageResult<SignatureStored>;
    async fn delete_atomic_signature(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        id: &str,
    ) -> StorageResult<bool>;

    async fn create_upload(&self, session: &UploadSession) -> StorageResult<()>;
    async fn get_upload(&self, id: &str) -> StorageResult<Option<UploadSession>>;
    /// Appends a staged part if the session still has `expected_size` bytes; fails with
    /// [`StorageError::Conflict`] when another request moved it first.
    async fn append_upload_part(
        &self,
        id: &str,
        expected_size: u64,
        part: &StagedPart,
    ) -> StorageResult<UploadSession>;
    /// Records an append to a session that still has `expected_size` bytes: its new
    /// size and progress in one update, so the running hashes always cover exactly the
    /// bytes counted. [`StorageError::Conflict`] when another request moved it first.
    async fn advance_upload(
        &self,
        id: &str,
        expected_size: u64,
        size: u64,
        progress: &UploadProgress,
    ) -> StorageResult<UploadSession>;
    async fn delete_upload(&self, id: &str) -> StorageResult<bool>;
    /// Sessions not touched since `cutoff` (unix seconds).
    async fn uploads_idle_since(&self, cutoff: i64) -> StorageResult<Vec<UploadSession>>;

    // Garbage collection and the protocol that keeps it safe beside pushes (`crate::gc`).

    /// Links a blob the registry already holds into `repo` (a cross-repository mount),
    /// touching its row and link. `None` when no blob row exists;
    /// [`StorageError::BlobBeingDeleted`] while GC deletes it.
    async fn mount_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<Option<u64>>;
    /// Pins `digest` for an upload about to move verified bytes to their address: GC
    /// deletes no pinned blob. [`StorageError::BlobBeingDeleted`] while GC deletes it.
    async fn pin_blob(&self, digest: &Digest, token: &str) -> StorageResult<()>;
    async fn unpin_blob(&self, digest: &Digest, token: &str) -> StorageResult<()>;
    /// Takes (or renews) the collector's lease for `ttl_secs`. False when another holder
    /// has it.
    async fn gc_acquire(&self, holder: &str, ttl_secs: i64) -> StorageResult<bool>;
    async fn gc_release(&self, holder: &str) -> StorageResult<()>;
    /// Takes (or renews) the lease `name` for `ttl_secs` (other work than GC that one
    /// replica at a time does, e.g. a scheduled sync run). False when another holder
    /// has it.
    async fn lease_acquire(&self, name: &str, holder: &str, ttl_secs: i64) -> StorageResult<bool>;
    async fn lease_release(&self, name: &str, holder: &str) -> StorageResult<()>;

    // Sync jobs created through the admin API, shared by every replica (jobs of the
    // configuration file are not stored).

    /// Stores a job's configuration (JSON text) under `name`; false when the name is
    /// taken.
    async fn sync_job_create(&self, name: &str, config: &str) -> StorageResult<bool>;
    /// Removes a stored job; false when there was none.
    async fn sync_job_delete(&self, name: &str) -> StorageResult<bool>;
    /// Every stored job as (name, configuration JSON), by name.
    async fn sync_jobs(&self) -> StorageResult<Vec<(String, String)>>;

    // Refresh tokens used up or revoked (the token service, across replicas).

    /// Marks the token `jti` (valid until `expires_at`, unix seconds) as not to be used
    /// again; true when this call did it, false when it already was. Rows of tokens
    /// expired by now are dropped on the way.
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> StorageResult<bool>;
    /// Whether the token `jti` was revoked or used up.
    async fn token_revoked(&self, jti: &str) -> StorageResult<bool>;
    /// Marks and sweeps the metadata in one write transaction (rolled back for a dry
    /// run): unreachable manifests, unreferenced repository links, then unreferenced
    /// blob rows, each replaced by a tombstone (see [`MetadataStore::blob_deletions`]).
    async fn gc_sweep(&self, plan: &GcPlan) -> StorageResult<GcSweep>;
    /// Tombstones: blobs whose rows GC deleted and whose bytes may still exist.
    async fn blob_deletions(&self) -> StorageResult<Vec<Digest>>;
    /// Removes a tombstone once the bytes are gone.
    async fn clear_blob_deletion(&self, digest: &Digest) -> StorageResult<()>;

    // Copying one store into another (`crate::migrate`, `signet migrate`).

    /// `blobs` rows in digest order, strictly after `after`, at most `limit`.
    async fn export_blob_rows(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StorageResult<Vec<BlobRow>>;
    /// Every row of one repository; `None` when it does not exist.
    async fn export_repository(&self, name: &str) -> StorageResult<Option<RepositoryExport>>;
    /// Inserts the rows that are absent (by digest), leaving present ones alone; the
    /// number inserted. The bytes must already be in this store's blob store.
    async fn import_blob_rows(&self, rows: &[BlobRow]) -> StorageResult<u64>;
    /// Inserts, in one transaction, the rows of an export that are absent (by each
    /// table's key), leaving present ones alone; the number inserted. The `blobs` rows
    /// its links name must exist.
    async fn import_repository(&self, export: &RepositoryExport) -> StorageResult<u64>;

    // Verification verdicts, kept per attachment (a verdict row goes with the last
    // attachment row naming it, in the same transaction).

    /// The stored verdict on `attachment` as an attachment of `subject`, whatever
    /// configuration reached it.
    async fn get_verdict(
        &self,
        repo: &RepoName,
        subject: &Digest,
        attachment: &Digest,
    ) -> StorageResult<Option<StoredVerdict>>;
    /// Stores (or replaces) a verdict; false, storing nothing, when no attachment row
    /// names (`subject`, `attachment`) in `repo` any more.
    async fn put_verdict(&self, repo: &RepoName, verdict: &StoredVerdict) -> StorageResult<bool>;
    /// Signatures and attestations with no verdict reached under `fingerprint`, at most
    /// `limit`, by repository, subject and attachment.
    async fn unverified_attachments(
        &self,
        fingerprint: &str,
        limit: u32,
    ) -> StorageResult<Vec<UnverifiedAttachment>>;
    /// Verdict rows no attachment row names (none, unless something wrote around the
    /// rule above): (repository, subject, attachment).
    async fn orphan_verdicts(&self) -> StorageResult<Vec<(String, Digest, Digest)>>;
    /// Deletes the rows [`MetadataStore::orphan_verdicts`] lists; how many.
    async fn delete_orphan_verdicts(&self) -> StorageResult<u64>;

    // Checking and repairing the store (`crate::fsck`, `signet fsck`).

    /// Rebuilds, in one transaction, the rows derived from a stored manifest: drops its
    /// edges and the attachment rows it carries (atomic signatures aside) and writes
    /// them again, edges from `put.blobs`/`put.children`, attachment rows by the rules
    /// of a PUT, for each tag pointing at it as if it had just moved there (`put.tags`
    /// and `put.condition` are ignored). False when the manifest is absent. The
    /// manifest row itself is left as it is.
    async fn rebuild_manifest_rows(&self, put: &ManifestPut) -> StorageResult<bool>;
}

/// What [`MetadataStore::gc_sweep`] is asked to do.
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
}

/// What [`MetadataStore::gc_sweep`] removed (or would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSweep {
    /// (repository, manifest)
    pub manifests: Vec<(String, Digest)>,
    /// (repository, blob): links no manifest of the repository references.
    pub links: Vec<(String, Digest)>,
    /// (blob, size): rows now replaced by tombstones.
    pub blobs: Vec<(Digest, u64)>,
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

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
