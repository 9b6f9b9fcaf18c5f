//! [`Manifests`] in SQL.

use async_trait::async_trait;
use bytes::Bytes;

use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::events::{deletion_events, Journal, PutEvents};
use crate::meta::rules::{self, AttachmentWalk};
use crate::meta::*;
use crate::names::{Reference, RepoName, Tag};

use super::common::*;
use super::events::journal_in_tx;
use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> Manifests for SqlMetadata<E> {
    async fn put_manifest_journaled(
        &self,
        put: &ManifestPut,
        journal: Journal<'_>,
    ) -> StorageResult<()> {
        let m = &put.manifest;
        let mut tx = self.engine.begin(Access::Push).await?;
        let repo_id = ensure_repo(&mut tx, &put.repo).await?;

        let mut stored = stored_sizes(&mut tx, BLOB_SIZES, repo_id, &put.blobs).await?;
        stored.extend(stored_sizes(&mut tx, MANIFEST_SIZES, repo_id, &put.children).await?);
        let absent: Vec<Digest> = put
            .blobs
            .iter()
            .chain(&put.children)
            .filter(|d| !stored.contains_key(&d.to_string()))
            .cloned()
            .collect();
        if !absent.is_empty() {
            // Dropping the transaction rolls back the repository row it may have created.
            return Err(StorageError::MissingReferences(absent));
        }
        for (digest, declared) in &put.sizes {
            match stored.get(&digest.to_string()) {
                Some(&size) if size != *declared => {
                    return Err(StorageError::SizeMismatch {
                        digest: digest.clone(),
                        declared: *declared,
                        stored: size,
                    })
                }
                _ => {}
            }
        }

        if !put.tags.is_empty() {
            // Before any row of the manifest is written, so that two PUTs of one tag
            // queue here rather than deadlock on each other's rows.
            lock_tags::<E>(&mut tx, repo_id).await?;
        }
        let at = now();
        let annotations = (!m.annotations.is_empty())
            .then(|| to_json(&m.annotations))
            .transpose()?;
        tx.execute(
            query(
                "INSERT INTO manifests (repository_id, digest, media_type, size, content, artifact_type, subject, annotations, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at",
            )
            .bind(repo_id)
            .bind(&m.digest)
            .bind(m.media_type.as_str())
            .bind(m.content.len() as i64)
            .bind(m.content.as_ref())
            .bind(m.artifact_type.clone())
            .bind(m.subject.as_ref().map(|s| s.to_string()))
            .bind(annotations)
            .bind(at),
        )
        .await?;
        insert_edges(&mut tx, repo_id, put).await?;
        let mut moved = Vec::new();
        let mut previous = Vec::new();
        for tag in &put.tags {
            let current = current_tag(&mut tx, repo_id, tag).await?;
            if let Some(condition) = &put.condition {
                condition.check(current.as_deref())?;
            }
            if put.immutable.contains(tag)
                && current.as_ref().is_some_and(|c| *c != m.digest.to_string())
            {
                // Dropping the transaction rolls back everything written above.
                return Err(StorageError::TagImmutable {
                    tag: tag.to_string(),
                    rule: String::new(),
                });
            }
            tx.execute(
                query(
                    "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
                )
                .bind(repo_id)
                .bind(tag.as_str())
                .bind(&m.digest)
                .bind(at),
            )
            .await?;
            if current != Some(m.digest.to_string()) {
                // Forget what the tag's previous target attached.
                forget_tag_attachments(&mut tx, repo_id, tag).await?;
                moved.push(tag.clone());
                previous.push(current);
            }
        }
        let described =
            describe_entries(&mut tx, repo_id, &rules::entries_to_describe(put, &moved)).await?;
        let mut attached = Vec::new();
        for row in rules::put_rows(put, &moved, &described) {
            if row.attachment == m.digest {
                attached.push((row.kind, row.subject.clone()));
            }
            insert_attachment(&mut tx, repo_id, row, at).await?;
        }
        journal_in_tx(&mut tx, journal, || {
            PutEvents {
                repository: put.repo.as_str(),
                digest: &m.digest,
                media_type: &m.media_type,
                size: m.content.len() as u64,
                artifact_type: m.artifact_type.as_deref(),
                tags: put.tags.iter().map(|t| t.to_string()).collect(),
                moved: moved.iter().map(|t| t.to_string()).zip(previous).collect(),
                attached,
            }
            .events(journal)
        })
        .await?;
        tx.commit().await
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<Option<StoredManifest>> {
        let q = match reference {
            Reference::Digest(d) => query(
                "SELECT m.digest, m.media_type, m.content FROM manifests m
                   JOIN repositories r ON r.id = m.repository_id
                  WHERE r.name = $1 AND m.digest = $2",
            )
            .bind(repo.as_str())
            .bind(d),
            Reference::Tag(t) => query(
                "SELECT m.digest, m.media_type, m.content FROM tags t
                   JOIN repositories r ON r.id = t.repository_id
                   JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
                  WHERE r.name = $1 AND t.name = $2",
            )
            .bind(repo.as_str())
            .bind(t.as_str()),
        };
        let row = self.engine.readers().first(q).await?;
        row.map(|row| {
            Ok(StoredManifest {
                digest: row.digest("digest")?,
                media_type: row.text("media_type")?,
                content: Bytes::from(row.bytes("content")?),
            })
        })
        .transpose()
    }

    async fn delete_manifest_journaled(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_attachments: bool,
        protected: ProtectedTags<'_>,
        journal: Journal<'_>,
    ) -> StorageResult<Vec<Digest>> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(Vec::new());
        };
        let mut tx = self.engine.begin(Access::Push).await?;
        // No tag moves onto what is deleted while its tags are checked.
        lock_tags::<E>(&mut tx, repo_id).await?;
        let deleted = delete_walk::<E>(
            &mut tx,
            repo,
            repo_id,
            digest,
            with_attachments,
            protected,
            journal,
        )
        .await?;
        if !deleted.is_empty() {
            tx.commit().await?;
        }
        Ok(deleted)
    }

    async fn delete_tag_journaled(
        &self,
        repo: &RepoName,
        tag: &Tag,
        journal: Journal<'_>,
    ) -> StorageResult<bool> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(false);
        };
        let mut tx = self.engine.begin(Access::Push).await?;
        lock_tags::<E>(&mut tx, repo_id).await?;
        let pointed = current_tag(&mut tx, repo_id, tag).await?;
        let done = tx
            .execute(
                query("DELETE FROM tags WHERE repository_id = $1 AND name = $2")
                    .bind(repo_id)
                    .bind(tag.as_str()),
            )
            .await?;
        forget_tag_attachments(&mut tx, repo_id, tag).await?;
        if let Some(digest) = pointed.filter(|_| done > 0) {
            let digest = parse_digest(&digest)?;
            journal_in_tx(&mut tx, journal, || {
                deletion_events(journal, repo.as_str(), &[], &[(tag.to_string(), digest)])
            })
            .await?;
        }
        tx.commit().await?;
        Ok(done > 0)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> StorageResult<Option<Vec<String>>> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(None);
        };
        let q = query(
            "SELECT name FROM tags WHERE repository_id = $1 AND name > $2 ORDER BY name LIMIT $3",
        )
        .bind(repo_id)
        .bind(page.last.unwrap_or(""))
        .bind(page_limit(&page));
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter()
            .map(|r| r.text("name"))
            .collect::<StorageResult<_>>()
            .map(Some)
    }

    async fn list_tag_details(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> StorageResult<Option<Vec<TagDetail>>> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(None);
        };
        let q = query(
            "SELECT t.name, t.digest, t.updated_at, m.media_type, m.size, m.content
               FROM tags t
               JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
              WHERE t.repository_id = $1 AND t.name > $2
              ORDER BY t.name LIMIT $3",
        )
        .bind(repo_id)
        .bind(page.last.unwrap_or(""))
        .bind(page_limit(&page));
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter()
            .map(|r| {
                Ok(TagDetail {
                    tag: r.text("name")?,
                    digest: r.digest("digest")?,
                    media_type: r.text("media_type")?,
                    size: r.i64("size")? as u64,
                    pushed_at: r.i64("updated_at")?,
                    content: Bytes::from(r.bytes("content")?),
                })
            })
            .collect::<StorageResult<_>>()
            .map(Some)
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        include_tag_attachments: bool,
    ) -> StorageResult<Vec<Referrer>> {
        let attachments = self.list_attachments(repo, subject).await?;
        Ok(rules::referrers(&attachments, include_tag_attachments))
    }

    async fn list_attachments(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> StorageResult<Vec<AttachmentRecord>> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(Vec::new());
        };
        let q = query(
            "SELECT a.subject, a.attachment, a.kind, a.source, a.format, a.artifact_type, a.tag,
                    a.carrier, a.created_at, m.media_type, m.size, m.annotations
               FROM attachments a
               LEFT JOIN manifests m ON m.repository_id = a.repository_id AND m.digest = a.attachment
              WHERE a.repository_id = $1 AND a.subject = $2
              ORDER BY a.created_at, a.attachment",
        )
        .bind(repo_id)
        .bind(subject);
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter().map(attachment_from_row).collect()
    }

    async fn attached_to(&self, repo: &RepoName, manifest: &Digest) -> StorageResult<Vec<Digest>> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(Vec::new());
        };
        let q = query(
            "SELECT DISTINCT a.subject FROM attachments a
               JOIN manifests m ON m.repository_id = a.repository_id AND m.digest = a.subject
              WHERE a.repository_id = $1
                AND (a.attachment = $2 OR (a.carrier = $2 AND a.source <> 'buildkit'))
                AND a.source <> 'extension' AND a.subject <> $2
              ORDER BY a.subject",
        )
        .bind(repo_id)
        .bind(manifest);
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter().map(|r| r.digest("subject")).collect()
    }

    async fn parents_of(&self, repo: &RepoName, child: &Digest) -> StorageResult<Vec<Digest>> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(Vec::new());
        };
        let q = query(
            "SELECT index_digest FROM manifest_children
              WHERE repository_id = $1 AND child_digest = $2 ORDER BY index_digest",
        )
        .bind(repo_id)
        .bind(child);
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter().map(|r| r.digest("index_digest")).collect()
    }
}

