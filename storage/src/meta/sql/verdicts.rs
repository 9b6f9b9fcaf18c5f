//! [`Verdicts`] in SQL.

use async_trait::async_trait;

use crate::attachments::VerdictKind;

use crate::digest::Digest;
use crate::error::StorageResult;
use crate::meta::*;
use crate::names::RepoName;

use super::query::*;
use super::SqlMetadata;

#[async_trait]
impl<E: Engine> Verdicts for SqlMetadata<E> {
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
            verdict: {
                let text = row.text("verdict")?;
                VerdictKind::parse(&text)
                    .ok_or_else(|| StorageError::Corrupt(format!("unknown verdict {text:?}")))?
            },
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
                    format: row.text("format")?.parse().map_err(StorageError::Corrupt)?,
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
