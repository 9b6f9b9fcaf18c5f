//! Copying one store pair (metadata + blobs) into another, without re-pushing: what
//! `signet migrate` runs to move an embedded installation (SQLite + filesystem) to
//! PostgreSQL + S3, or between any two backends.
//!
//! Blobs first: every `blobs` row's bytes are streamed from the source blob store into
//! the target, verified against their digest as they are written
//! ([`BlobStore::put_verified`]), and only then is the row inserted. Then each
//! repository's rows (links, manifests with their exact bytes, tags, edges, atomic
//! signatures, attachment rows), one transaction per repository. Everything is keyed by
//! content or name, so a second run inserts nothing that is already there and copies no
//! blob the target already holds: an interrupted migration is simply run again.
//!
//! Sync jobs created through the admin API are copied last. Upload sessions in
//! progress and GC bookkeeping (tombstones, pins, the lease) are not
//! copied: stop the source first.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::blobs::BlobStore;
use crate::error::{StorageError, StorageResult};
use crate::meta::{BlobRow, ExportRows, MetadataStore, Page};

/// Blobs copied at once.
const PARALLEL_BLOBS: usize = 4;
const PAGE: u32 = 500;

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MigrationReport {
    /// Blobs whose bytes were copied (and verified).
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Blobs the target already held.
    pub blobs_present: u64,
    /// `blobs` rows inserted into the target.
    pub blob_rows_inserted: u64,
    pub repositories: u64,
    /// Rows of repositories, links, manifests, tags, edges, signatures and attachments
    /// inserted (0 when the target already had everything).
    pub rows_inserted: u64,
}

/// Copies everything `src_meta`/`src_blobs` hold into `dst_meta`/`dst_blobs`.
pub async fn copy(
    src_meta: &Arc<dyn MetadataStore>,
    src_blobs: &BlobStore,
    dst_meta: &Arc<dyn MetadataStore>,
    dst_blobs: &BlobStore,
) -> StorageResult<MigrationReport> {
    let mut report = MigrationReport::default();

    let mut after: Option<String> = None;
    loop {
        let rows = src_meta.export_blob_rows(after.as_deref(), PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.digest.to_string());
        let outcomes: Vec<Option<u64>> = futures::stream::iter(rows.iter())
            .map(|row| copy_blob(row, src_blobs, dst_blobs))
            .buffered(PARALLEL_BLOBS)
            .try_collect()
            .await?;
        for outcome in outcomes {
            match outcome {
                Some(bytes) => {
                    report.blobs_copied += 1;
                    report.bytes_copied += bytes;
                }
                None => report.blobs_present += 1,
            }
        }
        report.blob_rows_inserted += dst_meta.import_blob_rows(&rows).await?;
        tracing::info!(
            copied = report.blobs_copied,
            present = report.blobs_present,
            "migrate: blobs"
        );
    }

    // Through the write path, as every writer.
    let registry = crate::Registry::new(dst_meta.clone());
    let mut last: Option<String> = None;
    loop {
        let names = src_meta
            .list_repositories(Page {
                last: last.as_deref(),
                limit: Some(PAGE),
            })
            .await?;
        let Some(tail) = names.last() else { break };
        last = Some(tail.clone());
        for name in &names {
            let Some(export) = src_meta
                .export_repository(name, None, ExportRows::All)
                .await?
            else {
                continue;
            };
            let inserted = registry.import_repository(&export).await?;
            report.repositories += 1;
            report.rows_inserted += inserted;
            tracing::info!(repository = %name, rows = inserted, "migrate: repository");
        }
    }

    // Sync jobs created through the admin API; one the target already has keeps its
    // configuration there.
    for (name, config) in src_meta.sync_jobs().await? {
        if dst_meta.sync_job_create(&name, &config).await? {
            report.rows_inserted += 1;
        }
    }
    Ok(report)
}

