//! [`Repositories`] in SQL.

use async_trait::async_trait;

use crate::error::StorageResult;
use crate::meta::*;
use crate::names::RepoName;

use super::common::*;
use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> Repositories for SqlMetadata<E> {
    async fn ping(&self) -> StorageResult<()> {
        self.engine
            .readers()
            .fetch(query("SELECT 1 AS one"))
            .await?;
        Ok(())
    }

    fn change_token(&self) -> Option<crate::meta::ChangeToken> {
        self.engine.change_token()
    }

    async fn fresh_change_token(&self) -> Option<crate::meta::ChangeToken> {
        self.engine.fresh_change_token().await
    }

    async fn list_repositories(&self, page: Page<'_>) -> StorageResult<Vec<String>> {
        let q = query("SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2")
            .bind(page.last.unwrap_or(""))
            .bind(page_limit(&page));
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter().map(|r| r.text("name")).collect()
    }

    async fn repository_exists(&self, repo: &RepoName) -> StorageResult<bool> {
        Ok(repo_id(&self.engine, repo).await?.is_some())
    }

    async fn usage_under(&self, prefix: &RepoName) -> StorageResult<Usage> {
        // `_` is the only LIKE wildcard a repository name can hold.
        let pattern = format!("{}/%", prefix.as_str().replace('_', "\\_"));
        let repositories = self
            .engine
            .readers()
            .first(
                query("SELECT COUNT(*) AS n FROM repositories WHERE name LIKE $1 ESCAPE '\\'")
                    .bind(pattern.clone()),
            )
            .await?
            .map(|r| r.i64("n"))
            .transpose()?
            .unwrap_or(0);
        let bytes = self
            .engine
            .readers()
            .first(
                query(
                    "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS n FROM blobs b WHERE b.digest IN (
                        SELECT rb.digest FROM repository_blobs rb
                          JOIN repositories r ON r.id = rb.repository_id
                         WHERE r.name LIKE $1 ESCAPE '\\')",
                )
                .bind(pattern),
            )
            .await?
            .map(|r| r.i64("n"))
            .transpose()?
            .unwrap_or(0);
        Ok(Usage {
            repositories: repositories as u64,
            bytes: bytes as u64,
        })
    }
}