/// Deletes `digest`, the tags pointing at it and its edges, and with `with_attachments`
/// its attachments (recursively), in `tx` (which holds [`lock_tags`]). Empty when the
/// manifest is absent; [`StorageError::TagImmutable`] when a tag that would go is
/// `protected`. The events of the delete are appended last, when `journal` records them.
pub(super) async fn delete_walk<E: Engine>(
    tx: &mut E::Tx,
    repo: &RepoName,
    repo_id: i64,
    digest: &Digest,
    with_attachments: bool,
    protected: ProtectedTags<'_>,
    journal: Journal<'_>,
) -> StorageResult<Vec<Digest>> {
    let mut walk = AttachmentWalk::new(digest, with_attachments);
    while let Some(subject) = walk.next_subject() {
        let q = query(
            "SELECT DISTINCT a.attachment FROM attachments a
               JOIN manifests m ON m.repository_id = a.repository_id AND m.digest = a.attachment
              WHERE a.repository_id = $1 AND a.subject = $2 AND a.source <> 'extension'",
        )
        .bind(repo_id)
        .bind(subject);
        let rows = tx.fetch(q).await?;
        walk.attached(
            rows.iter()
                .map(|r| r.text("attachment"))
                .collect::<StorageResult<_>>()?,
        );
    }
    let doomed = walk.into_found();
    let mut tags = Vec::new();
    for d in &doomed {
        let q = query("SELECT name FROM tags WHERE repository_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(d);
        for row in tx.fetch(q).await? {
            let tag = row.text("name")?;
            if protected(&tag) {
                return Err(StorageError::TagImmutable {
                    tag,
                    rule: String::new(),
                });
            }
            tags.push((tag, parse_digest(d)?));
        }
    }
    let mut deleted = Vec::new();
    for d in &doomed {
        // Tags, edges and the attachment rows it carries go with it (ON DELETE CASCADE).
        let q = query(
            "DELETE FROM manifests WHERE repository_id = $1 AND digest = $2 RETURNING media_type",
        )
        .bind(repo_id)
        .bind(d);
        if let Some(row) = tx.first(q).await? {
            deleted.push((parse_digest(d)?, row.text("media_type")?));
        } else if d == &doomed[0] {
            return Ok(Vec::new());
        }
    }
    journal_in_tx(tx, journal, || {
        deletion_events(journal, repo.as_str(), &deleted, &tags)
    })
    .await?;
    Ok(deleted.into_iter().map(|(d, _)| d).collect())
}
