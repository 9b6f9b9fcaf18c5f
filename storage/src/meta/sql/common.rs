//! What the SQL of several concerns shares: reading rows into records, the repository
//! row, links and tombstones, attachment rows and edges, batching, tag locks.

use std::collections::HashMap;

use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::manifest::statement_predicate_types;
use crate::meta::rules::{AttachmentRow, EntryDescription};
use crate::meta::*;
use crate::names::{RepoName, Tag};

use super::query::*;

pub(super) async fn repo_id<E: Engine>(engine: &E, repo: &RepoName) -> StorageResult<Option<i64>> {
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

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> StorageResult<String> {
    serde_json::to_string(value).map_err(|e| StorageError::Other(e.to_string()))
}

pub(super) fn parse_annotations(
    text: Option<String>,
) -> StorageResult<std::collections::BTreeMap<String, String>> {
    Ok(text
        .map(|a| serde_json::from_str(&a))
        .transpose()
        .map_err(|e| StorageError::Corrupt(format!("annotations: {e}")))?
        .unwrap_or_default())
}

pub(super) fn upload_from_row(row: &impl RowExt) -> StorageResult<UploadSession> {
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

pub(super) fn attachment_from_row(row: &impl RowExt) -> StorageResult<AttachmentRecord> {
    let corrupt = StorageError::Corrupt;
    Ok(AttachmentRecord {
        subject: row.digest("subject")?,
        attachment: row.digest("attachment")?,
        kind: row.text("kind")?.parse().map_err(corrupt)?,
        source: row.text("source")?.parse().map_err(corrupt)?,
        format: row.text("format")?.parse().map_err(corrupt)?,
        artifact_type: row.opt_text("artifact_type")?,
        tag: row.opt_text("tag")?,
        carrier: row.digest("carrier")?,
        created_at: row.i64("created_at")?,
        media_type: row.opt_text("media_type")?,
        size: row.opt_i64("size")?.map(|s| s as u64),
        annotations: parse_annotations(row.opt_text("annotations")?)?,
    })
}

/// `LIMIT` of a page; no limit is the largest one (SQLite's `-1` is no PostgreSQL's).
pub(super) fn page_limit(page: &Page<'_>) -> i64 {
    page.limit.map_or(i64::MAX, i64::from)
}

/// The id of `repo`, created if new. Looked up first: a push names a repository that
/// exists nearly always, and every statement is a round trip to the database (on SQLite,
/// a hand-off to its connection's thread and back).
pub(super) async fn ensure_repo(tx: &mut impl Conn, repo: &RepoName) -> StorageResult<i64> {
    let select = || query("SELECT id FROM repositories WHERE name = $1").bind(repo.as_str());
    if let Some(row) = tx.first(select()).await? {
        return row.i64("id");
    }
    // A concurrent push may create it first: then this inserts nothing and the lookup
    // below finds theirs (each statement reads what was committed before it began).
    tx.execute(
        query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(repo.as_str())
            .bind(now()),
    )
    .await?;
    let row = tx
        .first(select())
        .await?
        .ok_or_else(|| StorageError::Other(format!("repository {repo} vanished")))?;
    row.i64("id")
}

/// Fails with [`StorageError::BlobBeingDeleted`] while a tombstone names `digest`.
pub(super) async fn refuse_tombstoned(tx: &mut impl Conn, digest: &Digest) -> StorageResult<()> {
    let q = query("SELECT 1 AS one FROM blob_deletions WHERE digest = $1").bind(digest);
    if tx.exists(q).await? {
        Err(StorageError::BlobBeingDeleted(digest.clone()))
    } else {
        Ok(())
    }
}

/// Links `digest` into the repository (touching link and row: a blob pushed or mounted
/// again is inside the GC grace period).
pub(super) async fn touch_link(
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

pub(super) async fn insert_attachment(
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
        .bind(row.format.as_str())
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
pub(super) async fn describe_entries(
    tx: &mut impl Conn,
    repo_id: i64,
    entries: &[Digest],
) -> StorageResult<Vec<EntryDescription>> {
    let mut described = Vec::new();
    for digest in entries {
        let q = query(
            "SELECT artifact_type, annotations, content FROM manifests WHERE repository_id = $1 AND digest = $2",
        )
        .bind(repo_id)
        .bind(digest);
        if let Some(row) = tx.first(q).await? {
            described.push(EntryDescription {
                digest: digest.clone(),
                artifact_type: row.opt_text("artifact_type")?,
                annotations: parse_annotations(row.opt_text("annotations")?)?,
                predicate_types: statement_predicate_types(&row.bytes("content")?),
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
pub(super) const DIGESTS_PER_STATEMENT: usize = 400;

/// `{sql} ($1, …, $n)` with each of `digests` bound: a statement about a list of
/// digests (one chunk of at most [`DIGESTS_PER_STATEMENT`]).
pub(super) fn digests_in(sql: &str, digests: &[Digest]) -> Query {
    let q = query(format!("{sql} ({})", placeholders(1, digests.len())));
    digests.iter().fold(q, |q, digest| q.bind(digest))
}

/// `$from, $from+1, …`: `n` numbered placeholders.
pub(super) fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The blobs a repository holds, with their sizes (`$2...` the digests asked for).
pub(super) const BLOB_SIZES: &str =
    "SELECT rb.digest AS digest, b.size AS size FROM repository_blobs rb
    JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = $1 AND rb.digest IN";
/// The manifests a repository holds, with their sizes.
pub(super) const MANIFEST_SIZES: &str =
    "SELECT digest, size FROM manifests WHERE repository_id = $1 AND digest IN";

/// The sizes of those of `wanted` that `select` (one of the statements above) finds, by
/// digest, a batch of digests per statement.
pub(super) async fn stored_sizes(
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
pub(super) async fn insert_edges(
    tx: &mut impl Conn,
    repo_id: i64,
    put: &ManifestPut,
) -> StorageResult<()> {
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
pub(super) const UNREACHABLE_MANIFESTS: &str = "
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
            WHERE a.repository_id = $1
              AND (a.attachment = m.digest OR (a.carrier = m.digest AND a.source <> 'buildkit'))))
    UNION
    SELECT e.target FROM (
        SELECT c.index_digest AS source, c.child_digest AS target
          FROM manifest_children c WHERE c.repository_id = $1
        UNION ALL
        SELECT a.subject, a.attachment FROM attachments a WHERE a.repository_id = $1
        UNION ALL
        SELECT a.subject, a.carrier FROM attachments a
         WHERE a.repository_id = $1 AND a.source <> 'buildkit'
    ) e JOIN live l ON e.source = l.digest
)
SELECT digest FROM manifests
 WHERE repository_id = $1 AND digest NOT IN (SELECT digest FROM live)
 ORDER BY digest";

/// Serialises tag moves of one repository (two conditional PUTs of one tag must not both
/// see it absent): its row, locked where the engine has row locks.
pub(super) async fn lock_tags<E: Engine>(tx: &mut E::Tx, repo_id: i64) -> StorageResult<()> {
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
pub(super) async fn current_tag(
    tx: &mut impl Conn,
    repo_id: i64,
    tag: &Tag,
) -> StorageResult<Option<String>> {
    let q = query("SELECT digest FROM tags WHERE repository_id = $1 AND name = $2")
        .bind(repo_id)
        .bind(tag.as_str());
    tx.first(q).await?.map(|r| r.text("digest")).transpose()
}

/// Removes the attachment rows `tag` made: it moved or is gone.
pub(super) async fn forget_tag_attachments(
    tx: &mut impl Conn,
    repo_id: i64,
    tag: &Tag,
) -> StorageResult<()> {
    tx.execute(
        query("DELETE FROM attachments WHERE repository_id = $1 AND tag = $2")
            .bind(repo_id)
            .bind(tag.as_str()),
    )
    .await?;
    Ok(())
}
