//! Signet's persistence layer: everything that outlives a request lives here, and
//! nothing in here knows about HTTP.
//!
//! ```text
//! Blob store (object_store: local filesystem | S3 | memory)
//!   blobs/<alg>/<first 2 hex>/<hex>     content-addressed bytes, written once, never
//!                                       visible before their digest was verified
//!   uploads/<session id>/data           a chunked upload's bytes: one local file every
//!                                       request appends to, or the key of the session's
//!                                       S3 multipart upload (renamed to its address)
//!   uploads/<session id>/tail-<n>-<rand>
//!                                       S3: the bytes after the last full part (< 5 MiB)
//!   uploads/<session id>/<part>-<rand>  a monolithic body; on stores with neither append
//!                                       nor multipart, one object per request body
//!   uploads/<session id>/assembled-<rand>
//!                                       such parts concatenated and hashed before the
//!                                       rename to their content address
//!
//! Metadata store (sqlx: SQLite embedded | PostgreSQL)
//!   repositories      name → id
//!   blobs             digest → size (the blob store holds the bytes)
//!   repository_blobs  which blobs a repository may serve (pushed, mounted, referenced)
//!   manifests         exact bytes, media type, size, artifactType, subject, annotations
//!   tags              (repository, tag) → manifest digest
//!   manifest_blobs    edges manifest → config and layers
//!   manifest_children edges index → child manifests
//!   (manifests.subject is the subject → referrer edge, indexed)
//!   uploads           upload sessions: repository, committed offset, staged parts,
//!                     progress (staging, multipart id and ETags, running hash states)
//!   blob_deletions    GC tombstones: blob rows deleted, bytes being deleted; no link
//!   blob_pins         uploads moving verified bytes to their address; GC skips them
//!   gc_lease          the one running collector
//!   leases            named leases (`sync:<job>`: one replica runs a sync job)
//!   events            the notifications outbox, numbered in commit order
//!                     (event_counter), with each endpoint's cursor and dead letters
//! ```
//!
//! Invariants: a blob is visible under its address only after its bytes hashed to it;
//! manifests are stored byte for byte; a manifest, its edges and its tag move are
//! written in one transaction.
#![forbid(unsafe_code)]

// The OCI vocabulary, where every crate reads it; kept at its old paths here.
pub use signet_oci::{attachments, digest, names};

pub mod blobs;
pub mod coverage;
pub mod error;
pub mod events;
pub mod fsck;
pub mod gc;
pub mod manifest;
pub mod meta;
pub mod migrate;
pub mod range;
pub mod registry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod uploads;

pub use blobs::{BlobBody, BlobStore, S3Config};
pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::{StorageError, StorageResult};
pub use meta::{open_metadata, MetadataStore};
pub use names::{Reference, RepoName, Tag};
pub use registry::{Registry, WriteHooks};
