//! [`MetadataStore`] in SQL, written once for every engine.
//!
//! Statements use `$N` placeholders, which SQLite and PostgreSQL both understand, and
//! the schema each engine's migrations create has the same tables and columns. What
//! differs is behind [`Engine`]: connections, migrations, and how a transaction that
//! reads before it writes keeps others out (SQLite: its one writer; PostgreSQL: row locks
//! and an advisory lock between pushes and the GC sweep). Decisions that are not SQL
//! are in [`super::rules`].

use std::borrow::Cow;
use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

use super::rules::{self, AttachmentRow, AttachmentWalk, EntryDescription};
use super::{
    now, AtomicSignature, AttachmentRecord, BlobRow, ExportTable, ExportValue, GcPlan, GcSweep,
    ManifestPut, MetadataStore, Page, Referrer, RepositoryExport, SignatureStored, StoredManifest,
    StoredVerdict, TagDetail, UnverifiedAttachment, UploadSession, Usage,
};
use crate::blobs::{StagedPart, UploadProgress};
use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::names::{Reference, RepoName, Tag};

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I64(i64),
    Bool(bool),
    Text(Option<String>),
    Bytes(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<&Digest> for Arg {
    fn from(v: &Digest) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Bytes(v.to_vec())
    }
}

/// A statement and its arguments, run by an engine's [`Conn`].
#[derive(Debug, Clone)]
pub(crate) struct Query {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

pub(crate) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

impl Query {
    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The sqlx query for engine `DB`, borrowing this one's text and arguments.
    pub fn to_sqlx<'q, DB: sqlx::Database>(
        &'q self,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        self.args
            .iter()
            .fold(sqlx::query(&self.sql), |q, arg| match arg {
                Arg::I64(v) => q.bind(*v),
                Arg::Bool(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::Bytes(v) => q.bind(v.as_slice()),
            })
    }
}

/// A row read back, by column name.
pub(crate) trait RowExt {
    fn i64(&self, column: &str) -> StorageResult<i64>;
    fn opt_i64(&self, column: &str) -> StorageResult<Option<i64>>;
    fn text(&self, column: &str) -> StorageResult<String>;
    fn opt_text(&self, column: &str) -> StorageResult<Option<String>>;
    fn bytes(&self, column: &str) -> StorageResult<Vec<u8>>;

    fn digest(&self, column: &str) -> StorageResult<Digest> {
        parse_digest(&self.text(column)?)
    }
}

/// Somewhere statements run: a pool (each statement its own transaction) or an open
/// transaction.
#[async_trait]
pub(crate) trait Conn: Send {
    type Row: RowExt + Send;

    async fn fetch(&mut self, q: Query) -> StorageResult<Vec<Self::Row>>;
    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, q: Query) -> StorageResult<u64>;

    async fn first(&mut self, q: Query) -> StorageResult<Option<Self::Row>> {
        Ok(self.fetch(q).await?.into_iter().next())
    }

    async fn exists(&mut self, q: Query) -> StorageResult<bool> {
        Ok(self.first(q).await?.is_some())
    }
}

#[async_trait]
pub(crate) trait WriteTx: Conn + Sized {
    async fn commit(self) -> StorageResult<()>;
    async fn rollback(self) -> StorageResult<()>;
}

/// What a write transaction is for, so the engine can keep the right others out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Changes only rows GC never decides on (upload sessions).
    Write,
    /// Changes blobs, links, manifests, tags or attachments: sees a GC sweep whole or
    /// not at all. Pushes run beside each other.
    Push,
    /// The GC sweep: no push runs beside it.
    Sweep,
}

/// One SQL engine: its connections, and how its transactions begin.
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    type Row: RowExt + Send;
    type Pool: Conn<Row = Self::Row>;
    type Tx: WriteTx<Row = Self::Row>;

    /// Appended to a `SELECT` whose rows the transaction goes on to change: a row lock
    /// where the engine has them, nothing where a write transaction excludes all others.
    const LOCK_ROWS: &'static str;

    /// For reads outside a transaction.
    fn readers(&self) -> Self::Pool;
    /// For single-statement writes.
    fn writer(&self) -> Self::Pool;
    async fn begin(&self, access: Access) -> StorageResult<Self::Tx>;
    /// See [`MetadataStore::change_token`].
    fn change_token(&self) -> Option<super::ChangeToken>;
}

