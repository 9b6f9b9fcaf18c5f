//! Blob rows and the links that let a repository serve them, and the pins that keep an upload's blob from GC.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::{Digest, RepoName, StorageResult};

/// Blob rows and the links that let a repository serve them, and the pins that keep an upload's blob from GC.
#[async_trait]
pub trait BlobLinks: Send + Sync {
    /// Size of `digest` if the repository may serve it.
    async fn blob_in_repository(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>>;

    /// Size of `digest` if any repository holds it.
    async fn blob_size(&self, digest: &Digest) -> StorageResult<Option<u64>>;

    /// The sizes of those of `digests` that have a blob row (a few queries for a whole
    /// manifest's references, instead of one per reference).
    async fn blob_sizes(&self, digests: &[Digest]) -> StorageResult<HashMap<Digest, u64>>;

    /// Records the blob and lets the repository serve it (creating the repository).
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> StorageResult<()>;

    /// Stops the repository serving the blob. False when it did not.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool>;

    /// Links a blob the registry already holds into `repo` (a cross-repository mount),
    /// touching its row and link. `None` when no blob row exists;
    /// [`crate::StorageError::BlobBeingDeleted`] while GC deletes it.
    async fn mount_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<Option<u64>>;

    /// Pins `digest` for an upload about to move verified bytes to their address: GC
    /// deletes no pinned blob. [`crate::StorageError::BlobBeingDeleted`] while GC deletes it.
    async fn pin_blob(&self, digest: &Digest, token: &str) -> StorageResult<()>;

    async fn unpin_blob(&self, digest: &Digest, token: &str) -> StorageResult<()>;

    /// [`BlobLinks::link_blob`] and [`BlobLinks::unpin_blob`] in one transaction: how an
    /// upload ends, one commit instead of two.
    async fn link_pinned_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        token: &str,
    ) -> StorageResult<()>;
}
