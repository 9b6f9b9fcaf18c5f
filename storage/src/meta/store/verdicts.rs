//! Verification verdicts, kept per attachment (a verdict row goes with the last attachment row naming it, in the same transaction).

use async_trait::async_trait;

use crate::meta::{StoredVerdict, UnverifiedAttachment};
use crate::{Digest, RepoName, StorageResult};

/// Verification verdicts, kept per attachment (a verdict row goes with the last attachment row naming it, in the same transaction).
#[async_trait]
pub trait Verdicts: Send + Sync {
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

    /// Deletes the rows [`Verdicts::orphan_verdicts`] lists; how many.
    async fn delete_orphan_verdicts(&self) -> StorageResult<u64>;
}
