//! The embedded metadata backend: SQLite in WAL mode, one writer connection (SQLite
//! serialises writers anyway; one connection avoids lock upgrades that would fail with
//! SQLITE_BUSY) and a pool of readers that never wait for it.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{
    now, AtomicSignature, AttachmentRecord, GcPlan, GcSweep, ManifestPut, MetadataStore, Page,
    Referrer, SignatureStored, StoredManifest, UploadSession,
};
use crate::attachments::{classify, AttachmentKind, AttachmentSource, AttachmentTag};
use crate::blobs::StagedPart;
use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::names::{Reference, RepoName, Tag};

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "atomic signatures",
        include_str!("../../migrations/sqlite/0002_atomic_signatures.sql"),
    ),
    (
        3,
        "attachments",
        include_str!("../../migrations/sqlite/0003_attachments.sql"),
    ),
    (4, "gc", include_str!("../../migrations/sqlite/0004_gc.sql")),
];

/// Transactions that read before they write start with the write lock: with another
/// process writing the same database (`signet gc` beside the server), a deferred one
/// would fail at its first write (SQLITE_BUSY_SNAPSHOT) instead of waiting.
const IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// Migrations compiled into the binary, so no file layout is needed at run time.
#[derive(Debug)]
struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(name),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

#[derive(Debug, Clone)]
pub struct SqliteMetadata {
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteMetadata {
    pub async fn open(url: &str) -> StorageResult<Self> {
        let base = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a crash of the process (kill -9) without fsync per
            // commit; only a power loss can drop the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(base.clone())
            .await?;
        Migrator::new(EmbeddedMigrations)
            .await?
            .run(&writer)
            .await?;
        // An in-memory database exists only inside its one connection.
        let readers = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(base.read_only(true))
                .await?
        };
        Ok(Self { writer, readers })
    }

    async fn repo_id(&self, repo: &RepoName) -> StorageResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
                .bind(repo.as_str())
                .fetch_optional(&self.readers)
                .await?,
        )
    }
}

async fn ensure_repo(tx: &mut Transaction<'_, Sqlite>, repo: &RepoName) -> StorageResult<i64> {
    sqlx::query(
        "INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
    )
    .bind(repo.as_str())
    .bind(now())
    .execute(&mut **tx)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
            .bind(repo.as_str())
            .fetch_one(&mut **tx)
            .await?,
    )
}

fn parse_digest(s: &str) -> StorageResult<Digest> {
    s.parse()
        .map_err(|e| StorageError::Corrupt(format!("stored digest {s:?}: {e}")))
}

