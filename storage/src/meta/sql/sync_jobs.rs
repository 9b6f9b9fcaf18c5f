//! [`SyncJobs`] in SQL.

use async_trait::async_trait;

use crate::error::StorageResult;
use crate::meta::*;

use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> SyncJobs for SqlMetadata<E> {
    async fn sync_job_create(&self, name: &str, config: &str) -> StorageResult<bool> {
        let q = query(
            "INSERT INTO sync_jobs (name, config, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(config)
        .bind(now());
        Ok(self.engine.writer().execute(q).await? > 0)
    }

    async fn sync_job_delete(&self, name: &str) -> StorageResult<bool> {
        let q = query("DELETE FROM sync_jobs WHERE name = $1").bind(name);
        Ok(self.engine.writer().execute(q).await? > 0)
    }

    async fn sync_jobs(&self) -> StorageResult<Vec<(String, String)>> {
        let q = query("SELECT name, config FROM sync_jobs ORDER BY name");
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter()
            .map(|r| Ok((r.text("name")?, r.text("config")?)))
            .collect()
    }
}
