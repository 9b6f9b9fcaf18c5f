//! Atomic ("simple signing") signatures stored through the signatures extension.

use async_trait::async_trait;

use crate::events::Journal;

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
    ) -> StorageResult<SignatureStored> {
        self.put_atomic_signature_journaled(repo, manifest, signature, Journal::OFF)
            .await
    }

    /// [`AtomicSignatures::put_atomic_signature`], appending a `signature.stored` event in
    /// its transaction when `journal` records events and the signature is new.
    async fn put_atomic_signature_journaled(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        signature: &AtomicSignature,
        journal: Journal<'_>,
    ) -> StorageResult<SignatureStored>;

    async fn delete_atomic_signature(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        id: &str,
    ) -> StorageResult<bool>;
}
