//! The repositories: which exist, what they hold, and the store's liveness and change token.

use async_trait::async_trait;

use crate::meta::{ChangeToken, Page, Usage};
use crate::{RepoName, StorageResult};

/// The repositories: which exist, what they hold, and the store's liveness and change token.
#[async_trait]
pub trait Repositories: Send + Sync {
    /// Cheap round trip to the database, for readiness checks.
    async fn ping(&self) -> StorageResult<()>;

    /// A token that changes whenever the store commits (see [`ChangeToken`]); `None`
    /// where the engine has no such signal: then nothing may be cached.
    fn change_token(&self) -> Option<ChangeToken>;

    /// A change token that also vouches for every commit made, by any process, before
    /// it was asked: a replica serving a cached answer under it never serves one older
    /// than a write another replica has acknowledged. Where the plain token may lag
    /// (PostgreSQL), this waits for one read of the database's change counters.
    async fn fresh_change_token(&self) -> Option<ChangeToken>;

    async fn list_repositories(&self, page: Page<'_>) -> StorageResult<Vec<String>>;

    async fn repository_exists(&self, repo: &RepoName) -> StorageResult<bool>;

    /// What the repositories below `prefix` (`prefix/...`) hold: how many there are, and
    /// the bytes of the distinct blobs linked into them (pull-through quotas).
    async fn usage_under(&self, prefix: &RepoName) -> StorageResult<Usage>;
}
