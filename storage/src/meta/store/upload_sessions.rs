//! Upload sessions, kept in the store so any process can continue any session.

use async_trait::async_trait;

use crate::blobs::{StagedPart, UploadProgress};
use crate::meta::UploadSession;
use crate::StorageResult;

/// Upload sessions, kept in the store so any process can continue any session.
#[async_trait]
pub trait UploadSessions: Send + Sync {
    async fn create_upload(&self, session: &UploadSession) -> StorageResult<()>;

    async fn get_upload(&self, id: &str) -> StorageResult<Option<UploadSession>>;

    /// Appends a staged part if the session still has `expected_size` bytes; fails with
    /// [`crate::StorageError::Conflict`] when another request moved it first.
    async fn append_upload_part(
        &self,
        id: &str,
        expected_size: u64,
        part: &StagedPart,
    ) -> StorageResult<UploadSession>;

    /// Records an append to a session that still has `expected_size` bytes: its new
    /// size and progress in one update, so the running hashes always cover exactly the
    /// bytes counted. [`crate::StorageError::Conflict`] when another request moved it first.
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
}
