//! Sync jobs created through the admin API, shared by every replica (jobs of the configuration file are not stored).

use async_trait::async_trait;

use crate::StorageResult;

/// Sync jobs created through the admin API, shared by every replica (jobs of the configuration file are not stored).
#[async_trait]
pub trait SyncJobs: Send + Sync {
    /// Stores a job's configuration (JSON text) under `name`; false when the name is
    /// taken.
    async fn sync_job_create(&self, name: &str, config: &str) -> StorageResult<bool>;

    /// Removes a stored job; false when there was none.
    async fn sync_job_delete(&self, name: &str) -> StorageResult<bool>;

    /// Every stored job as (name, configuration JSON), by name.
    async fn sync_jobs(&self) -> StorageResult<Vec<(String, String)>>;
}
