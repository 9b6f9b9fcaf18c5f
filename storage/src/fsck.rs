//! `signet fsck`: checks the invariants of a store pair and, with `repair`, fixes what
//! is safe to fix.
//!
//! Checked: every `blobs` row's bytes exist and hash to its address; every manifest's
//! bytes hash to its digest, parse, and its edges (`manifest_blobs`,
//! `manifest_children`) and the attachment rows it carries agree with a fresh parse of
//! them (by the rules of a PUT, `meta::rules`); the blobs and children it
//! references exist; every tag points at a manifest of its repository; every upload
//! session's staged bytes exist (its parts, or its staged file or multipart tail holding
//! as many bytes as it received); every staging folder under `uploads/` belongs to a
//! session (or is younger than the upload expiry: a push may be writing it); every
//! stored verification verdict belongs to an attachment row.
//!
//! Repair only rebuilds derived rows from manifest bytes
//! ([`crate::meta::Transfer::rebuild_manifest_rows`]) and removes orphaned staging data,
//! sessions whose parts are gone and verdicts whose attachment is gone. It never deletes a blob, a blob row or a manifest:
//! corrupt or missing bytes, unparsable manifests and dangling tags stay reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::attachments::AttachmentSource;
use crate::blobs::BlobStore;
use crate::digest::{Digest, DigestHasher};
use crate::error::{StorageError, StorageResult};
use crate::manifest::parse_manifest;
use crate::meta::rules::{self, EntryDescription};
use crate::meta::{schema, ExportTable, ExportValue, ManifestPut, MetadataStore, Page};
use crate::names::{RepoName, Tag};

/// What [`check`] is asked to do.
#[derive(Debug, Clone, Default)]
pub struct FsckOptions {
    /// Fix what is safe to fix (see the module documentation).
    pub repair: bool,
    /// Staging folders that belong to no session are orphaned once nothing was written
    /// to them for this long (the upload expiry: a push may still be writing younger
    /// ones).
    pub staging_grace_secs: u64,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FsckProblem {
    /// `blob-missing`, `blob-corrupt`, `blob-size`, `manifest-corrupt`,
    /// `manifest-invalid`, `manifest-missing-reference`, `manifest-descriptor-size`, `manifest-edges`,
    /// `attachment-rows`, `tag-dangling`, `upload-missing-parts`, `staging-orphaned`,
    /// `verdict-orphaned`.
    pub kind: String,
    /// What it is about: a digest, `repository@digest`, `repository:tag`, a session id.
    pub subject: String,
    pub detail: String,
    /// Fixed by this run (`repair`).
    pub repaired: bool,
}

/// What [`check`] found (and fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FsckReport {
    pub repair: bool,
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub manifests_checked: u64,
    pub tags_checked: u64,
    pub uploads_checked: u64,
    pub staging_folders_checked: u64,
    pub problems: Vec<FsckProblem>,
}

impl FsckReport {
    /// Problems this run did not fix.
    pub fn remaining(&self) -> usize {
        self.problems.iter().filter(|p| !p.repaired).count()
    }

    pub fn is_clean(&self) -> bool {
        self.remaining() == 0
    }

    fn problem(&mut self, kind: &str, subject: impl Into<String>, detail: impl Into<String>) {
        self.problems.push(FsckProblem {
            kind: kind.to_string(),
            subject: subject.into(),
            detail: detail.into(),
            repaired: false,
        });
    }

    fn mark_repaired(&mut self) {
        if let Some(p) = self.problems.last_mut() {
            p.repaired = true;
        }
    }
}

const BLOB_PAGE: u32 = 500;

/// Checks the whole store pair; with `options.repair`, fixes what is safe.
pub async fn check(
    meta: &Arc<dyn MetadataStore>,
    blobs: &BlobStore,
    options: &FsckOptions,
) -> StorageResult<FsckReport> {
    let mut report = FsckReport {
        repair: options.repair,
        ..FsckReport::default()
    };
    check_blobs(meta, blobs, &mut report).await?;
    check_repositories(meta, options, &mut report).await?;
    check_uploads(meta, blobs, options, &mut report).await?;
    check_verdicts(meta, options, &mut report).await?;
    Ok(report)
}

