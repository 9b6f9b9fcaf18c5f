//! [`Collection`] in SQL.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::digest::Digest;
use crate::error::StorageResult;
use crate::meta::*;

use super::common::*;
use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> Collection for SqlMetadata<E> {
    async fn gc_acquire(&self, holder: &str, ttl_secs: i64) -> StorageResult<bool> {
        // One statement: the upsert takes the row, or renews it for its holder, or changes
        // nothing while another holder's lease runs.
        let at = now();
        let q = query(
            "INSERT INTO gc_lease (id, holder, expires_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
              WHERE gc_lease.holder = excluded.holder OR gc_lease.expires_at < $3",
        )
        .bind(holder)
        .bind(at + ttl_secs)
        .bind(at);
        Ok(self.engine.writer().execute(q).await? > 0)
    }

    async fn lease_acquire(&self, name: &str, holder: &str, ttl_secs: i64) -> StorageResult<bool> {
        let at = now();
        let q = query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
              WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(at + ttl_secs)
        .bind(at);
        Ok(self.engine.writer().execute(q).await? > 0)
    }

    async fn lease_release(&self, name: &str, holder: &str) -> StorageResult<()> {
        let q = query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder);
        self.engine.writer().execute(q).await?;
        Ok(())
    }

    async fn gc_release(&self, holder: &str) -> StorageResult<()> {
        let q = query("DELETE FROM gc_lease WHERE holder = $1").bind(holder);
        self.engine.writer().execute(q).await?;
        Ok(())
    }

    async fn gc_sweep(&self, plan: &GcPlan) -> StorageResult<GcSweep> {
        // One write transaction that no push interleaves with: while it runs no push can
        // make anything it decides on reachable, and everything pushed after it sees its
        // effects (a blob link is checked by the manifest PUT's own transaction,
        // tombstones by every link).
        let mut tx = self.engine.begin(Access::Sweep).await?;
        let mut sweep = GcSweep::default();
        let rows = tx
            .fetch(query("SELECT id, name FROM repositories ORDER BY name"))
            .await?;
        let repos = rows
            .iter()
            .map(|r| Ok((r.i64("id")?, r.text("name")?)))
            .collect::<StorageResult<Vec<_>>>()?;
        let names: HashMap<i64, String> = repos.iter().cloned().collect();

        if plan.delete_untagged {
            for (repo_id, name) in &repos {
                let q = query(UNREACHABLE_MANIFESTS)
                    .bind(*repo_id)
                    .bind(plan.cutoff)
                    .bind(plan.attachments_follow_subject);
                for row in tx.fetch(q).await? {
                    let digest = row.text("digest")?;
                    // Edges, attachment rows, atomic signatures and tags go with it.
                    tx.execute(
                        query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
                            .bind(*repo_id)
                            .bind(digest.as_str()),
                    )
                    .await?;
                    sweep.manifests.push((name.clone(), parse_digest(&digest)?));
                }
            }
        }

        // Links no manifest of their repository references: pushed or mounted, never used
        // (or used by manifests since deleted). Walked in key order from where the last
        // round stopped (`GcResume`).
        // No limit is the largest one (SQLite's -1 is no PostgreSQL's).
        let limit = plan.limit.map_or(i64::MAX, i64::from);
        let full = |n: usize| plan.limit.is_some_and(|limit| n >= limit as usize);
        let mut resume = plan.resume.clone();
        if !resume.links_done {
            let (after_repo, after_digest) = resume
                .links_after
                .clone()
                .unwrap_or((i64::MIN, String::new()));
            let q = query(
                "SELECT rb.repository_id, rb.digest FROM repository_blobs rb
                  WHERE (rb.repository_id, rb.digest) > ($3, $4)
                    AND rb.created_at < $1
                    AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb
                                     WHERE mb.repository_id = rb.repository_id
                                       AND mb.blob_digest = rb.digest)
                  ORDER BY rb.repository_id, rb.digest
                  LIMIT $2",
            )
            .bind(plan.cutoff)
            .bind(limit)
            .bind(after_repo)
            .bind(after_digest);
            let mut removed = Vec::new();
            for row in tx.fetch(q).await? {
                removed.push((row.i64("repository_id")?, row.text("digest")?));
            }
            // Deleted by key, a repository and a batch of digests per statement: SQLite
            // reads `(repository_id, digest) IN (…)` as every link of the repository,
            // once per round. This transaction shuts pushes out, so what was selected
            // is what goes.
            for of_repo in removed.chunk_by(|a, b| a.0 == b.0) {
                for batch in of_repo.chunks(DIGESTS_PER_STATEMENT) {
                    let q = query(format!(
                        "DELETE FROM repository_blobs WHERE repository_id = $1 AND digest IN ({})",
                        placeholders(2, batch.len())
                    ));
                    let q = batch
                        .iter()
                        .fold(q.bind(batch[0].0), |q, (_, digest)| q.bind(digest.as_str()));
                    tx.execute(q).await?;
                }
            }
            resume.links_done = !full(removed.len());
            resume.links_after = removed.iter().max().cloned().or(resume.links_after);
            for (repo_id, digest) in removed {
                let name = names.get(&repo_id).cloned().unwrap_or_default();
                sweep.links.push((name, parse_digest(&digest)?));
            }
            sweep.links.sort();
        }

        tx.execute(
            query("DELETE FROM blob_pins WHERE created_at < $1").bind(plan.stale_pin_cutoff),
        )
        .await?;
        // Blob rows nothing references, old enough, and not being placed by an upload:
        // each becomes a tombstone in the same transaction. Only once every garbage link
        // is gone, whose blobs may then go too; in digest order from where the last round
        // stopped.
        if resume.links_done {
            let q = query(
                "DELETE FROM blobs
                  WHERE digest IN (
                        SELECT b.digest FROM blobs b
                         WHERE b.digest > $3
                           AND b.created_at < $1
                           AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                           AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = b.digest)
                           AND NOT EXISTS (SELECT 1 FROM blob_pins p WHERE p.digest = b.digest)
                         ORDER BY b.digest
                         LIMIT $2)
                 RETURNING digest, size",
            )
            .bind(plan.cutoff)
            .bind(limit)
            .bind(resume.blobs_after.clone().unwrap_or_default());
            let mut last: Option<String> = None;
            for row in tx.fetch(q).await? {
                let digest = row.text("digest")?;
                sweep
                    .blobs
                    .push((parse_digest(&digest)?, row.i64("size")? as u64));
                last = last.max(Some(digest));
            }
            sweep.blobs.sort();
            resume.blobs_after = last.or(resume.blobs_after);
        }
        sweep.more = !resume.links_done || full(sweep.blobs.len());
        sweep.resume = resume;
        let at = now();
        for chunk in sweep.blobs.chunks(DIGESTS_PER_STATEMENT) {
            // ($1, $n+1), ($2, $n+1), …: a statement per chunk, not per blob.
            let time = format!("${}", chunk.len() + 1);
            let rows: Vec<String> = (1..=chunk.len())
                .map(|i| format!("(${i}, {time})"))
                .collect();
            let mut q = query(format!(
                "INSERT INTO blob_deletions (digest, created_at) VALUES {} ON CONFLICT DO NOTHING",
                rows.join(", ")
            ));
            for (digest, _) in chunk {
                q = q.bind(digest);
            }
            tx.execute(q.bind(at)).await?;
        }

        if plan.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(sweep)
    }

    async fn blob_deletions(&self) -> StorageResult<Vec<Digest>> {
        let q = query("SELECT digest FROM blob_deletions ORDER BY digest");
        let rows = self.engine.writer().fetch(q).await?;
        rows.iter().map(|r| r.digest("digest")).collect()
    }

    async fn clear_blob_deletions(&self, digests: &[Digest]) -> StorageResult<()> {
        for chunk in digests.chunks(DIGESTS_PER_STATEMENT) {
            let q = digests_in("DELETE FROM blob_deletions WHERE digest IN", chunk);
            self.engine.writer().execute(q).await?;
        }
        Ok(())
    }
}
