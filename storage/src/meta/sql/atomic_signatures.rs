//! [`AtomicSignatures`] in SQL.

use async_trait::async_trait;

use crate::events::{EventData, EventType, Journal, NewEvent};
use bytes::Bytes;

use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::meta::rules::{self};
use crate::meta::*;
use crate::names::RepoName;

use super::common::*;
use super::events::journal_in_tx;
use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> AtomicSignatures for SqlMetadata<E> {
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

    async fn put_atomic_signature_journaled(
        &self,
        repo: &RepoName,
        manifest: &Digest,
        signature: &AtomicSignature,
        journal: Journal<'_>,
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
        journal_in_tx(&mut tx, journal, || {
            vec![NewEvent::new(
                EventType::SignatureStored,
                EventData {
                    repository: repo.to_string(),
                    subject: Some(manifest.to_string()),
                    digest: Some(manifest.to_string()),
                    detail: Some(serde_json::json!({
                        "format": "simple-signing",
                        "signatureId": signature.id,
                    })),
                    actor: journal.actor().map(str::to_string),
                    ..EventData::default()
                },
            )]
        })
        .await?;
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
}
