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

/// How often, and how long apart, an upload retries pinning a blob GC is deleting
/// (GC holds a tombstone only while it deletes one object).
const PIN_ATTEMPTS: u32 = 50;
const PIN_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

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
        Ok(self.meta.get_upload(id).await?.filter(|s| &s.repo == repo))
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
        let outcome = self
            .commit_and_link(&session.id, &session.parts, &session.repo, digest)
            .await;
        if !matches!(outcome, Err(ref e) if is_transient(e)) {
            self.close(session).await?;
        }
        outcome
    }

    /// Stores `body` as the blob `digest` of `repo` in one go (a monolithic upload).
    pub async fn put_monolithic<S, E>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: S,
    ) -> StorageResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let session = format!("direct-{}", uuid::Uuid::new_v4());
        let result = async {
            let part = self.blobs.stage(&session, 0, body).await?;
            self.commit_and_link(&session, &[part], repo, digest).await
        }
        .await;
        let _ = self.blobs.discard_session(&session).await;
        result
    }

    /// The one way verified bytes become a linked blob, safe beside garbage collection:
    ///
    /// 1. verify into one staged object (nothing at the blob's address yet);
    /// 2. pin the digest — refused while a GC tombstone names it, so wait for GC to
    ///    finish deleting the old bytes and retry: the staged bytes are still ours;
    /// 3. move the bytes to their address;
    /// 4. link (touching the blob row and the link), then unpin.
    ///
    /// GC never deletes a pinned blob, and deletes a row only with a tombstone in the
    /// same transaction, so bytes moved in step 3 are never deleted by a GC that decided
    /// before step 2 (it held the tombstone, we waited) or after it (the pin).
    async fn commit_and_link(
        &self,
        session: &str,
        parts: &[crate::blobs::StagedPart],
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<u64> {
        let prepared = self.blobs.prepare(session, parts, digest).await?;
        let token = uuid::Uuid::new_v4().to_string();
        let mut attempt = 0;
        loop {
            match self.meta.pin_blob(digest, &token).await {
                Ok(()) => break,
                Err(StorageError::BlobBeingDeleted(_)) if attempt < PIN_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(PIN_RETRY).await;
                }
                Err(e) => return Err(e),
            }
        }
        let linked = async {
            self.blobs.place(&prepared).await?;
            self.meta.link_blob(repo, digest, prepared.size).await
        }
        .await;
        // A pin left behind (the unpin failed) only delays GC: stale pins are ignored.
        if let Err(e) = self.meta.unpin_blob(digest, &token).await {
            tracing::warn!(%digest, error = %e, "could not remove an upload's blob pin");
        }
        linked.map(|()| prepared.size)
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
        StorageError::Blobs(_)
            | StorageError::Metadata(_)
            | StorageError::Io(_)
            | StorageError::BlobBeingDeleted(_)
    )
}
