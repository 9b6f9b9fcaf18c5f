//! [`BlobLinks`] in SQL.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::digest::Digest;
use crate::error::StorageResult;
use crate::meta::*;
use crate::names::RepoName;

use super::common::*;
use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> BlobLinks for SqlMetadata<E> {
    async fn blob_in_repository(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>> {
        let q = query(
            "SELECT b.size FROM repository_blobs rb
               JOIN repositories r ON r.id = rb.repository_id
               JOIN blobs b ON b.digest = rb.digest
              WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest);
        let row = self.engine.readers().first(q).await?;
        Ok(row.map(|r| r.i64("size")).transpose()?.map(|s| s as u64))
    }

    async fn blob_size(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        let q = query("SELECT size FROM blobs WHERE digest = $1").bind(digest);
        let row = self.engine.readers().first(q).await?;
        Ok(row.map(|r| r.i64("size")).transpose()?.map(|s| s as u64))
    }

    async fn blob_sizes(&self, digests: &[Digest]) -> StorageResult<HashMap<Digest, u64>> {
        let mut sizes = HashMap::new();
        for chunk in digests.chunks(DIGESTS_PER_STATEMENT) {
            let q = digests_in("SELECT digest, size FROM blobs WHERE digest IN", chunk);
            for row in self.engine.readers().fetch(q).await? {
                sizes.insert(row.digest("digest")?, row.i64("size")? as u64);
            }
        }
        Ok(sizes)
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> StorageResult<()> {
        let mut tx = self.engine.begin(Access::Push).await?;
        link_in(&mut tx, repo, digest, size).await?;
        tx.commit().await
    }

    async fn link_pinned_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        token: &str,
    ) -> StorageResult<()> {
        let mut tx = self.engine.begin(Access::Push).await?;
        link_in(&mut tx, repo, digest, size).await?;
        tx.execute(unpin(digest, token)).await?;
        tx.commit().await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        let q = query(
            "DELETE FROM repository_blobs WHERE digest = $1
               AND repository_id = (SELECT id FROM repositories WHERE name = $2)",
        )
        .bind(digest)
        .bind(repo.as_str());
        Ok(self.engine.writer().execute(q).await? > 0)
    }

    async fn mount_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<Option<u64>> {
        let mut tx = self.engine.begin(Access::Push).await?;
        refuse_tombstoned(&mut tx, digest).await?;
        let q = query("SELECT size FROM blobs WHERE digest = $1").bind(digest);
        let Some(row) = tx.first(q).await? else {
            return Ok(None);
        };
        let size = row.i64("size")?;
        let repo_id = ensure_repo(&mut tx, repo).await?;
        let at = now();
        tx.execute(
            query("UPDATE blobs SET created_at = $1 WHERE digest = $2")
                .bind(at)
                .bind(digest),
        )
        .await?;
        touch_link(&mut tx, repo_id, digest, at).await?;
        tx.commit().await?;
        Ok(Some(size as u64))
    }

    async fn pin_blob(&self, digest: &Digest, token: &str) -> StorageResult<()> {
        let mut tx = self.engine.begin(Access::Push).await?;
        refuse_tombstoned(&mut tx, digest).await?;
        tx.execute(
            query("INSERT INTO blob_pins (digest, token, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(digest)
                .bind(token)
                .bind(now()),
        )
        .await?;
        tx.commit().await
    }

    async fn unpin_blob(&self, digest: &Digest, token: &str) -> StorageResult<()> {
        self.engine.writer().execute(unpin(digest, token)).await?;
        Ok(())
    }
}

/// Records the blob and links it into `repo`, in the caller's transaction.
async fn link_in(
    tx: &mut impl Conn,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
) -> StorageResult<()> {
    let repo_id = ensure_repo(tx, repo).await?;
    // GC removed the row and is deleting the bytes: refuse (the caller's `tx`, dropped,
    // rolls back).
    refuse_tombstoned(tx, digest).await?;
    let at = now();
    tx.execute(
        query(
            "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(digest)
        .bind(size as i64)
        .bind(at),
    )
    .await?;
    touch_link(tx, repo_id, digest, at).await
}

fn unpin(digest: &Digest, token: &str) -> Query {
    query("DELETE FROM blob_pins WHERE digest = $1 AND token = $2")
        .bind(digest)
        .bind(token)
}
