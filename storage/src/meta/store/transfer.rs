//! Copying one store into another (`crate::migrate`) and rebuilding derived rows (`crate::fsck`).

use async_trait::async_trait;

use crate::meta::{BlobRow, ExportRows, ManifestPut, RepositoryExport};
use crate::StorageResult;

/// Copying one store into another (`crate::migrate`) and rebuilding derived rows (`crate::fsck`).
#[async_trait]
pub trait Transfer: Send + Sync {
    /// `blobs` rows in digest order, strictly after `after`, at most `limit`.
    async fn export_blob_rows(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StorageResult<Vec<BlobRow>>;

    /// The rows of one repository that `rows` selects, of every table or of the tables
    /// named in `only`; `None` when it does not exist. One read transaction.
    async fn export_repository(
        &self,
        name: &str,
        only: Option<&[&str]>,
        rows: ExportRows<'_>,
    ) -> StorageResult<Option<RepositoryExport>>;

    /// Inserts the rows that are absent (by digest), leaving present ones alone; the
    /// number inserted. The bytes must already be in this store's blob store.
    async fn import_blob_rows(&self, rows: &[BlobRow]) -> StorageResult<u64>;

    /// Inserts, in one transaction, the rows of an export that are absent (by each
    /// table's key), leaving present ones alone; the number inserted. The `blobs` rows
    /// its links name must exist.
    async fn import_repository(&self, export: &RepositoryExport) -> StorageResult<u64>;

    /// Rebuilds, in one transaction, the rows derived from a stored manifest: drops its
    /// edges and the attachment rows it carries (atomic signatures aside) and writes
    /// them again, edges from `put.blobs`/`put.children`, attachment rows by the rules
    /// of a PUT, for each tag pointing at it as if it had just moved there (`put.tags`
    /// and `put.condition` are ignored). False when the manifest is absent. The
    /// manifest row itself is left as it is.
    async fn rebuild_manifest_rows(&self, put: &ManifestPut) -> StorageResult<bool>;
}