fn upload_from_row(row: &SqliteRow) -> StorageResult<UploadSession> {
    let repo: String = row.try_get("repository")?;
    let parts: String = row.try_get("parts")?;
    Ok(UploadSession {
        id: row.try_get("id")?,
        repo: repo
            .parse()
            .map_err(|e| StorageError::Corrupt(format!("upload repository: {e}")))?,
        size: row.try_get::<i64, _>("committed_size")? as u64,
        parts: serde_json::from_str(&parts)
            .map_err(|e| StorageError::Corrupt(format!("upload parts: {e}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn page_limit(page: &Page<'_>) -> i64 {
    page.limit.map_or(-1, i64::from)
}

#[async_trait]
impl MetadataStore for SqliteMetadata {
    async fn ping(&self) -> StorageResult<()> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn list_repositories(&self, page: Page<'_>) -> StorageResult<Vec<String>> {
        Ok(
            sqlx::query_scalar(
                "SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?",
            )
            .bind(page.last.unwrap_or(""))
            .bind(page_limit(&page))
            .fetch_all(&self.readers)
            .await?,
        )
    }

    async fn repository_exists(&self, repo: &RepoName) -> StorageResult<bool> {
        Ok(self.repo_id(repo).await?.is_some())
    }

    async fn blob_in_repository(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb
               JOIN repositories r ON r.id = rb.repository_id
               JOIN blobs b ON b.digest = rb.digest
              WHERE r.name = ? AND rb.digest = ?",
        )
        .bind(repo.as_str())
        .bind(digest.to_string())
        .fetch_optional(&self.readers)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn blob_size(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = ?")
            .bind(digest.to_string())
            .fetch_optional(&self.readers)
            .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> StorageResult<()> {
        let mut tx = self.writer.begin().await?;
        let repo_id = ensure_repo(&mut tx, repo).await?;
        // GC removed the row and is deleting the bytes: refuse (dropping `tx` rolls back).
        refuse_tombstoned(&mut tx, digest).await?;
        let at = now();
        // A re-link touches the row and the link: a blob just pushed again is inside the
        // GC grace period.
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT(digest) DO UPDATE SET created_at = excluded.created_at")
            .bind(digest.to_string())
            .bind(size as i64)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET created_at = excluded.created_at")
            .bind(repo_id)
            .bind(digest.to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        let done = sqlx::query(
            "DELETE FROM repository_blobs WHERE digest = ?
               AND repository_id = (SELECT id FROM repositories WHERE name = ?)",
        )
        .bind(digest.to_string())
        .bind(repo.as_str())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_manifest(&self, put: &ManifestPut) -> StorageResult<()> {
        let m = &put.manifest;
        let digest = m.digest.to_string();
        let mut tx = self.writer.begin().await?;
        let repo_id = ensure_repo(&mut tx, &put.repo).await?;

        let mut missing = Vec::new();
        for blob in &put.blobs {
            let present: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM repository_blobs WHERE repository_id = ? AND digest = ?",
            )
            .bind(repo_id)
            .bind(blob.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if present.is_none() {
                missing.push(blob.clone());
            }
        }
        for child in &put.children {
            let present: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM manifests WHERE repository_id = ? AND digest = ?",
            )
            .bind(repo_id)
            .bind(child.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if present.is_none() {
                missing.push(child.clone());
            }
        }
        if !missing.is_empty() {
            // Dropping the transaction rolls back the repository row it may have created.
            return Err(StorageError::MissingReferences(missing));
        }

        let at = now();
        let annotations = (!m.annotations.is_empty())
            .then(|| serde_json::to_string(&m.annotations))
            .transpose()
            .map_err(|e| StorageError::Other(e.to_string()))?;
        sqlx::query(
            "INSERT INTO manifests (repository_id, digest, media_type, size, content, artifact_type, subject, annotations, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT(repository_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo_id)
        .bind(&digest)
        .bind(&m.media_type)
        .bind(m.content.len() as i64)
        .bind(m.content.as_ref())
        .bind(&m.artifact_type)
        .bind(m.subject.as_ref().map(|s| s.to_string()))
        .bind(annotations)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        for blob in &put.blobs {
            sqlx::query("INSERT INTO manifest_blobs (repository_id, manifest_digest, blob_digest) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(repo_id)
                .bind(&digest)
                .bind(blob.to_string())
                .execute(&mut *tx)
                .await?;
        }
        for child in &put.children {
            sqlx::query("INSERT INTO manifest_children (repository_id, index_digest, child_digest) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
                .bind(repo_id)
                .bind(&digest)
                .bind(child.to_string())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(subject) = &m.subject {
            let (kind, format) = classify(m.artifact_type.as_deref(), &m.annotations);
            let row = AttachmentRow {
                subject,
                attachment: &m.digest,
                kind,
                source: AttachmentSource::Subject,
                format,
                artifact_type: m.artifact_type.as_deref(),
                tag: None,
                carrier: &m.digest,
            };
            row.insert(&mut tx, repo_id, at).await?;
        }
        if let Some(tag) = &put.tag {
            let current: Option<String> =
                sqlx::query_scalar("SELECT digest FROM tags WHERE repository_id = ? AND name = ?")
                    .bind(repo_id)
                    .bind(tag.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(condition) = &put.condition {
                condition.check(current.as_deref())?;
            }
            sqlx::query(
                "INSERT INTO tags (repository_id, name, digest, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT(repository_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
            )
            .bind(repo_id)
            .bind(tag.as_str())
            .bind(&digest)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            if current.as_deref() != Some(digest.as_str()) {
                index_attachment_tag(&mut tx, repo_id, tag, &m.digest, &put.children, at).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> StorageResult<Option<StoredManifest>> {
        let row = match reference {
            Reference::Digest(d) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.content FROM manifests m
                       JOIN repositories r ON r.id = m.repository_id
                      WHERE r.name = ? AND m.digest = ?",
                )
                .bind(repo.as_str())
                .bind(d.to_string())
                .fetch_optional(&self.readers)
                .await?
            }
            Reference::Tag(t) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.content FROM tags t
                       JOIN repositories r ON r.id = t.repository_id
                       JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.digest
                      WHERE r.name = ? AND t.name = ?",
                )
                .bind(repo.as_str())
                .bind(t.as_str())
                .fetch_optional(&self.readers)
                .await?
            }
        };
        row.map(|row| {
            let digest: String = row.try_get("digest")?;
            let content: Vec<u8> = row.try_get("content")?;
            Ok(StoredManifest {
                digest: parse_digest(&digest)?,
                media_type: row.try_get("media_type")?,
                content: Bytes::from(content),
            })
        })
        .transpose()
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_attachments: bool,
    ) -> StorageResult<Vec<Digest>> {
        let Some(repo_id) = self.repo_id(repo).await? else {
            return Ok(Vec::new());
        };
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let mut doomed = vec![digest.to_string()];
        let mut next = 0;
        // Attachments of attachments go too: walk the attachment edges breadth-first.
        while with_attachments && next < doomed.len() {
            let attached: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT a.attachment FROM attachments a
                   JOIN manifests m ON m.repository_id = a.repository_id AND m.digest = a.attachment
                  WHERE a.repository_id = ? AND a.subject = ? AND a.source <> 'extension'",
            )
            .bind(repo_id)
            .bind(&doomed[next])
            .fetch_all(&mut *tx)
            .await?;
            for a in attached {
                if !doomed.contains(&a) {
                    doomed.push(a);
                }
            }
            next += 1;
        }
        let mut deleted = Vec::new();
        for d in &doomed {
            // Tags, edges and the attachment rows it carries go with it (ON DELETE CASCADE).
            let done = sqlx::query("DELETE FROM manifests WHERE repository_id = ? AND digest = ?")
                .bind(repo_id)
                .bind(d)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                deleted.push(parse_digest(d)?);
            } else if d == &doomed[0] {
                return Ok(Vec::new());
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<bool> {
        let Some(repo_id) = self.repo_id(repo).await? else {
            return Ok(false);
        };
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query("DELETE FROM tags WHERE repository_id = ? AND name = ?")
            .bind(repo_id)
            .bind(tag.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM attachments WHERE repository_id = ? AND tag = ?")
            .bind(repo_id)
            .bind(tag.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        page: Page<'_>,
    ) -> StorageResult<Option<Vec<String>>> {
        let Some(repo_id) = self.repo_id(repo).await? else {
            return Ok(None);
        };
        let tags = sqlx::query_scalar(
            "SELECT name FROM tags WHERE repository_id = ? AND name > ? ORDER BY name LIMIT ?",
        )
        .bind(repo_id)
        .bind(page.last.unwrap_or(""))
        .bind(page_limit(&page))
        .fetch_all(&self.readers)
        .await?;
        Ok(Some(tags))
    }

    async fn list_referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        include_tag_attachments: bool,
    ) -> StorageResult<Vec<Referrer>> {
        let attachments = self.list_attachments(repo, subject).await?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        // Rows of one attachment arrive together; the subject-field row, when present,
        // says best what it is.
        let mut rows: Vec<&AttachmentRecord> = attachments
            .iter()
            .filter(|a| match a.source {
                AttachmentSource::Extension => false,
                AttachmentSource::Tag => include_tag_attachments,
                _ => true,
            })
            .collect();
        rows.sort_by_key(|a| (a.source != AttachmentSource::Subject, a.created_at));
        for a in rows {
            let (Some(media_type), Some(size)) = (&a.media_type, a.size) else {
                continue;
            };
            if !seen.insert(a.attachment.clone()) {
                continue;
            }
            out.push(Referrer {
                digest: a.attachment.clone(),
                media_type: media_type.clone(),
                size,
                artifact_type: a.artifact_type.clone(),
                annotations: a.annotations.clone(),
            });
        }
        out.sort_by(|x, y| x.digest.cmp(&y.digest));
        Ok(out)
    }

    async fn list_attachments(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> StorageResult<Vec<AttachmentRecord>> {
        let Some(repo_id) = self.repo_id(repo).await? else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT a.subject, a.attachment, a.kind, a.source, a.format, a.artifact_type, a.tag,
                    a.created_at, m.media_type, m.size, m.annotations
               FROM attachments a
               LEFT JOIN manifests m ON m.repository_id = a.repository_id AND m.digest = a.attachment
              WHERE a.repository_id = ? AND a.subject = ?
              ORDER BY a.created_at, a.attachment",
        )
        .bind(repo_id)
        .bind(subject.to_string())
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(attachment_from_row).collect()
    }

    async fn parents_of(&self, repo: &RepoName, child: &Digest) -> StorageResult<Vec<Digest>> {
        let Some(repo_id) = self.repo_id(repo).await? else {
            return Ok(Vec::new());
        };
        let parents: Vec<String> = sqlx::query_scalar(
            "SELECT index_digest FROM manifest_children
              WHERE repository_id = ? AND child_digest = ? ORDER BY index_digest",
        )
        .bind(repo_id)
        .bind(child.to_string())
        .fetch_all(&self.readers)
        .await?;
        parents.iter().map(|p| parse_digest(p)).collect()
    }

    async fn create_upload(&self, s: &UploadSession) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO uploads (id, repository, committed_size, parts, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(s.repo.as_str())
        .bind(s.size as i64)
        .bind(serde_json::to_string(&s.parts).map_err(|e| StorageError::Other(e.to_string()))?)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn get_upload(&self, id: &str) -> StorageResult<Option<UploadSession>> {
        sqlx::query("SELECT * FROM uploads WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.readers)
            .await?
            .as_ref()
            .map(upload_from_row)
            .transpose()
    }

    async fn append_upload_part(
        &self,
        id: &str,
        expected_size: u64,
        part: &StagedPart,
    ) -> StorageResult<UploadSession> {
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let row = sqlx::query("SELECT * FROM uploads WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StorageError::NotFound)?;
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
        sqlx::query(
            "UPDATE uploads SET committed_size = ?, parts = ?, updated_at = ? WHERE id = ?",
        )
        .bind(session.size as i64)
        .bind(
            serde_json::to_string(&session.parts)
                .map_err(|e| StorageError::Other(e.to_string()))?,
        )
        .bind(session.updated_at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(session)
    }

    async fn delete_upload(&self, id: &str) -> StorageResult<bool> {
        let done = sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn uploads_idle_since(&self, cutoff: i64) -> StorageResult<Vec<UploadSession>> {
        sqlx::query("SELECT * FROM uploads WHERE updated_at < ? ORDER BY updated_at")
            .bind(cutoff)
            .fetch_all(&self.readers)
            .await?
            .iter()
            .map(upload_from_row)
            .collect()
    }

    async fn mount_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<Option<u64>> {
        // IMMEDIATE: this transaction reads before it writes, and another process (`signet
        // gc`) may write in between.
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        refuse_tombstoned(&mut tx, digest).await?;
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = ?")
            .bind(digest.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(size) = size else {
            return Ok(None);
        };
        let repo_id = ensure_repo(&mut tx, repo).await?;
        let at = now();
        sqlx::query("UPDATE blobs SET created_at = ? WHERE digest = ?")
            .bind(at)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET created_at = excluded.created_at")
            .bind(repo_id)
            .bind(digest.to_string())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(size as u64))
    }

    async fn pin_blob(&self, digest: &Digest, token: &str) -> StorageResult<()> {
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        refuse_tombstoned(&mut tx, digest).await?;
        sqlx::query("INSERT INTO blob_pins (digest, token, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(digest.to_string())
            .bind(token)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn unpin_blob(&self, digest: &Digest, token: &str) -> StorageResult<()> {
        sqlx::query("DELETE FROM blob_pins WHERE digest = ? AND token = ?")
            .bind(digest.to_string())
            .bind(token)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn gc_acquire(&self, holder: &str, ttl_secs: i64) -> StorageResult<bool> {
        let at = now();
        let done = sqlx::query(
            "INSERT INTO gc_lease (id, holder, expires_at) VALUES (1, ?, ?)
             ON CONFLICT(id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
              WHERE gc_lease.holder = excluded.holder OR gc_lease.expires_at < ?",
        )
        .bind(holder)
        .bind(at + ttl_secs)
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn gc_release(&self, holder: &str) -> StorageResult<()> {
        sqlx::query("DELETE FROM gc_lease WHERE holder = ?")
            .bind(holder)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn gc_sweep(&self, plan: &GcPlan) -> StorageResult<GcSweep> {
        // One write transaction: while it runs no push can make anything it decides on
        // reachable, and everything pushed after it sees its effects (a blob link is
        // checked by the manifest PUT's own transaction, tombstones by every link).
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let mut sweep = GcSweep::default();
        let repos: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, name FROM repositories ORDER BY name")
                .fetch_all(&mut *tx)
                .await?;
        let names: std::collections::HashMap<i64, String> = repos.iter().cloned().collect();

        if plan.delete_untagged {
            for (repo_id, name) in &repos {
                let doomed: Vec<String> = sqlx::query_scalar(UNREACHABLE_MANIFESTS)
                    .bind(repo_id)
                    .bind(plan.cutoff)
                    .bind(plan.attachments_follow_subject)
                    .fetch_all(&mut *tx)
                    .await?;
                for digest in doomed {
                    // Edges, attachment rows, atomic signatures and tags go with it.
                    sqlx::query("DELETE FROM manifests WHERE repository_id = ? AND digest = ?")
                        .bind(repo_id)
                        .bind(&digest)
                        .execute(&mut *tx)
                        .await?;
                    sweep.manifests.push((name.clone(), parse_digest(&digest)?));
                }
            }
        }

        // Links no manifest of their repository references: pushed or mounted, never used
        // (or used by manifests since deleted).
        let links: Vec<(i64, String)> = sqlx::query_as(
            "DELETE FROM repository_blobs AS rb
              WHERE rb.created_at < ?
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb
                                 WHERE mb.repository_id = rb.repository_id AND mb.blob_digest = rb.digest)
             RETURNING repository_id, digest",
        )
        .bind(plan.cutoff)
        .fetch_all(&mut *tx)
        .await?;
        for (repo_id, digest) in links {
            let name = names.get(&repo_id).cloned().unwrap_or_default();
            sweep.links.push((name, parse_digest(&digest)?));
        }
        sweep.links.sort();

        sqlx::query("DELETE FROM blob_pins WHERE created_at < ?")
            .bind(plan.stale_pin_cutoff)
            .execute(&mut *tx)
            .await?;
        // Blob rows nothing references, old enough, and not being placed by an upload:
        // each becomes a tombstone in the same transaction.
        let blobs: Vec<(String, i64)> = sqlx::query_as(
            "DELETE FROM blobs AS b
              WHERE b.created_at < ?
                AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM blob_pins p WHERE p.digest = b.digest)
             RETURNING digest, size",
        )
        .bind(plan.cutoff)
        .fetch_all(&mut *tx)
        .await?;
        let at = now();
        for (digest, size) in blobs {
            sqlx::query("INSERT INTO blob_deletions (digest, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
                .bind(&digest)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            sweep.blobs.push((parse_digest(&digest)?, size as u64));
        }
        sweep.blobs.sort();

        if plan.dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(sweep)
    }

    async fn blob_deletions(&self) -> StorageResult<Vec<Digest>> {
        let digests: Vec<String> =
            sqlx::query_scalar("SELECT digest FROM blob_deletions ORDER BY digest")
                .fetch_all(&self.writer)
                .await?;
        digests.iter().map(|d| parse_digest(d)).collect()
    }

    async fn clear_blob_deletion(&self, digest: &Digest) -> StorageResult<()> {
        sqlx::query("DELETE FROM blob_deletions WHERE digest = ?")
            .bind(digest.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn list_atomic_signatures(
        &self,
        repo: &RepoName,
        manifest: &Digest,
    ) -> StorageResult<Vec<AtomicSignature>> {
        let rows = sqlx::query(
            "SELECT s.signature_id, s.content FROM atomic_signatures s
               JOIN repositories r ON r.id = s.repository_id
              WHERE r.name = ? AND s.manifest_digest = ? ORDER BY s.seq",
        )
        .bind(repo.as_str())
        .bind(manifest.to_string())
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AtomicSignature {
                    id: row.try_get("signature_id")?,
                    content: Bytes::from(row.try_get::<Vec<u8>, _>("content")?),
                })
            })
            .collect()
    }

    async fn put_atomic_signature(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        signature: &AtomicSignature,
    ) -> StorageResult<SignatureStored> {
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let repo_id: i64 = sqlx::query_scalar(
            "SELECT r.id FROM repositories r JOIN manifests m ON m.repository_id = r.id
              WHERE r.name = ? AND m.digest = ?",
        )
        .bind(repo.as_str())
        .bind(manifest.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StorageError::NotFound)?;
        let existing: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT content FROM atomic_signatures
              WHERE repository_id = ? AND manifest_digest = ? AND signature_id = ?",
        )
        .bind(repo_id)
        .bind(manifest.to_string())
        .bind(&signature.id)
        .fetch_optional(&mut *tx)
        .await?;
        match existing {
            Some(content) if content == signature.content.as_ref() => {
                Ok(SignatureStored::AlreadyPresent)
            }
            Some(_) => Err(StorageError::Conflict(format!(
                "signature {} already holds different content",
                signature.id
            ))),
            None => {
                let at = now();
                sqlx::query(
                    "INSERT INTO atomic_signatures (repository_id, manifest_digest, signature_id, content, created_at)
                     VALUES (?, ?, ?, ?, ?)",
                )
                .bind(repo_id)
                .bind(manifest.to_string())
                .bind(&signature.id)
                .bind(signature.content.as_ref())
                .bind(at)
                .execute(&mut *tx)
                .await?;
                let row = AttachmentRow {
                    subject: manifest,
                    attachment: &Digest::sha256_of(&signature.content),
                    kind: AttachmentKind::Signature,
                    source: AttachmentSource::Extension,
                    format: "atomic",
                    artifact_type: None,
                    tag: None,
                    carrier: manifest,
                };
                row.insert(&mut tx, repo_id, at).await?;
                tx.commit().await?;
                Ok(SignatureStored::Created)
            }
        }
    }

    async fn delete_atomic_signature(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        id: &str,
    ) -> StorageResult<bool> {
        let Some(repo_id) = self.repo_id(repo).await? else {
            return Ok(false);
        };
        let mut tx = self.writer.begin_with(IMMEDIATE).await?;
        let content: Option<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM atomic_signatures
              WHERE repository_id = ? AND manifest_digest = ? AND signature_id = ?
             RETURNING content",
        )
        .bind(repo_id)
        .bind(manifest.to_string())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(content) = content else {
            return Ok(false);
        };
        sqlx::query(
            "DELETE FROM attachments WHERE repository_id = ? AND subject = ? AND attachment = ?
               AND source = 'extension'",
        )
        .bind(repo_id)
        .bind(manifest.to_string())
        .bind(Digest::sha256_of(&content).to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Manifests of repository `?1` that nothing keeps: not reachable from a root (a tag,
/// or a manifest created at or after `?2`) through index children and attachments of
/// live subjects (the attachment itself and the manifest carrying the index row, e.g. a
/// referrers fallback index). With `?3`, an attachment tag whose subject is a manifest of
/// the repository is no root: it follows its subject.
const UNREACHABLE_MANIFESTS: &str = "
WITH RECURSIVE live(digest) AS (
    SELECT t.digest FROM tags t
     WHERE t.repository_id = ?1
       AND NOT (?3 AND EXISTS (
           SELECT 1 FROM attachments a
             JOIN manifests s ON s.repository_id = a.repository_id AND s.digest = a.subject
            WHERE a.repository_id = ?1 AND a.tag = t.name
              AND a.source IN ('tag', 'fallback-tag')))
    UNION
    SELECT digest FROM manifests WHERE repository_id = ?1 AND created_at >= ?2
    UNION
    SELECT c.child_digest FROM manifest_children c JOIN live l ON c.index_digest = l.digest
     WHERE c.repository_id = ?1
    UNION
    SELECT a.attachment FROM attachments a JOIN live l ON a.subject = l.digest
     WHERE a.repository_id = ?1
    UNION
    SELECT a.carrier FROM attachments a JOIN live l ON a.subject = l.digest
     WHERE a.repository_id = ?1
)
SELECT digest FROM manifests
 WHERE repository_id = ?1 AND digest NOT IN (SELECT digest FROM live)
 ORDER BY digest";

/// Fails with [`StorageError::BlobBeingDeleted`] while a tombstone names `digest`.
async fn refuse_tombstoned(tx: &mut Transaction<'_, Sqlite>, digest: &Digest) -> StorageResult<()> {
    let tombstone: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM blob_deletions WHERE digest = ?")
            .bind(digest.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    match tombstone {
        Some(_) => Err(StorageError::BlobBeingDeleted(digest.clone())),
        None => Ok(()),
    }
}

/// One row of the attachment index, before it is written.
struct AttachmentRow<'a> {
    subject: &'a Digest,
    attachment: &'a Digest,
    kind: AttachmentKind,
    source: AttachmentSource,
    format: &'a str,
    artifact_type: Option<&'a str>,
    tag: Option<&'a str>,
    carrier: &'a Digest,
}

impl AttachmentRow<'_> {
    async fn insert(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        repo_id: i64,
        at: i64,
    ) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO attachments (repository_id, subject, attachment, kind, source, format, artifact_type, tag, carrier, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (repository_id, subject, attachment, source)
             DO UPDATE SET tag = excluded.tag, carrier = excluded.carrier",
        )
        .bind(repo_id)
        .bind(self.subject.to_string())
        .bind(self.attachment.to_string())
        .bind(self.kind.as_str())
        .bind(self.source.as_str())
        .bind(self.format)
        .bind(self.artifact_type)
        .bind(self.tag)
        .bind(self.carrier.to_string())
        .bind(at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// A tag now points at `manifest`: forget what the tag's previous target attached, and
/// record what this one attaches when the tag is an attachment tag.
async fn index_attachment_tag(
    tx: &mut Transaction<'_, Sqlite>,
    repo_id: i64,
    tag: &Tag,
    manifest: &Digest,
    children: &[Digest],
    at: i64,
) -> StorageResult<()> {
    sqlx::query("DELETE FROM attachments WHERE repository_id = ? AND tag = ?")
        .bind(repo_id)
        .bind(tag.as_str())
        .execute(&mut **tx)
        .await?;
    match AttachmentTag::parse(tag.as_str()) {
        Some(AttachmentTag::Cosign { subject, kind }) => {
            let row = AttachmentRow {
                subject: &subject,
                attachment: manifest,
                kind,
                source: AttachmentSource::Tag,
                format: "cosign",
                artifact_type: Some(AttachmentTag::cosign_artifact_type(kind)),
                tag: Some(tag.as_str()),
                carrier: manifest,
            };
            row.insert(tx, repo_id, at).await?;
        }
        Some(AttachmentTag::Fallback { subject }) => {
            // The referrers fallback index: each entry is a referrer of the subject.
            for child in children {
                let found = sqlx::query(
                    "SELECT artifact_type, annotations FROM manifests WHERE repository_id = ? AND digest = ?",
                )
                .bind(repo_id)
                .bind(child.to_string())
                .fetch_optional(&mut **tx)
                .await?;
                let Some(found) = found else { continue };
                let artifact_type: Option<String> = found.try_get("artifact_type")?;
                let annotations = parse_annotations(found.try_get("annotations")?)?;
                let (kind, format) = classify(artifact_type.as_deref(), &annotations);
                let row = AttachmentRow {
                    subject: &subject,
                    attachment: child,
                    kind,
                    source: AttachmentSource::FallbackTag,
                    format,
                    artifact_type: artifact_type.as_deref(),
                    tag: Some(tag.as_str()),
                    carrier: manifest,
                };
                row.insert(tx, repo_id, at).await?;
            }
        }
        None => {}
    }
    Ok(())
}

fn parse_annotations(
    text: Option<String>,
) -> StorageResult<std::collections::BTreeMap<String, String>> {
    Ok(text
        .map(|a| serde_json::from_str(&a))
        .transpose()
        .map_err(|e| StorageError::Corrupt(format!("annotations: {e}")))?
        .unwrap_or_default())
}

fn attachment_from_row(row: &SqliteRow) -> StorageResult<AttachmentRecord> {
    let text = |name: &str| -> StorageResult<String> { Ok(row.try_get::<String, _>(name)?) };
    let corrupt = StorageError::Corrupt;
    Ok(AttachmentRecord {
        subject: parse_digest(&text("subject")?)?,
        attachment: parse_digest(&text("attachment")?)?,
        kind: text("kind")?.parse().map_err(corrupt)?,
        source: text("source")?.parse().map_err(corrupt)?,
        format: text("format")?,
        artifact_type: row.try_get("artifact_type")?,
        tag: row.try_get("tag")?,
        created_at: row.try_get("created_at")?,
        media_type: row.try_get("media_type")?,
        size: row.try_get::<Option<i64>, _>("size")?.map(|s| s as u64),
        annotations: parse_annotations(row.try_get("annotations")?)?,
    })
}
