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
        // (or used by manifests since deleted). A round examines a window of `limit`
        // links in key order, from where the last round stopped (`GcResume`), so its
        // cost follows the window, not the store: the window's bounds are an index
        // range, and each row in it is checked by index probes. (Written as `NOT EXISTS`,
        // PostgreSQL plans the check as an anti-join that reads both tables whole, and
        // sorts, in every round.)
        let mut resume = plan.resume.clone();
        if !resume.links_done {
            let after = resume
                .links_after
                .clone()
                .unwrap_or((i64::MIN, String::new()));
            let end = match plan.limit {
                Some(limit) => tx
                    .first(links_window_end(&after, limit))
                    .await?
                    .map(|row| -> StorageResult<_> {
                        Ok((row.i64("repository_id")?, row.text("digest")?))
                    })
                    .transpose()?,
                None => None,
            };
            let q = garbage_links(plan.cutoff, &after, end.as_ref());
            let mut removed = Vec::new();
            for row in tx.fetch(q).await? {
                removed.push((row.i64("repository_id")?, row.text("digest")?));
            }
            removed.sort();
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
            resume.links_done = end.is_none();
            resume.links_after = end.or(resume.links_after);
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
        // is gone, whose blobs may then go too; a window of `limit` blobs in digest order
        // from where the last round stopped, checked row by row as the links are.
        let mut blobs_done = false;
        if resume.links_done {
            let after = resume.blobs_after.clone().unwrap_or_default();
            let end = match plan.limit {
                Some(limit) => tx
                    .first(blobs_window_end(&after, limit))
                    .await?
                    .map(|row| row.text("digest"))
                    .transpose()?,
                None => None,
            };
            let q = garbage_blobs(plan.cutoff, &after, end.as_deref());
            let garbage = tx.fetch(q).await?;
            let garbage = garbage
                .iter()
                .map(|row| row.text("digest"))
                .collect::<StorageResult<Vec<_>>>()?;
            // Deleted by key, as the links are: joined back to `blobs` in one statement,
            // the probes' estimates lead PostgreSQL to a nested loop over the table.
            for batch in garbage.chunks(DIGESTS_PER_STATEMENT) {
                let q = query(format!(
                    "DELETE FROM blobs WHERE digest IN ({}) RETURNING digest, size",
                    placeholders(1, batch.len())
                ));
                let q = batch.iter().fold(q, |q, digest| q.bind(digest.as_str()));
                for row in tx.fetch(q).await? {
                    let digest = row.text("digest")?;
                    sweep
                        .blobs
                        .push((parse_digest(&digest)?, row.i64("size")? as u64));
                }
            }
            sweep.blobs.sort();
            blobs_done = end.is_none();
            resume.blobs_after = end.or(resume.blobs_after);
        }
        sweep.more = !blobs_done;
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

/// The last link of the window of `limit` links after `after`, in key order; no row
/// when fewer are left (the window then runs to the last link).
fn links_window_end(after: &(i64, String), limit: u32) -> Query {
    query(
        "SELECT repository_id, digest FROM repository_blobs
          WHERE (repository_id, digest) > ($1, $2)
          ORDER BY repository_id, digest LIMIT 1 OFFSET $3",
    )
    .bind(after.0)
    .bind(after.1.as_str())
    .bind(window_last(limit))
}

/// The last blob of the window of `limit` blobs after `after`, in digest order; no row
/// when fewer are left (the window then runs to the last blob).
fn blobs_window_end(after: &str, limit: u32) -> Query {
    query(
        "SELECT digest FROM blobs WHERE digest > $1
          ORDER BY digest LIMIT 1 OFFSET $2",
    )
    .bind(after)
    .bind(window_last(limit))
}

/// The offset of a window's last row: a window holds at least one.
fn window_last(limit: u32) -> i64 {
    i64::from(limit.max(1)) - 1
}

/// The links in the window after `after` up to `end` (to the last link without it),
/// created before `cutoff`, that no manifest of their repository references. Each is
/// checked by a probe of `manifest_blobs_blob` (blob, repository).
fn garbage_links(cutoff: i64, after: &(i64, String), end: Option<&(i64, String)>) -> Query {
    let q = query(format!(
        "SELECT rb.repository_id, rb.digest FROM repository_blobs rb
          WHERE (rb.repository_id, rb.digest) > ($2, $3) {}
            AND rb.created_at < $1
            AND (SELECT 1 FROM manifest_blobs mb
                  WHERE mb.blob_digest = rb.digest
                    AND mb.repository_id = rb.repository_id LIMIT 1) IS NULL",
        if end.is_some() {
            "AND (rb.repository_id, rb.digest) <= ($4, $5)"
        } else {
            ""
        }
    ))
    .bind(cutoff)
    .bind(after.0)
    .bind(after.1.as_str());
    match end {
        Some((repo_id, digest)) => q.bind(*repo_id).bind(digest.as_str()),
        None => q,
    }
}

/// The blobs in the window after `after` up to `end` (to the last blob without it),
/// created before `cutoff`, that no link, manifest or upload's pin holds. Each is
/// checked by a probe of an index on the digest in each of those tables.
fn garbage_blobs(cutoff: i64, after: &str, end: Option<&str>) -> Query {
    let q = query(format!(
        "SELECT b.digest FROM blobs b
          WHERE b.digest > $2 {}
            AND b.created_at < $1
            AND (SELECT 1 FROM repository_blobs rb
                  WHERE rb.digest = b.digest LIMIT 1) IS NULL
            AND (SELECT 1 FROM manifest_blobs mb
                  WHERE mb.blob_digest = b.digest LIMIT 1) IS NULL
            AND (SELECT 1 FROM blob_pins p
                  WHERE p.digest = b.digest LIMIT 1) IS NULL",
        if end.is_some() {
            "AND b.digest <= $3"
        } else {
            ""
        }
    ))
    .bind(cutoff)
    .bind(after);
    match end {
        Some(digest) => q.bind(digest),
        None => q,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::SqliteMetadata;
    use sqlx::Row;

    async fn sqlite_plan(q: Query) -> Vec<String> {
        let store = SqliteMetadata::open("sqlite::memory:").await.unwrap();
        q.explained()
            .to_sqlx::<sqlx::Sqlite>()
            .fetch_all(&store.engine.readers())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect()
    }

    /// SQLite's plans for a GC window: the window is a range of the primary key, and
    /// each row is checked by index probes, never by walking another table.
    #[tokio::test]
    async fn a_gc_window_is_an_index_range_checked_by_probes() {
        let after = (3, "sha256:0".to_string());
        let end = (3, "sha256:8".to_string());
        for end in [Some(&end), None] {
            let plan = sqlite_plan(garbage_links(1, &after, end)).await;
            assert!(
                plan.iter()
                    .any(|l| l.contains("SEARCH rb USING PRIMARY KEY")),
                "{plan:?}"
            );
            assert!(
                plan.iter().any(|l| l.contains(
                    "SEARCH mb USING COVERING INDEX manifest_blobs_blob (blob_digest=? AND repository_id=?)"
                )),
                "{plan:?}"
            );
            assert!(!plan.iter().any(|l| l.starts_with("SCAN")), "{plan:?}");
        }
        for plan in [
            sqlite_plan(links_window_end(&after, 10)).await,
            sqlite_plan(blobs_window_end("sha256:0", 10)).await,
        ] {
            assert!(
                !plan.is_empty() && plan.iter().all(|l| l.starts_with("SEARCH")),
                "{plan:?}"
            );
        }
        for end in [Some("sha256:8"), None] {
            let plan = sqlite_plan(garbage_blobs(1, "sha256:0", end)).await;
            assert!(
                plan.iter().any(
                    |l| l.contains("SEARCH b USING INDEX sqlite_autoindex_blobs_1")
                        || l.contains("SEARCH b USING PRIMARY KEY")
                ),
                "{plan:?}"
            );
            for probed in ["rb", "mb", "p"] {
                assert!(
                    plan.iter()
                        .any(|l| l.starts_with(&format!("SEARCH {probed} USING"))),
                    "{probed}: {plan:?}"
                );
            }
            assert!(!plan.iter().any(|l| l.starts_with("SCAN")), "{plan:?}");
        }
    }
}