/// Implements [`Conn`], [`WriteTx`] and [`RowExt`] for an sqlx engine's pools,
/// transactions and rows.
macro_rules! sqlx_engine_glue {
    ($db:ty, $row:ty) => {
        #[async_trait::async_trait]
        impl $crate::meta::sql::Conn for sqlx::Pool<$db> {
            type Row = $row;

            async fn fetch(
                &mut self,
                q: $crate::meta::sql::Query,
            ) -> $crate::error::StorageResult<Vec<$row>> {
                Ok(q.to_sqlx::<$db>().fetch_all(&*self).await?)
            }

            async fn execute(
                &mut self,
                q: $crate::meta::sql::Query,
            ) -> $crate::error::StorageResult<u64> {
                Ok(q.to_sqlx::<$db>().execute(&*self).await?.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl $crate::meta::sql::Conn for sqlx::Transaction<'static, $db> {
            type Row = $row;

            async fn fetch(
                &mut self,
                q: $crate::meta::sql::Query,
            ) -> $crate::error::StorageResult<Vec<$row>> {
                Ok(q.to_sqlx::<$db>().fetch_all(&mut **self).await?)
            }

            async fn execute(
                &mut self,
                q: $crate::meta::sql::Query,
            ) -> $crate::error::StorageResult<u64> {
                Ok(q.to_sqlx::<$db>()
                    .execute(&mut **self)
                    .await?
                    .rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl $crate::meta::sql::WriteTx for sqlx::Transaction<'static, $db> {
            async fn commit(self) -> $crate::error::StorageResult<()> {
                Ok(sqlx::Transaction::commit(self).await?)
            }

            async fn rollback(self) -> $crate::error::StorageResult<()> {
                Ok(sqlx::Transaction::rollback(self).await?)
            }
        }

        impl $crate::meta::sql::RowExt for $row {
            fn i64(&self, column: &str) -> $crate::error::StorageResult<i64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_i64(&self, column: &str) -> $crate::error::StorageResult<Option<i64>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn text(&self, column: &str) -> $crate::error::StorageResult<String> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_text(&self, column: &str) -> $crate::error::StorageResult<Option<String>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn bytes(&self, column: &str) -> $crate::error::StorageResult<Vec<u8>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}
pub(crate) use sqlx_engine_glue;

/// Migrations compiled into the binary, so no file layout is needed at run time.
#[derive(Debug)]
pub(crate) struct EmbeddedMigrations(pub &'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
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

/// The metadata store on one SQL engine (see [`super::SqliteMetadata`] and
/// [`super::PostgresMetadata`]).
#[derive(Debug, Clone)]
pub struct SqlMetadata<E> {
    pub(crate) engine: E,
}

async fn repo_id<E: Engine>(engine: &E, repo: &RepoName) -> StorageResult<Option<i64>> {
    let q = query("SELECT id FROM repositories WHERE name = $1").bind(repo.as_str());
    engine
        .readers()
        .first(q)
        .await?
        .map(|row| row.i64("id"))
        .transpose()
}

pub(crate) fn parse_digest(s: &str) -> StorageResult<Digest> {
    s.parse()
        .map_err(|e| StorageError::Corrupt(format!("stored digest {s:?}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> StorageResult<String> {
    serde_json::to_string(value).map_err(|e| StorageError::Other(e.to_string()))
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

fn upload_from_row(row: &impl RowExt) -> StorageResult<UploadSession> {
    Ok(UploadSession {
        id: row.text("id")?,
        repo: row
            .text("repository")?
            .parse()
            .map_err(|e| StorageError::Corrupt(format!("upload repository: {e}")))?,
        size: row.i64("committed_size")? as u64,
        parts: serde_json::from_str(&row.text("parts")?)
            .map_err(|e| StorageError::Corrupt(format!("upload parts: {e}")))?,
        progress: row
            .opt_text("progress")?
            .map(|p| serde_json::from_str(&p))
            .transpose()
            .map_err(|e| StorageError::Corrupt(format!("upload progress: {e}")))?,
        created_at: row.i64("created_at")?,
        updated_at: row.i64("updated_at")?,
    })
}

fn attachment_from_row(row: &impl RowExt) -> StorageResult<AttachmentRecord> {
    let corrupt = StorageError::Corrupt;
    Ok(AttachmentRecord {
        subject: row.digest("subject")?,
        attachment: row.digest("attachment")?,
        kind: row.text("kind")?.parse().map_err(corrupt)?,
        source: row.text("source")?.parse().map_err(corrupt)?,
        format: row.text("format")?,
        artifact_type: row.opt_text("artifact_type")?,
        tag: row.opt_text("tag")?,
        created_at: row.i64("created_at")?,
        media_type: row.opt_text("media_type")?,
        size: row.opt_i64("size")?.map(|s| s as u64),
        annotations: parse_annotations(row.opt_text("annotations")?)?,
    })
}

/// `LIMIT` of a page; no limit is the largest one (SQLite's `-1` is no PostgreSQL's).
fn page_limit(page: &Page<'_>) -> i64 {
    page.limit.map_or(i64::MAX, i64::from)
}

async fn ensure_repo(tx: &mut impl Conn, repo: &RepoName) -> StorageResult<i64> {
    tx.execute(
        query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(repo.as_str())
            .bind(now()),
    )
    .await?;
    let row = tx
        .first(query("SELECT id FROM repositories WHERE name = $1").bind(repo.as_str()))
        .await?
        .ok_or_else(|| StorageError::Other(format!("repository {repo} vanished")))?;
    row.i64("id")
}

/// Fails with [`StorageError::BlobBeingDeleted`] while a tombstone names `digest`.
async fn refuse_tombstoned(tx: &mut impl Conn, digest: &Digest) -> StorageResult<()> {
    let q = query("SELECT 1 AS one FROM blob_deletions WHERE digest = $1").bind(digest);
    if tx.exists(q).await? {
        Err(StorageError::BlobBeingDeleted(digest.clone()))
    } else {
        Ok(())
    }
}

/// Links `digest` into the repository (touching link and row: a blob pushed or mounted
/// again is inside the GC grace period).
async fn touch_link(
    tx: &mut impl Conn,
    repo_id: i64,
    digest: &Digest,
    at: i64,
) -> StorageResult<()> {
    tx.execute(
        query(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at",
        )
        .bind(repo_id)
        .bind(digest)
        .bind(at),
    )
    .await?;
    Ok(())
}

async fn insert_attachment(
    tx: &mut impl Conn,
    repo_id: i64,
    row: AttachmentRow,
    at: i64,
) -> StorageResult<()> {
    tx.execute(
        query(
            "INSERT INTO attachments (repository_id, subject, attachment, kind, source, format, artifact_type, tag, carrier, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (repository_id, subject, attachment, source)
             DO UPDATE SET tag = excluded.tag, carrier = excluded.carrier",
        )
        .bind(repo_id)
        .bind(&row.subject)
        .bind(&row.attachment)
        .bind(row.kind.as_str())
        .bind(row.source.as_str())
        .bind(row.format)
        .bind(row.artifact_type)
        .bind(row.tag)
        .bind(&row.carrier)
        .bind(at),
    )
    .await?;
    Ok(())
}

/// What the index entries of a PUT say of themselves (entries absent from the
/// repository are skipped).
async fn describe_entries(
    tx: &mut impl Conn,
    repo_id: i64,
    entries: &[Digest],
) -> StorageResult<Vec<EntryDescription>> {
    let mut described = Vec::new();
    for digest in entries {
        let q = query(
            "SELECT artifact_type, annotations FROM manifests WHERE repository_id = $1 AND digest = $2",
        )
        .bind(repo_id)
        .bind(digest);
        if let Some(row) = tx.first(q).await? {
            described.push(EntryDescription {
                digest: digest.clone(),
                artifact_type: row.opt_text("artifact_type")?,
                annotations: parse_annotations(row.opt_text("annotations")?)?,
            });
        }
    }
    Ok(described)
}

/// Which of `wanted` are absent: checked with `sql` (`$1` repository, `$2` digest).
/// Digests sent in one statement when a list of them goes at once: each statement is a
/// round trip (to SQLite's worker thread, or to the PostgreSQL server), so a manifest of
/// a hundred layers costs a few statements, not hundreds; the bound stays far below both
/// engines' limits on parameters.
const DIGESTS_PER_STATEMENT: usize = 400;

/// `$from, $from+1, …`: `n` numbered placeholders.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The digests of `wanted` that `table` (keyed by repository and `column`) lacks for
/// repository `repo_id`, in `wanted`'s order.
/// The blobs a repository holds, with their sizes (`$2...` the digests asked for).
const BLOB_SIZES: &str = "SELECT rb.digest AS digest, b.size AS size FROM repository_blobs rb
    JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = $1 AND rb.digest IN";
/// The manifests a repository holds, with their sizes.
const MANIFEST_SIZES: &str =
    "SELECT digest, size FROM manifests WHERE repository_id = $1 AND digest IN";

/// The sizes of those of `wanted` that `select` (one of the statements above) finds, by
/// digest, a batch of digests per statement.
async fn stored_sizes(
    tx: &mut impl Conn,
    select: &'static str,
    repo_id: i64,
    wanted: &[Digest],
) -> StorageResult<HashMap<String, u64>> {
    let mut present = HashMap::new();
    for batch in wanted.chunks(DIGESTS_PER_STATEMENT) {
        let sql = format!("{select} ({})", placeholders(2, batch.len()));
        let q = batch
            .iter()
            .fold(query(sql).bind(repo_id), |q, d| q.bind(d));
        for row in tx.fetch(q).await? {
            present.insert(row.text("digest")?, row.i64("size")? as u64);
        }
    }
    Ok(present)
}

/// Records the edges of manifest `put` (the blobs it needs, the children it lists), a
/// batch of rows per statement; edges already there stay.
async fn insert_edges(tx: &mut impl Conn, repo_id: i64, put: &ManifestPut) -> StorageResult<()> {
    let edges = [
        (
            "manifest_blobs (repository_id, manifest_digest, blob_digest)",
            &put.blobs,
        ),
        (
            "manifest_children (repository_id, index_digest, child_digest)",
            &put.children,
        ),
    ];
    for (table, targets) in edges {
        let mut targets: Vec<&Digest> = targets.iter().collect();
        targets.sort();
        targets.dedup();
        for batch in targets.chunks(DIGESTS_PER_STATEMENT) {
            let rows: Vec<String> = (0..batch.len())
                .map(|i| format!("($1, $2, ${})", i + 3))
                .collect();
            let sql = format!(
                "INSERT INTO {table} VALUES {} ON CONFLICT DO NOTHING",
                rows.join(", ")
            );
            let q = query(sql).bind(repo_id).bind(&put.manifest.digest);
            tx.execute(batch.iter().fold(q, |q, d| q.bind(*d))).await?;
        }
    }
    Ok(())
}

/// Manifests of repository `$1` that nothing keeps: not reachable from a root (a tag,
/// or a manifest created at or after `$2`) through index children and attachments of
/// live subjects (the attachment itself and the manifest carrying the index row, e.g. a
/// referrers fallback index). With `$3`, an attachment tag whose subject is a manifest of
/// the repository is no root: it follows its subject; and so does an attachment younger
/// than the cutoff, or a signature pushed a moment before its untagged subject was
/// collected would outlive it as a dangling root for ever. (One recursive term over the union
/// of the edges: the form both SQLite and PostgreSQL accept.)
const UNREACHABLE_MANIFESTS: &str = "
WITH RECURSIVE live(digest) AS (
    SELECT t.digest FROM tags t
     WHERE t.repository_id = $1
       AND NOT ($3 AND EXISTS (
           SELECT 1 FROM attachments a
             JOIN manifests s ON s.repository_id = a.repository_id AND s.digest = a.subject
            WHERE a.repository_id = $1 AND a.tag = t.name
              AND a.source IN ('tag', 'fallback-tag')))
    UNION
    SELECT m.digest FROM manifests m
     WHERE m.repository_id = $1 AND m.created_at >= $2
       AND NOT ($3 AND EXISTS (
           SELECT 1 FROM attachments a
             JOIN manifests s ON s.repository_id = a.repository_id AND s.digest = a.subject
            WHERE a.repository_id = $1 AND (a.attachment = m.digest OR a.carrier = m.digest)))
    UNION
    SELECT e.target FROM (
        SELECT c.index_digest AS source, c.child_digest AS target
          FROM manifest_children c WHERE c.repository_id = $1
        UNION ALL
        SELECT a.subject, a.attachment FROM attachments a WHERE a.repository_id = $1
        UNION ALL
        SELECT a.subject, a.carrier FROM attachments a WHERE a.repository_id = $1
    ) e JOIN live l ON e.source = l.digest
)
SELECT digest FROM manifests
 WHERE repository_id = $1 AND digest NOT IN (SELECT digest FROM live)
 ORDER BY digest";

#[async_trait]
impl<E: Engine> MetadataStore for SqlMetadata<E> {
    async fn ping(&self) -> StorageResult<()> {
        self.engine
            .readers()
            .fetch(query("SELECT 1 AS one"))
            .await?;
        Ok(())
    }

    fn change_token(&self) -> Option<super::ChangeToken> {
        self.engine.change_token()
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

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> StorageResult<()> {
        let mut tx = self.engine.begin(Access::Push).await?;
        let repo_id = ensure_repo(&mut tx, repo).await?;
        // GC removed the row and is deleting the bytes: refuse (dropping `tx` rolls back).
        refuse_tombstoned(&mut tx, digest).await?;
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
        touch_link(&mut tx, repo_id, digest, at).await?;
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

    async fn put_manifest(&self, put: &ManifestPut) -> StorageResult<()> {
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
        for tag in &put.tags {
            let current = current_tag(&mut tx, repo_id, tag).await?;
            if let Some(condition) = &put.condition {
                condition.check(current.as_deref())?;
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
            }
        }
        let described =
            describe_entries(&mut tx, repo_id, rules::entries_to_describe(put, &moved)).await?;
        for row in rules::put_rows(put, &moved, &described) {
            insert_attachment(&mut tx, repo_id, row, at).await?;
        }
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

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        with_attachments: bool,
    ) -> StorageResult<Vec<Digest>> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(Vec::new());
        };
        let mut tx = self.engine.begin(Access::Push).await?;
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
        let mut deleted = Vec::new();
        for d in &doomed {
            // Tags, edges and the attachment rows it carries go with it (ON DELETE CASCADE).
            let q = query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
                .bind(repo_id)
                .bind(d);
            if tx.execute(q).await? > 0 {
                deleted.push(parse_digest(d)?);
            } else if d == &doomed[0] {
                return Ok(Vec::new());
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<bool> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(false);
        };
        let mut tx = self.engine.begin(Access::Push).await?;
        lock_tags::<E>(&mut tx, repo_id).await?;
        let done = tx
            .execute(
                query("DELETE FROM tags WHERE repository_id = $1 AND name = $2")
                    .bind(repo_id)
                    .bind(tag.as_str()),
            )
            .await?;
        forget_tag_attachments(&mut tx, repo_id, tag).await?;
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
                    a.created_at, m.media_type, m.size, m.annotations
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
              WHERE a.repository_id = $1 AND (a.attachment = $2 OR a.carrier = $2)
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
        let q = query("DELETE FROM blob_pins WHERE digest = $1 AND token = $2")
            .bind(digest)
            .bind(token);
        self.engine.writer().execute(q).await?;
        Ok(())
    }

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
        // (or used by manifests since deleted).
        let q = query(
            "DELETE FROM repository_blobs AS rb
              WHERE rb.created_at < $1
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb
                                 WHERE mb.repository_id = rb.repository_id AND mb.blob_digest = rb.digest)
             RETURNING repository_id, digest",
        )
        .bind(plan.cutoff);
        for row in tx.fetch(q).await? {
            let name = names
                .get(&row.i64("repository_id")?)
                .cloned()
                .unwrap_or_default();
            sweep.links.push((name, row.digest("digest")?));
        }
        sweep.links.sort();

        tx.execute(
            query("DELETE FROM blob_pins WHERE created_at < $1").bind(plan.stale_pin_cutoff),
        )
        .await?;
        // Blob rows nothing references, old enough, and not being placed by an upload:
        // each becomes a tombstone in the same transaction.
        let q = query(
            "DELETE FROM blobs AS b
              WHERE b.created_at < $1
                AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.blob_digest = b.digest)
                AND NOT EXISTS (SELECT 1 FROM blob_pins p WHERE p.digest = b.digest)
             RETURNING digest, size",
        )
        .bind(plan.cutoff);
        let at = now();
        for row in tx.fetch(q).await? {
            let digest = row.digest("digest")?;
            tx.execute(
                query("INSERT INTO blob_deletions (digest, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(&digest)
                    .bind(at),
            )
            .await?;
            sweep.blobs.push((digest, row.i64("size")? as u64));
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
        let q = query("SELECT digest FROM blob_deletions ORDER BY digest");
        let rows = self.engine.writer().fetch(q).await?;
        rows.iter().map(|r| r.digest("digest")).collect()
    }

    async fn clear_blob_deletion(&self, digest: &Digest) -> StorageResult<()> {
        let q = query("DELETE FROM blob_deletions WHERE digest = $1").bind(digest);
        self.engine.writer().execute(q).await?;
        Ok(())
    }

    async fn export_blob_rows(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StorageResult<Vec<BlobRow>> {
        let q = query(
            "SELECT digest, size, created_at FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit));
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter()
            .map(|r| {
                Ok(BlobRow {
                    digest: r.digest("digest")?,
                    size: r.i64("size")? as u64,
                    created_at: r.i64("created_at")?,
                })
            })
            .collect()
    }

    async fn export_repository(&self, name: &str) -> StorageResult<Option<RepositoryExport>> {
        // One read transaction: the export is a consistent snapshot of the repository.
        let mut tx = self.engine.begin(Access::Write).await?;
        let Some(repo) = tx
            .first(query("SELECT id, created_at FROM repositories WHERE name = $1").bind(name))
            .await?
        else {
            return Ok(None);
        };
        let (id, created_at) = (repo.i64("id")?, repo.i64("created_at")?);
        let mut tables = Vec::new();
        for (table, columns, order) in EXPORTED_TABLES {
            let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
            let sql = format!(
                "SELECT {} FROM {table} WHERE repository_id = $1 ORDER BY {order}",
                names.join(", ")
            );
            let rows = tx.fetch(query(sql).bind(id)).await?;
            let rows = rows
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .map(|(c, kind)| read_column(row, c, *kind))
                        .collect::<StorageResult<Vec<_>>>()
                })
                .collect::<StorageResult<Vec<_>>>()?;
            tables.push(ExportTable {
                table: table.to_string(),
                columns: names.iter().map(|c| c.to_string()).collect(),
                rows,
            });
        }
        tx.rollback().await?;
        Ok(Some(RepositoryExport {
            name: name.to_string(),
            created_at,
            tables,
        }))
    }

    async fn import_blob_rows(&self, rows: &[BlobRow]) -> StorageResult<u64> {
        let mut tx = self.engine.begin(Access::Push).await?;
        let mut inserted = 0;
        for row in rows {
            inserted += tx
                .execute(
                    query(
                        "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3)
                         ON CONFLICT (digest) DO NOTHING",
                    )
                    .bind(&row.digest)
                    .bind(row.size as i64)
                    .bind(row.created_at),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn import_repository(&self, export: &RepositoryExport) -> StorageResult<u64> {
        let mut tx = self.engine.begin(Access::Push).await?;
        let mut inserted = tx
            .execute(
                query(
                    "INSERT INTO repositories (name, created_at) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(export.name.as_str())
                .bind(export.created_at),
            )
            .await?;
        let repo_id = tx
            .first(query("SELECT id FROM repositories WHERE name = $1").bind(export.name.as_str()))
            .await?
            .ok_or_else(|| StorageError::Other(format!("repository {} vanished", export.name)))?
            .i64("id")?;
        for table in &export.tables {
            // Only the tables and columns this module exports: names go into SQL text.
            let known = EXPORTED_TABLES
                .iter()
                .find(|(name, _, _)| *name == table.table)
                .filter(|(_, columns, _)| {
                    columns.len() == table.columns.len()
                        && columns.iter().zip(&table.columns).all(|((c, _), t)| c == t)
                });
            if known.is_none() {
                return Err(StorageError::Other(format!(
                    "cannot import table {} with columns {:?}",
                    table.table, table.columns
                )));
            }
            let placeholders: Vec<String> = (2..table.columns.len() + 2)
                .map(|i| format!("${i}"))
                .collect();
            let sql = format!(
                "INSERT INTO {} (repository_id, {}) VALUES ($1, {}) ON CONFLICT DO NOTHING",
                table.table,
                table.columns.join(", "),
                placeholders.join(", ")
            );
            for row in &table.rows {
                let q = row.iter().fold(query(sql.clone()).bind(repo_id), |q, v| {
                    q.bind(match v {
                        ExportValue::Null => Arg::Text(None),
                        ExportValue::Int(i) => Arg::I64(*i),
                        ExportValue::Text(t) => Arg::Text(Some(t.clone())),
                        ExportValue::Bytes(b) => Arg::Bytes(b.clone()),
                    })
                });
                inserted += tx.execute(q).await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn rebuild_manifest_rows(&self, put: &ManifestPut) -> StorageResult<bool> {
        let m = &put.manifest;
        let mut tx = self.engine.begin(Access::Push).await?;
        let Some(repo) = tx
            .first(query("SELECT id FROM repositories WHERE name = $1").bind(put.repo.as_str()))
            .await?
        else {
            return Ok(false);
        };
        let repo_id = repo.i64("id")?;
        // Tags do not move while the rows they imply are rebuilt.
        lock_tags::<E>(&mut tx, repo_id).await?;
        let present = tx
            .exists(
                query("SELECT 1 AS one FROM manifests WHERE repository_id = $1 AND digest = $2")
                    .bind(repo_id)
                    .bind(&m.digest),
            )
            .await?;
        if !present {
            tx.rollback().await?;
            return Ok(false);
        }
        for sql in [
            "DELETE FROM manifest_blobs WHERE repository_id = $1 AND manifest_digest = $2",
            "DELETE FROM manifest_children WHERE repository_id = $1 AND index_digest = $2",
            "DELETE FROM attachments WHERE repository_id = $1 AND carrier = $2 AND source <> 'extension'",
        ] {
            tx.execute(query(sql).bind(repo_id).bind(&m.digest)).await?;
        }
        insert_edges(&mut tx, repo_id, put).await?;
        let tags = tx
            .fetch(
                query(
                    "SELECT name FROM tags WHERE repository_id = $1 AND digest = $2 ORDER BY name",
                )
                .bind(repo_id)
                .bind(&m.digest),
            )
            .await?
            .iter()
            .map(|row| row.text("name"))
            .collect::<StorageResult<Vec<_>>>()?
            .into_iter()
            .filter_map(|name| name.parse::<Tag>().ok())
            .collect::<Vec<_>>();
        let described =
            describe_entries(&mut tx, repo_id, rules::entries_to_describe(put, &tags)).await?;
        let rows = rules::put_rows(put, &tags, &described);
        let at = now();
        for row in rows {
            insert_attachment(&mut tx, repo_id, row, at).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn list_atomic_signatures(
        &self,
        repo: &RepoName,
        manifest: &Digest,
    ) -> StorageResult<Vec<AtomicSignature>> {
        let q = query(
            "SELECT s.signature_id, s.content FROM atomic_signatures s
               JOIN repositories r ON r.id = s.repository_id
              WHERE r.name = $1 AND s.manifest_digest = $2 ORDER BY s.seq",
        )
        .bind(repo.as_str())
        .bind(manifest);
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter()
            .map(|row| {
                Ok(AtomicSignature {
                    id: row.text("signature_id")?,
                    content: Bytes::from(row.bytes("content")?),
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
        let mut tx = self.engine.begin(Access::Push).await?;
        let q = query(
            "SELECT r.id FROM repositories r JOIN manifests m ON m.repository_id = r.id
              WHERE r.name = $1 AND m.digest = $2",
        )
        .bind(repo.as_str())
        .bind(manifest);
        let repo_id = tx
            .first(q)
            .await?
            .ok_or(StorageError::NotFound)?
            .i64("id")?;
        // Insert first: of two writers of the same id, one inserts and the other finds
        // its row (and compares), however they interleave.
        let at = now();
        let inserted = tx
            .execute(
                query(
                    "INSERT INTO atomic_signatures (repository_id, manifest_digest, signature_id, content, created_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (repository_id, manifest_digest, signature_id) DO NOTHING",
                )
                .bind(repo_id)
                .bind(manifest)
                .bind(signature.id.as_str())
                .bind(signature.content.as_ref())
                .bind(at),
            )
            .await?;
        if inserted == 0 {
            let q = query(
                "SELECT content FROM atomic_signatures
                  WHERE repository_id = $1 AND manifest_digest = $2 AND signature_id = $3",
            )
            .bind(repo_id)
            .bind(manifest)
            .bind(signature.id.as_str());
            let same = match tx.first(q).await? {
                Some(row) => row.bytes("content")? == signature.content.as_ref(),
                None => false,
            };
            return if same {
                Ok(SignatureStored::AlreadyPresent)
            } else {
                Err(StorageError::Conflict(format!(
                    "signature {} already holds different content",
                    signature.id
                )))
            };
        }
        let row = rules::atomic_signature_row(manifest, &signature.content);
        insert_attachment(&mut tx, repo_id, row, at).await?;
        tx.commit().await?;
        Ok(SignatureStored::Created)
    }

    async fn delete_atomic_signature(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        id: &str,
    ) -> StorageResult<bool> {
        let Some(repo_id) = repo_id(&self.engine, repo).await? else {
            return Ok(false);
        };
        let mut tx = self.engine.begin(Access::Push).await?;
        let q = query(
            "DELETE FROM atomic_signatures
              WHERE repository_id = $1 AND manifest_digest = $2 AND signature_id = $3
             RETURNING content",
        )
        .bind(repo_id)
        .bind(manifest)
        .bind(id);
        let Some(row) = tx.first(q).await? else {
            return Ok(false);
        };
        let attachment = rules::atomic_signature_row(manifest, &row.bytes("content")?).attachment;
        tx.execute(
            query(
                "DELETE FROM attachments WHERE repository_id = $1 AND subject = $2 AND attachment = $3
                   AND source = 'extension'",
            )
            .bind(repo_id)
            .bind(manifest)
            .bind(&attachment),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn get_verdict(
        &self,
        repo: &RepoName,
        subject: &Digest,
        attachment: &Digest,
    ) -> StorageResult<Option<StoredVerdict>> {
        let q = query(
            "SELECT v.subject, v.attachment, v.root, v.verdict, v.reason, v.predicate_type,
                    v.signer, v.fingerprint, v.checked_at
               FROM verdicts v JOIN repositories r ON r.id = v.repository_id
              WHERE r.name = $1 AND v.subject = $2 AND v.attachment = $3",
        )
        .bind(repo.as_str())
        .bind(subject)
        .bind(attachment);
        let Some(row) = self.engine.readers().first(q).await? else {
            return Ok(None);
        };
        Ok(Some(StoredVerdict {
            subject: row.digest("subject")?,
            attachment: row.digest("attachment")?,
            root: Some(row.text("root")?).filter(|r| !r.is_empty()),
            verdict: row.text("verdict")?,
            reason: row.opt_text("reason")?,
            predicate_type: row.opt_text("predicate_type")?,
            signer: row.opt_text("signer")?,
            fingerprint: row.text("fingerprint")?,
            checked_at: row.i64("checked_at")?,
        }))
    }

    async fn put_verdict(&self, repo: &RepoName, v: &StoredVerdict) -> StorageResult<bool> {
        // One statement: the row is written only while an attachment row names it, so
        // a verdict reached after its attachment went leaves nothing behind.
        let q = query(
            "INSERT INTO verdicts (repository_id, subject, attachment, root, verdict, reason,
                                   predicate_type, signer, fingerprint, checked_at)
             SELECT r.id, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM repositories r
              WHERE r.name = $1 AND EXISTS (
                    SELECT 1 FROM attachments a
                     WHERE a.repository_id = r.id AND a.subject = $2 AND a.attachment = $3)
             ON CONFLICT (repository_id, subject, attachment) DO UPDATE SET
                 root = excluded.root, verdict = excluded.verdict, reason = excluded.reason,
                 predicate_type = excluded.predicate_type, signer = excluded.signer,
                 fingerprint = excluded.fingerprint, checked_at = excluded.checked_at",
        )
        .bind(repo.as_str())
        .bind(&v.subject)
        .bind(&v.attachment)
        .bind(v.root.as_deref().unwrap_or_default())
        .bind(v.verdict.as_str())
        .bind(v.reason.clone())
        .bind(v.predicate_type.clone())
        .bind(v.signer.clone())
        .bind(v.fingerprint.as_str())
        .bind(v.checked_at);
        Ok(self.engine.writer().execute(q).await? > 0)
    }

    async fn unverified_attachments(
        &self,
        fingerprint: &str,
        limit: u32,
    ) -> StorageResult<Vec<UnverifiedAttachment>> {
        let q = query(
            "SELECT DISTINCT r.name AS repository, a.subject, a.attachment, a.format
               FROM attachments a
               JOIN repositories r ON r.id = a.repository_id
               LEFT JOIN verdicts v ON v.repository_id = a.repository_id
                    AND v.subject = a.subject AND v.attachment = a.attachment
              WHERE a.kind IN ('signature', 'attestation')
                AND (v.fingerprint IS NULL OR v.fingerprint <> $1)
              ORDER BY r.name, a.subject, a.attachment
              LIMIT $2",
        )
        .bind(fingerprint)
        .bind(i64::from(limit));
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter()
            .map(|row| {
                Ok(UnverifiedAttachment {
                    repo: row.text("repository")?,
                    subject: row.digest("subject")?,
                    attachment: row.digest("attachment")?,
                    format: row.text("format")?,
                })
            })
            .collect()
    }

    async fn orphan_verdicts(&self) -> StorageResult<Vec<(String, Digest, Digest)>> {
        let q = query(
            "SELECT COALESCE(r.name, '') AS repository, v.subject, v.attachment
               FROM verdicts v LEFT JOIN repositories r ON r.id = v.repository_id
              WHERE NOT EXISTS (
                    SELECT 1 FROM attachments a
                     WHERE a.repository_id = v.repository_id
                       AND a.subject = v.subject AND a.attachment = v.attachment)
              ORDER BY repository, v.subject, v.attachment",
        );
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.text("repository")?,
                    row.digest("subject")?,
                    row.digest("attachment")?,
                ))
            })
            .collect()
    }

    async fn delete_orphan_verdicts(&self) -> StorageResult<u64> {
        let q = query(
            "DELETE FROM verdicts WHERE NOT EXISTS (
                 SELECT 1 FROM attachments a
                  WHERE a.repository_id = verdicts.repository_id
                    AND a.subject = verdicts.subject AND a.attachment = verdicts.attachment)",
        );
        self.engine.writer().execute(q).await
    }
}

/// Serialises tag moves of one repository (two conditional PUTs of one tag must not both
/// see it absent): its row, locked where the engine has row locks.
async fn lock_tags<E: Engine>(tx: &mut E::Tx, repo_id: i64) -> StorageResult<()> {
    if !E::LOCK_ROWS.is_empty() {
        let q = query(format!(
            "SELECT id FROM repositories WHERE id = $1{}",
            E::LOCK_ROWS
        ))
        .bind(repo_id);
        tx.fetch(q).await?;
    }
    Ok(())
}

/// Where `tag` points now (the caller holds [`lock_tags`]).
async fn current_tag(tx: &mut impl Conn, repo_id: i64, tag: &Tag) -> StorageResult<Option<String>> {
    let q = query("SELECT digest FROM tags WHERE repository_id = $1 AND name = $2")
        .bind(repo_id)
        .bind(tag.as_str());
    tx.first(q).await?.map(|r| r.text("digest")).transpose()
}

/// Removes the attachment rows `tag` made: it moved or is gone.
async fn forget_tag_attachments(tx: &mut impl Conn, repo_id: i64, tag: &Tag) -> StorageResult<()> {
    tx.execute(
        query("DELETE FROM attachments WHERE repository_id = $1 AND tag = $2")
            .bind(repo_id)
            .bind(tag.as_str()),
    )
    .await?;
    Ok(())
}

/// How a column is read back for an export.
#[derive(Debug, Clone, Copy)]
enum Col {
    Int,
    Text,
    OptText,
    Bytes,
}

/// The per-repository tables `export_repository` copies, in import order (a row's
/// foreign keys point at tables before it), with their columns (the repository id
/// aside) and a stable order. Atomic signatures keep the order they were added in:
/// they are inserted in `seq` order and the target assigns its own `seq`.
/// A table name, its columns and their kinds, its `ORDER BY`.
type ExportedTable = (&'static str, &'static [(&'static str, Col)], &'static str);

const EXPORTED_TABLES: &[ExportedTable] = &[
    (
        "repository_blobs",
        &[("digest", Col::Text), ("created_at", Col::Int)],
        "digest",
    ),
    (
        "manifests",
        &[
            ("digest", Col::Text),
            ("media_type", Col::Text),
            ("size", Col::Int),
            ("content", Col::Bytes),
            ("artifact_type", Col::OptText),
            ("subject", Col::OptText),
            ("annotations", Col::OptText),
            ("created_at", Col::Int),
        ],
        "digest",
    ),
    (
        "tags",
        &[
            ("name", Col::Text),
            ("digest", Col::Text),
            ("updated_at", Col::Int),
        ],
        "name",
    ),
    (
        "manifest_blobs",
        &[("manifest_digest", Col::Text), ("blob_digest", Col::Text)],
        "manifest_digest, blob_digest",
    ),
    (
        "manifest_children",
        &[("index_digest", Col::Text), ("child_digest", Col::Text)],
        "index_digest, child_digest",
    ),
    (
        "atomic_signatures",
        &[
            ("manifest_digest", Col::Text),
            ("signature_id", Col::Text),
            ("content", Col::Bytes),
            ("created_at", Col::Int),
        ],
        "seq",
    ),
    (
        "attachments",
        &[
            ("subject", Col::Text),
            ("attachment", Col::Text),
            ("kind", Col::Text),
            ("source", Col::Text),
            ("format", Col::Text),
            ("artifact_type", Col::OptText),
            ("tag", Col::OptText),
            ("carrier", Col::Text),
            ("created_at", Col::Int),
        ],
        "subject, attachment, source",
    ),
];

fn read_column(row: &impl RowExt, column: &str, kind: Col) -> StorageResult<ExportValue> {
    Ok(match kind {
        Col::Int => ExportValue::Int(row.i64(column)?),
        Col::Text => ExportValue::Text(row.text(column)?),
        Col::OptText => row
            .opt_text(column)?
            .map_or(ExportValue::Null, ExportValue::Text),
        Col::Bytes => ExportValue::Bytes(row.bytes(column)?),
    })
}
