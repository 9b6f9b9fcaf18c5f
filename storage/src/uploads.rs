//! Upload sessions: stage each request body in the blob store, record progress in the
//! metadata store, verify and commit at the end. Nothing of a session lives in the
//! process, so it survives a restart and can be continued by another replica.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::meta::{now, MetadataStore, UploadSession};
use crate::names::RepoName;

#[derive(Clone)]
pub struct Uploads {
    blobs: BlobStore,
    meta: Arc<dyn MetadataStore>,
}

impl Uploads {
    pub fn new(blobs: BlobStore, meta: Arc<dyn MetadataStore>) -> Self {
        Self { blobs, meta }
    }

    /// Opens a new, empty session in `repo`.
    pub async fn start(&self, repo: &RepoName) -> StorageResult<UploadSession> {
        let at = now();
        let session = UploadSession {
            id: uuid::Uuid::new_v4().to_string(),
            repo: repo.clone(),
            size: 0,
            parts: Vec::new(),
            created_at: at,
            updated_at: at,
        };
        self.meta.create_upload(&session).await?;
        Ok(session)
    }

    /// The session `id` if it exists and belongs to `repo`.
    pub async fn get(&self, repo: &RepoName, id: &str) -> StorageResult<Option<UploadSession>> {
        Ok(self
            .meta
            .get_upload(id)
            .await?
            .filter(|s| &s.repo == repo))
    }

    /// Appends a request body. `start` is where the client says the chunk begins (from
    /// `Content-Range`); it must be where the session ends.
    pub async fn append<S, E>(
        &self,
        session: &UploadSession,
        start: Option<u64>,
        body: S,
    ) -> StorageResult<UploadSession>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if let Some(start) = start {
            if start != session.size {
                return Err(StorageError::OutOfOrder {
                    start,
                    size: session.size,
                });
            }
        }
        let part = self
            .blobs
            .stage(&session.id, session.parts.len(), body)
            .await?;
        let forget_part = || async {
            let _ = self.blobs.discard_part(&part).await;
        };
        if part.size == 0 {
            forget_part().await;
            return Ok(session.clone());
        }
        match self
            .meta
            .append_upload_part(&session.id, session.size, &part)
            .await
        {
            Ok(updated) => Ok(updated),
            Err(e) => {
                forget_part().await;
                match e {
                    StorageError::Conflict(_) => Err(StorageError::OutOfOrder {
                        start: session.size,
                        size: self
                            .meta
                            .get_upload(&session.id)
                            .await?
                            .map_or(0, |s| s.size),
                    }),
                    other => Err(other),
                }
            }
        }
    }

    /// Verifies everything received against `digest`, stores the blob in the repository
    /// and closes the session. A mismatch closes the session too, storing nothing.
    pub async fn finish(&self, session: &UploadSession, digest: &Digest) -> StorageResult<u64> {
        let result = self.blobs.commit(&session.id, &session.parts, digest).await;
        let outcome = match result {
            Ok(size) => self
                .meta
                .link_blob(&session.repo, digest, size)
                .await
                .map(|()| size),
            Err(e) => Err(e),
        };
        if !matches!(outcome, Err(ref e) if is_transient(e)) {
            self.close(session).await?;
        }
        outcome
    }

    /// Cancels a session and removes its staged bytes.
    pub async fn cancel(&self, session: &UploadSession) -> StorageResult<()> {
        self.close(session).await
    }

    async fn close(&self, session: &UploadSession) -> StorageResult<()> {
        self.meta.delete_upload(&session.id).await?;
        self.blobs.discard_session(&session.id).await
    }

    /// Closes sessions idle for more than `max_idle_secs`; returns how many.
    pub async fn expire(&self, max_idle_secs: i64) -> StorageResult<usize> {
        let idle = self.meta.uploads_idle_since(now() - max_idle_secs).await?;
        for session in &idle {
            tracing::info!(upload = %session.id, repository = %session.repo, bytes = session.size, "expiring idle upload session");
            self.close(session).await?;
        }
        Ok(idle.len())
    }
}

/// Failures of the store itself (not of the client's bytes): the session is kept so the
/// client can retry the final PUT.
fn is_transient(e: &StorageError) -> bool {
    matches!(
        e,
        StorageError::Blobs(_) | StorageError::Metadata(_) | StorageError::Io(_)
    )
}
