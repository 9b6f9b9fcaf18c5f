//! Garbage collection and the leases that let one process at a time do a piece of work (`crate::gc`, scheduled sync runs).

use async_trait::async_trait;

use crate::meta::{GcPlan, GcSweep};
use crate::{Digest, StorageResult};

/// Garbage collection and the leases that let one process at a time do a piece of work (`crate::gc`, scheduled sync runs).
#[async_trait]
pub trait Collection: Send + Sync {
    /// Takes (or renews) the collector's lease for `ttl_secs`. False when another holder
    /// has it.
    async fn gc_acquire(&self, holder: &str, ttl_secs: i64) -> StorageResult<bool>;

    async fn gc_release(&self, holder: &str) -> StorageResult<()>;

    /// Takes (or renews) the lease `name` for `ttl_secs` (other work than GC that one
    /// replica at a time does, e.g. a scheduled sync run). False when another holder
    /// has it.
    async fn lease_acquire(&self, name: &str, holder: &str, ttl_secs: i64) -> StorageResult<bool>;

    async fn lease_release(&self, name: &str, holder: &str) -> StorageResult<()>;

    /// Marks and sweeps the metadata in one write transaction (rolled back for a dry
    /// run): unreachable manifests, unreferenced repository links, then unreferenced
    /// blob rows, each replaced by a tombstone (see [`Collection::blob_deletions`]).
    async fn gc_sweep(&self, plan: &GcPlan) -> StorageResult<GcSweep>;

    /// Tombstones: blobs whose rows GC deleted and whose bytes may still exist.
    async fn blob_deletions(&self) -> StorageResult<Vec<Digest>>;

    /// Removes tombstones once their bytes are gone.
    async fn clear_blob_deletions(&self, digests: &[Digest]) -> StorageResult<()>;
}
