//! [`RevokedTokens`] in SQL.

use async_trait::async_trait;

use crate::error::StorageResult;
use crate::meta::*;

use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> RevokedTokens for SqlMetadata<E> {
    async fn revoke_token(&self, jti: &str, expires_at: i64) -> StorageResult<bool> {
        let mut tx = self.engine.begin(Access::Write).await?;
        tx.execute(query("DELETE FROM revoked_tokens WHERE expires_at < $1").bind(now()))
            .await?;
        let inserted = tx
            .execute(
                query(
                    "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2)
                     ON CONFLICT (jti) DO NOTHING",
                )
                .bind(jti)
                .bind(expires_at),
            )
            .await?;
        tx.commit().await?;
        Ok(inserted > 0)
    }

    async fn token_revoked(&self, jti: &str) -> StorageResult<bool> {
        let q = query("SELECT jti FROM revoked_tokens WHERE jti = $1").bind(jti);
        Ok(self.engine.readers().first(q).await?.is_some())
    }
}
