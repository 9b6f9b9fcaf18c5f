//! Refresh tokens used up or revoked (the token service, across replicas).

use async_trait::async_trait;

use crate::StorageResult;

/// Refresh tokens used up or revoked (the token service, across replicas).
#[async_trait]
pub trait RevokedTokens: Send + Sync {
    /// Marks the token `jti` (valid until `expires_at`, unix seconds) as not to be used
    /// again; true when this call did it, false when it already was. Rows of tokens
    /// expired by now are dropped on the way.
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> StorageResult<bool>;

    /// Whether the token `jti` was revoked or used up.
    async fn token_revoked(&self, jti: &str) -> StorageResult<bool>;
}
