//! [`UploadSessions`] in SQL.

use async_trait::async_trait;

use crate::blobs::{StagedPart, UploadProgress};
use crate::error::{StorageError, StorageResult};
use crate::meta::*;

use super::common::*;
use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> UploadSessions for SqlMetadata<E> {
    async fn create_upload(&self, s: &UploadSession) -> StorageResult<()> {
        let q = query(
            "INSERT INTO uploads (id, repository, committed_size, parts, progress, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.id.as_str())
        .bind(s.repo.as_str())
        .bind(s.size as i64)
        .bind(to_json(&s.parts)?)
        .bind(s.progress.as_ref().map(to_json).transpose()?)
        .bind(s.created_at)
        .bind(s.updated_at);
        self.engine.writer().execute(q).await?;
        Ok(())
    }

    async fn get_upload(&self, id: &str) -> StorageResult<Option<UploadSession>> {
        let q = query("SELECT * FROM uploads WHERE id = $1").bind(id);
        let row = self.engine.readers().first(q).await?;
        row.as_ref().map(upload_from_row).transpose()
    }

    async fn append_upload_part(
        &self,
        id: &str,
        expected_size: u64,
        part: &StagedPart,
    ) -> StorageResult<UploadSession> {
        let mut tx = self.engine.begin(Access::Write).await?;
        let q = query(format!(
            "SELECT * FROM uploads WHERE id = $1{}",
            E::LOCK_ROWS
        ))
        .bind(id);
        let row = tx.first(q).await?.ok_or(StorageError::NotFound)?;
        let mut session = upload_from_row(&row)?;
        if session.size != expected_size {
            return Err(StorageError::Conflict(format!(
                "upload {id} is at {} bytes, not {expected_size}",
                session.size
            )));
        }
        session.parts.push(part.clone());
        session.size += part.size;
        session.updated_at = now();
        tx.execute(
            query(
                "UPDATE uploads SET committed_size = $1, parts = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(session.size as i64)
            .bind(to_json(&session.parts)?)
            .bind(session.updated_at)
            .bind(id),
        )
        .await?;
        tx.commit().await?;
        Ok(session)
    }

    async fn advance_upload(
        &self,
        id: &str,
        expected_size: u64,
        size: u64,
        progress: &UploadProgress,
    ) -> StorageResult<UploadSession> {
        let at = now();
        let q = query(
            "UPDATE uploads SET committed_size = $1, progress = $2, updated_at = $3
             WHERE id = $4 AND committed_size = $5 RETURNING *",
        )
        .bind(size as i64)
        .bind(to_json(progress)?)
        .bind(at)
        .bind(id)
        .bind(expected_size as i64);
        if let Some(row) = self.engine.writer().first(q).await? {
            return upload_from_row(&row);
        }
        Err(match self.get_upload(id).await? {
            None => StorageError::NotFound,
            Some(s) => StorageError::Conflict(format!(
                "upload {id} is at {} bytes, not {expected_size}",
                s.size
            )),
        })
    }

    async fn delete_upload(&self, id: &str) -> StorageResult<bool> {
        let q = query("DELETE FROM uploads WHERE id = $1").bind(id);
        Ok(self.engine.writer().execute(q).await? > 0)
    }

    async fn uploads_idle_since(&self, cutoff: i64) -> StorageResult<Vec<UploadSession>> {
        let q =
            query("SELECT * FROM uploads WHERE updated_at < $1 ORDER BY updated_at").bind(cutoff);
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter().map(upload_from_row).collect()
    }
}
