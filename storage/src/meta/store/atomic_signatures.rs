//! Atomic ("simple signing") signatures stored through the signatures extension.

use async_trait::async_trait;

use crate::meta::{AtomicSignature, SignatureStored};
use crate::{Digest, RepoName, StorageResult};

/// Atomic ("simple signing") signatures stored through the signatures extension.
#[async_trait]
pub trait AtomicSignatures: Send + Sync {
    /// Atomic signatures of a manifest, in the order they were added.
    async fn list_atomic_signatures(
        &self,
        repo: &RepoName,
        manifest: &Digest,
    ) -> StorageResult<Vec<AtomicSignature>>;

    /// Stores a signature of a manifest present in the repository ([`crate::StorageError::NotFound`]
    /// otherwise). The same id with other content is a [`crate::StorageError::Conflict`].
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
}
