//! [`Retention`] in SQL.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::events::Journal;

use crate::digest::Digest;
use crate::error::StorageResult;
use crate::meta::*;
use crate::names::RepoName;

use super::common::*;
use super::manifests::delete_walk;
use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> Retention for SqlMetadata<E> {
    async fn inventory(&self, repo: &RepoName) -> StorageResult<Option<Inventory>> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(None);
        };
        let mut db = self.engine.readers();
        let rows = db
            .fetch(
                query(
                    "SELECT m.digest, m.media_type, m.created_at, p.pulled_at
                       FROM manifests m
                       LEFT JOIN manifest_pulls p
                         ON p.repository_id = m.repository_id AND p.digest = m.digest
                      WHERE m.repository_id = $1
                      ORDER BY m.digest",
                )
                .bind(repo_id),
            )
            .await?;
        let mut manifests = Vec::with_capacity(rows.len());
        let mut at: HashMap<String, usize> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let digest = r.text("digest")?;
            at.insert(digest.clone(), manifests.len());
            manifests.push(InventoryManifest {
                digest: parse_digest(&digest)?,
                media_type: r.text("media_type")?,
                pushed_at: r.i64("created_at")?,
                pulled_at: r.opt_i64("pulled_at")?,
                tags: Vec::new(),
                children: Vec::new(),
                is_attachment: false,
                attachments: Vec::new(),
            });
        }
        // Read statement by statement: a row naming a manifest the first read did not
        // see (pushed meanwhile) is skipped; a deletion checks again before it acts.
        let q = query("SELECT name, digest, updated_at FROM tags WHERE repository_id = $1")
            .bind(repo_id);
        for r in db.fetch(q).await? {
            if let Some(&i) = at.get(&r.text("digest")?) {
                manifests[i].tags.push(TagSeen {
                    name: r.text("name")?,
                    updated_at: r.i64("updated_at")?,
                });
            }
        }
        let q = query(
            "SELECT index_digest, child_digest FROM manifest_children WHERE repository_id = $1",
        )
        .bind(repo_id);
        for r in db.fetch(q).await? {
            if let Some(&i) = at.get(&r.text("index_digest")?) {
                manifests[i].children.push(r.digest("child_digest")?);
            }
        }
        let q = query(
            "SELECT subject, attachment, carrier, source FROM attachments WHERE repository_id = $1",
        )
        .bind(repo_id);
        for r in db.fetch(q).await? {
            let source = r.text("source")?;
            // A BuildKit row's carrier is the image index: it carries, it is not attached.
            if source != "extension" {
                let columns: &[&str] = if source == "buildkit" {
                    &["attachment"]
                } else {
                    &["attachment", "carrier"]
                };
                for &column in columns {
                    if let Some(&i) = at.get(&r.text(column)?) {
                        manifests[i].is_attachment = true;
                    }
                }
            }
            if let Some(&i) = at.get(&r.text("subject")?) {
                manifests[i].attachments.push(r.text("attachment")?);
            }
        }
        Ok(Some(Inventory { manifests }))
    }

    async fn retire_manifest_journaled(
        &self,
        repo: &RepoName,
        digest: &Digest,
        seen: &ManifestSeen,
        protected: ProtectedTags<'_>,
        journal: Journal<'_>,
    ) -> StorageResult<Retired> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(Retired::Changed("the repository is gone".into()));
        };
        // As a GC sweep does: no push runs beside this transaction, so a push that
        // checked the manifest was there (an index listing it) has committed before.
        let mut tx = self.engine.begin(Access::Sweep).await?;
        lock_tags::<E>(&mut tx, repo_id).await?;
        let q = query("SELECT created_at FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest);
        let Some(row) = tx.first(q).await? else {
            return Ok(Retired::Changed("already deleted".into()));
        };
        if row.i64("created_at")? != seen.pushed_at {
            return Ok(Retired::Changed("pushed again".into()));
        }
        let q = query("SELECT name, updated_at FROM tags WHERE repository_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest);
        let mut tags = tx
            .fetch(q)
            .await?
            .iter()
            .map(|r| {
                Ok(TagSeen {
                    name: r.text("name")?,
                    updated_at: r.i64("updated_at")?,
                })
            })
            .collect::<StorageResult<Vec<_>>>()?;
        tags.sort();
        if tags != seen.tags {
            return Ok(Retired::Changed("its tags changed".into()));
        }
        let q = query(
            "SELECT index_digest FROM manifest_children WHERE repository_id = $1 AND child_digest = $2",
        )
        .bind(repo_id)
        .bind(digest);
        if tx.exists(q).await? {
            return Ok(Retired::Changed("an index lists it".into()));
        }
        let q =
            query("SELECT attachment FROM attachments WHERE repository_id = $1 AND subject = $2")
                .bind(repo_id)
                .bind(digest);
        let mut attachments = tx
            .fetch(q)
            .await?
            .iter()
            .map(|r| r.text("attachment"))
            .collect::<StorageResult<Vec<_>>>()?;
        attachments.sort();
        if attachments != seen.attachments {
            return Ok(Retired::Changed("something was attached to it".into()));
        }
        let deleted =
            delete_walk::<E>(&mut tx, repo, repo_id, digest, true, protected, journal).await?;
        if deleted.is_empty() {
            return Ok(Retired::Changed("already deleted".into()));
        }
        tx.commit().await?;
        Ok(Retired::Deleted(deleted))
    }

    async fn record_pulls(&self, pulls: &[(String, Digest, i64)]) -> StorageResult<()> {
        if pulls.is_empty() {
            return Ok(());
        }
        // Beside pushes, not beside a sweep: a row it deletes is not referenced here.
        let mut tx = self.engine.begin(Access::Push).await?;
        for (repo, digest, at) in pulls {
            let q = query(
                "INSERT INTO manifest_pulls (repository_id, digest, pulled_at)
                 SELECT m.repository_id, m.digest, $3 FROM manifests m
                   JOIN repositories r ON r.id = m.repository_id
                  WHERE r.name = $1 AND m.digest = $2
                 ON CONFLICT (repository_id, digest) DO UPDATE SET pulled_at = excluded.pulled_at
                  WHERE manifest_pulls.pulled_at < excluded.pulled_at",
            )
            .bind(repo.as_str())
            .bind(digest)
            .bind(*at);
            tx.execute(q).await?;
        }
        tx.commit().await
    }
}