/// Verdict rows go with their attachment row (a trigger in the schema); one left
/// behind would be shown for an attachment pushed again under the same digest.
async fn check_verdicts(
    meta: &Arc<dyn MetadataStore>,
    options: &FsckOptions,
    report: &mut FsckReport,
) -> StorageResult<()> {
    let orphans = meta.orphan_verdicts().await?;
    if orphans.is_empty() {
        return Ok(());
    }
    for (repo, subject, attachment) in &orphans {
        report.problem(
            "verdict-orphaned",
            format!("{repo}@{attachment}"),
            format!("a stored verdict on an attachment of {subject} that is no longer attached"),
        );
    }
    if options.repair {
        meta.delete_orphan_verdicts().await?;
        let n = orphans.len();
        for p in report.problems.iter_mut().rev().take(n) {
            p.repaired = true;
        }
    }
    Ok(())
}

/// Streams every blob of the `blobs` table and hashes it, a page of rows at a time:
/// memory stays flat however many blobs the store holds.
async fn check_blobs(
    meta: &Arc<dyn MetadataStore>,
    blobs: &BlobStore,
    report: &mut FsckReport,
) -> StorageResult<()> {
    let mut after: Option<String> = None;
    loop {
        let page = meta.export_blob_rows(after.as_deref(), BLOB_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest.to_string());
        for row in page {
            report.blobs_checked += 1;
            let subject = row.digest.to_string();
            match blobs.get(&row.digest, None).await {
                Err(StorageError::NotFound) => {
                    report.problem("blob-missing", subject, "no bytes for this blobs row");
                }
                Err(e) => return Err(e),
                Ok(mut body) => {
                    let mut hasher = DigestHasher::new(row.digest.algorithm());
                    let mut size = 0u64;
                    while let Some(frame) = body.stream.next().await {
                        let frame = frame?;
                        size += frame.len() as u64;
                        hasher.update(&frame);
                    }
                    report.bytes_checked += size;
                    let actual = hasher.finish();
                    if actual != row.digest {
                        report.problem(
                            "blob-corrupt",
                            subject,
                            format!("the bytes hash to {actual}"),
                        );
                    } else if size != row.size {
                        report.problem(
                            "blob-size",
                            subject,
                            format!("the row says {} bytes, the store holds {size}", row.size),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// A manifest as exported.
struct ManifestRow {
    digest: String,
    media_type: String,
    content: Vec<u8>,
    artifact_type: Option<String>,
    annotations: Option<String>,
}

/// One attachment row as compared: (subject, attachment, source, kind, format, tag).
type AttachmentKey = (String, String, String, String, String, Option<String>);

/// Each row of `table` by column name, one at a time (a large repository's edges are
/// never all held twice).
fn rows_of<'a>(
    tables: &'a [ExportTable],
    table: &'a schema::Table,
) -> impl Iterator<Item = HashMap<&'a str, &'a ExportValue>> + 'a {
    tables
        .iter()
        .filter(move |t| t.table == table.name)
        .flat_map(|t| {
            t.rows.iter().map(|row| {
                t.columns
                    .iter()
                    .map(String::as_str)
                    .zip(row.iter())
                    .collect::<HashMap<_, _>>()
            })
        })
}

fn text(row: &HashMap<&str, &ExportValue>, column: &str) -> Option<String> {
    match row.get(column) {
        Some(ExportValue::Text(s)) => Some(s.clone()),
        _ => None,
    }
}

fn bytes(row: &HashMap<&str, &ExportValue>, column: &str) -> Vec<u8> {
    match row.get(column) {
        Some(ExportValue::Bytes(b)) => b.clone(),
        Some(ExportValue::Text(s)) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}

async fn check_repositories(
    meta: &Arc<dyn MetadataStore>,
    options: &FsckOptions,
    report: &mut FsckReport,
) -> StorageResult<()> {
    let mut names = Vec::new();
    loop {
        let page = meta
            .list_repositories(Page {
                last: names.last().map(String::as_str),
                limit: Some(1000),
            })
            .await?;
        if page.is_empty() {
            break;
        }
        names.extend(page);
    }
    // The tables checked here; not the blob links (a row per blob pushed).
    let only = [
        schema::MANIFESTS.name,
        schema::TAGS.name,
        schema::MANIFEST_BLOBS.name,
        schema::MANIFEST_CHILDREN.name,
        schema::ATTACHMENTS.name,
    ];
    for name in names {
        let Some(export) = meta.export_repository(&name, Some(&only)).await? else {
            continue;
        };
        let Ok(repo) = name.parse::<RepoName>() else {
            report.problem("repository-name", &name, "not a valid repository name");
            continue;
        };
        check_repository(meta, &repo, &export.tables, options, report).await?;
    }
    Ok(())
}

async fn check_repository(
    meta: &Arc<dyn MetadataStore>,
    repo: &RepoName,
    tables: &[ExportTable],
    options: &FsckOptions,
    report: &mut FsckReport,
) -> StorageResult<()> {
    let manifests: Vec<ManifestRow> = rows_of(tables, &schema::MANIFESTS)
        .map(|r| ManifestRow {
            digest: text(&r, schema::manifests::DIGEST).unwrap_or_default(),
            media_type: text(&r, schema::manifests::MEDIA_TYPE).unwrap_or_default(),
            content: bytes(&r, schema::manifests::CONTENT),
            artifact_type: text(&r, schema::manifests::ARTIFACT_TYPE),
            annotations: text(&r, schema::manifests::ANNOTATIONS),
        })
        .collect();
    let present: BTreeSet<&str> = manifests.iter().map(|m| m.digest.as_str()).collect();
    let manifest_sizes: HashMap<&str, u64> = manifests
        .iter()
        .map(|m| (m.digest.as_str(), m.content.len() as u64))
        .collect();
    type Description<'a> = (Option<String>, BTreeMap<String, String>, &'a [u8]);
    let descriptions: HashMap<&str, Description<'_>> = manifests
        .iter()
        .map(|m| {
            let annotations = m
                .annotations
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default();
            (
                m.digest.as_str(),
                (m.artifact_type.clone(), annotations, &m.content[..]),
            )
        })
        .collect();

    let mut tags_of: HashMap<String, Vec<String>> = HashMap::new();
    for t in rows_of(tables, &schema::TAGS) {
        report.tags_checked += 1;
        let (tag, digest) = (
            text(&t, schema::tags::NAME).unwrap_or_default(),
            text(&t, schema::tags::DIGEST).unwrap_or_default(),
        );
        if !present.contains(digest.as_str()) {
            report.problem(
                "tag-dangling",
                format!("{repo}:{tag}"),
                format!("points at {digest}, which the repository does not hold"),
            );
        }
        tags_of.entry(digest).or_default().push(tag);
    }
    let mut edges: HashMap<String, BTreeSet<String>> = HashMap::new();
    for e in rows_of(tables, &schema::MANIFEST_BLOBS) {
        let (m, b) = (
            text(&e, schema::manifest_blobs::MANIFEST),
            text(&e, schema::manifest_blobs::BLOB),
        );
        edges
            .entry(m.unwrap_or_default())
            .or_default()
            .insert(format!("blob {}", b.unwrap_or_default()));
    }
    for e in rows_of(tables, &schema::MANIFEST_CHILDREN) {
        let (m, c) = (
            text(&e, schema::manifest_children::INDEX),
            text(&e, schema::manifest_children::CHILD),
        );
        edges
            .entry(m.unwrap_or_default())
            .or_default()
            .insert(format!("child {}", c.unwrap_or_default()));
    }
    let mut carried: HashMap<String, BTreeSet<AttachmentKey>> = HashMap::new();
    for a in rows_of(tables, &schema::ATTACHMENTS) {
        let source = text(&a, schema::attachments::SOURCE).unwrap_or_default();
        if source == AttachmentSource::Extension.as_str() {
            continue;
        }
        carried
            .entry(text(&a, schema::attachments::CARRIER).unwrap_or_default())
            .or_default()
            .insert((
                text(&a, schema::attachments::SUBJECT).unwrap_or_default(),
                text(&a, schema::attachments::ATTACHMENT).unwrap_or_default(),
                source,
                text(&a, schema::attachments::KIND).unwrap_or_default(),
                text(&a, schema::attachments::FORMAT).unwrap_or_default(),
                text(&a, schema::attachments::TAG),
            ));
    }
    for stray in carried.keys().filter(|c| !present.contains(c.as_str())) {
        report.problem(
            "attachment-rows",
            format!("{repo}@{stray}"),
            "attachment rows carried by a manifest the repository does not hold",
        );
    }

    for m in &manifests {
        report.manifests_checked += 1;
        let subject = format!("{repo}@{}", m.digest);
        let Ok(digest) = m.digest.parse::<Digest>() else {
            report.problem("manifest-invalid", subject, "the digest does not parse");
            continue;
        };
        let actual = Digest::of(digest.algorithm(), &m.content);
        if actual != digest {
            report.problem(
                "manifest-corrupt",
                subject,
                format!("the stored bytes hash to {actual}"),
            );
            continue;
        }
        let parsed = match parse_manifest(&m.content, Some(&m.media_type)) {
            Ok(p) => p,
            Err(e) => {
                report.problem("manifest-invalid", subject, e.0);
                continue;
            }
        };
        let mut put = ManifestPut::derived(
            repo.clone(),
            digest.clone(),
            &parsed,
            Bytes::from(m.content.clone()),
        );
        let stored_edges = edges.remove(&m.digest).unwrap_or_default();
        // A mirror with a platform filter stores an index with the children it took: an
        // entry neither held nor an edge was left out on purpose, not lost.
        put.children.retain(|c| {
            present.contains(c.to_string().as_str()) || stored_edges.contains(&format!("child {c}"))
        });
        // The blob rows of what this manifest references, looked up for it alone.
        let referenced: Vec<Digest> = put
            .sizes
            .iter()
            .map(|(d, _)| d)
            .chain(&put.blobs)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        let blob_rows = meta.blob_sizes(&referenced).await?;
        for (d, declared) in &put.sizes {
            let stored = blob_rows
                .get(d)
                .copied()
                .or_else(|| manifest_sizes.get(d.to_string().as_str()).copied());
            if let Some(stored) = stored.filter(|s| s != declared) {
                report.problem(
                    "manifest-descriptor-size",
                    subject.clone(),
                    format!(
                        "a descriptor gives {d} {declared} bytes, the stored content has {stored}"
                    ),
                );
            }
        }
        for b in put.blobs.iter().filter(|b| !blob_rows.contains_key(b)) {
            report.problem(
                "manifest-missing-reference",
                subject.clone(),
                format!("references blob {b}, which has no blobs row"),
            );
        }
        for c in put
            .children
            .iter()
            .filter(|c| !present.contains(c.to_string().as_str()))
        {
            report.problem(
                "manifest-missing-reference",
                subject.clone(),
                format!("lists child {c}, which the repository does not hold"),
            );
        }

        // Edges.
        let expected_edges: BTreeSet<String> = put
            .blobs
            .iter()
            .map(|b| format!("blob {b}"))
            .chain(put.children.iter().map(|c| format!("child {c}")))
            .collect();
        let edges_ok = stored_edges == expected_edges;
        if !edges_ok {
            report.problem(
                "manifest-edges",
                subject.clone(),
                diff("edge", &expected_edges, &stored_edges),
            );
        }

        // Attachment rows, by the rules of a PUT.
        let tags: Vec<Tag> = tags_of
            .get(&m.digest)
            .into_iter()
            .flatten()
            .filter_map(|t| t.parse::<Tag>().ok())
            .collect();
        let entries: Vec<EntryDescription> = rules::entries_to_describe(&put, &tags)
            .iter()
            .filter_map(|d| {
                descriptions
                    .get(d.to_string().as_str())
                    .map(|(a, n, content)| EntryDescription {
                        digest: d.clone(),
                        artifact_type: a.clone(),
                        annotations: n.clone(),
                        predicate_types: crate::manifest::statement_predicate_types(content),
                    })
            })
            .collect();
        let expected = rules::put_rows(&put, &tags, &entries);
        let expected: BTreeSet<AttachmentKey> = expected
            .into_iter()
            .map(|r| {
                (
                    r.subject.to_string(),
                    r.attachment.to_string(),
                    r.source.as_str().to_string(),
                    r.kind.as_str().to_string(),
                    r.format.to_string(),
                    r.tag,
                )
            })
            .collect();
        let stored = carried.remove(&m.digest).unwrap_or_default();
        let attachments_ok = stored == expected;
        if !attachments_ok {
            let show = |s: &BTreeSet<AttachmentKey>| -> BTreeSet<String> {
                s.iter()
                    .map(|(s, a, src, k, f, t)| {
                        format!(
                            "{src} {k} {f} {a} of {s}{}",
                            t.as_deref()
                                .map(|t| format!(" tag {t}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            };
            report.problem(
                "attachment-rows",
                subject.clone(),
                diff("attachment row", &show(&expected), &show(&stored)),
            );
        }
        if options.repair
            && !(edges_ok && attachments_ok)
            && crate::Registry::new(meta.clone())
                .rebuild_manifest_rows(&put)
                .await?
        {
            let fixed = usize::from(!edges_ok) + usize::from(!attachments_ok);
            let n = report.problems.len();
            for p in &mut report.problems[n - fixed..] {
                p.repaired = true;
            }
        }
    }
    for stray in edges.keys() {
        report.problem(
            "manifest-edges",
            format!("{repo}@{stray}"),
            "edges of a manifest the repository does not hold",
        );
    }
    Ok(())
}

fn diff(what: &str, expected: &BTreeSet<String>, stored: &BTreeSet<String>) -> String {
    let missing: Vec<&String> = expected.difference(stored).collect();
    let extra: Vec<&String> = stored.difference(expected).collect();
    let mut out = Vec::new();
    if !missing.is_empty() {
        out.push(format!(
            "missing {what}s: {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !extra.is_empty() {
        out.push(format!(
            "unexpected {what}s: {}",
            extra
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.join("; ")
}

/// Whether a session's bytes are at their address already: a final request placed them
/// (moving the staging) and then failed before the session was closed, the database
/// gone. Its staging is gone by design: a final PUT again finds the blob there, and
/// expiry closes the session.
async fn bytes_placed(
    blobs: &BlobStore,
    session: &crate::meta::UploadSession,
) -> StorageResult<bool> {
    let Some(progress) = &session.progress else {
        return Ok(false);
    };
    for algorithm in [crate::Algorithm::Sha256, crate::Algorithm::Sha512] {
        if let Some(digest) = progress.running_digest(algorithm).ok().flatten() {
            if blobs.size(&digest).await? == Some(session.size) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

async fn check_uploads(
    meta: &Arc<dyn MetadataStore>,
    blobs: &BlobStore,
    options: &FsckOptions,
    report: &mut FsckReport,
) -> StorageResult<()> {
    // Every session (`updated_at` is before the end of time).
    let sessions = meta.uploads_idle_since(i64::MAX).await?;
    let mut live = BTreeSet::new();
    for session in &sessions {
        report.uploads_checked += 1;
        let mut problem = blobs.staging_problem(session).await?;
        // A request that moved the session on (or completed it) while it was being
        // looked at explains what looked wrong: only a session that stood still counts.
        if problem.is_some() && !stood_still(meta, session).await? {
            problem = None;
        }
        if problem.is_some() && bytes_placed(blobs, session).await? {
            problem = None;
        }
        let Some(problem) = problem else {
            live.insert(session.id.clone());
            continue;
        };
        report.problem("upload-missing-parts", session.id.clone(), problem);
        if options.repair {
            meta.delete_upload(&session.id).await?;
            blobs.discard_session(&session.id).await?;
            report.mark_repaired();
        }
    }

    // Staging folders and the time of their last write (unix seconds).
    let folders = blobs.staging_folders().await?;
    let cutoff = crate::meta::now() - options.staging_grace_secs.min(i64::MAX as u64) as i64;
    for (session, last_write) in folders {
        report.staging_folders_checked += 1;
        if live.contains(&session) || sessions.iter().any(|s| s.id == session) {
            continue;
        }
        if last_write > cutoff {
            continue;
        }
        report.problem(
            "staging-orphaned",
            crate::blobs::paths::session(&session).to_string(),
            "staged data that belongs to no upload session",
        );
        if options.repair {
            blobs.discard_session(&session).await?;
            report.mark_repaired();
        }
    }
    Ok(())
}

/// Whether the session's row is as `seen` (same size, same last update).
async fn stood_still(
    meta: &Arc<dyn MetadataStore>,
    seen: &crate::meta::UploadSession,
) -> StorageResult<bool> {
    Ok(meta
        .get_upload(&seen.id)
        .await?
        .is_some_and(|now| now.size == seen.size && now.updated_at == seen.updated_at))
}