/// Copies one blob unless the target holds it: `Some(bytes copied)` or `None`.
async fn copy_blob(row: &BlobRow, src: &BlobStore, dst: &BlobStore) -> StorageResult<Option<u64>> {
    if dst.size(&row.digest).await? == Some(row.size) {
        return Ok(None);
    }
    let body = match src.get(&row.digest, None).await {
        Ok(body) => body,
        Err(StorageError::NotFound) => {
            return Err(StorageError::Other(format!(
                "the source metadata names blob {} but the source blob store lacks its bytes",
                row.digest
            )))
        }
        Err(e) => return Err(e),
    };
    let written = dst.put_verified(&row.digest, body.stream).await?;
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::digest::Digest;
    use crate::meta::{AtomicSignature, ManifestPut, ManifestRecord};
    use crate::names::{Reference, RepoName, Tag};

    #[tokio::test]
    async fn copies_everything_once_and_again_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = |n: &str| format!("sqlite://{}", dir.path().join(n).display());
        let (src_meta, dst_meta) = (
            crate::open_metadata(&url("a.db")).await.unwrap(),
            crate::open_metadata(&url("b.db")).await.unwrap(),
        );
        let (src_blobs, dst_blobs) = (BlobStore::memory(), BlobStore::memory());
        let repo = "a/b".parse::<RepoName>().unwrap();
        let layer = Bytes::from_static(b"layer bytes");
        let layer_digest = Digest::sha256_of(&layer);
        src_blobs
            .put_verified(
                &layer_digest,
                futures::stream::iter([Ok::<_, String>(layer.clone())]),
            )
            .await
            .unwrap();
        src_meta
            .link_blob(&repo, &layer_digest, layer.len() as u64)
            .await
            .unwrap();
        let content = Bytes::from(format!(
            "{{\"schemaVersion\":2,\"layers\":[{{\"digest\":\"{layer_digest}\"}}]}}"
        ));
        let digest = Digest::sha256_of(&content);
        src_meta
            .put_manifest(&ManifestPut {
                repo: repo.clone(),
                manifest: ManifestRecord {
                    digest: digest.clone(),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    content: content.clone(),
                    artifact_type: None,
                    subject: None,
                    annotations: BTreeMap::new(),
                },
                blobs: vec![layer_digest.clone()],
                children: vec![],
                sizes: Vec::new(),
                tags: vec!["v1".parse::<Tag>().unwrap()],
                condition: None,
                immutable: Vec::new(),
            })
            .await
            .unwrap();
        let sig = AtomicSignature {
            id: "0123456789abcdef0123456789abcdef".into(),
            content: Bytes::from_static(b"gpg"),
        };
        src_meta
            .put_atomic_signature(&repo, &digest, &sig)
            .await
            .unwrap();

        let first = copy(&src_meta, &src_blobs, &dst_meta, &dst_blobs)
            .await
            .unwrap();
        assert_eq!(
            (
                first.blobs_copied,
                first.blob_rows_inserted,
                first.repositories
            ),
            (1, 1, 1)
        );
        assert!(first.rows_inserted >= 5, "{first:?}");
        let got = dst_meta
            .get_manifest(&repo, &"v1".parse::<Reference>().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.content, content);
        assert_eq!(
            dst_meta
                .list_atomic_signatures(&repo, &digest)
                .await
                .unwrap(),
            vec![sig]
        );
        assert_eq!(
            dst_meta
                .export_repository("a/b", None, ExportRows::All)
                .await
                .unwrap(),
            src_meta
                .export_repository("a/b", None, ExportRows::All)
                .await
                .unwrap()
        );
        assert_eq!(
            dst_blobs.size(&layer_digest).await.unwrap(),
            Some(layer.len() as u64)
        );

        let again = copy(&src_meta, &src_blobs, &dst_meta, &dst_blobs)
            .await
            .unwrap();
        assert_eq!(
            (
                again.blobs_copied,
                again.blobs_present,
                again.blob_rows_inserted,
                again.rows_inserted
            ),
            (0, 1, 0, 0)
        );
    }
}
