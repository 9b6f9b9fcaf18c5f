//! Upload sessions: stage each request body in the blob store, record progress in the
//! metadata store, verify and commit at the end. Nothing of a session lives in the
//! process, so it survives a restart and can be continued by another replica.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use crate::blobs::{BlobStore, FileLock, PreparedBlob, Staging, UploadProgress};
use crate::digest::{Algorithm, Digest};
use crate::error::{StorageError, StorageResult};
use crate::meta::{now, MetadataStore, UploadSession};
use crate::names::RepoName;

/// How often, and how long apart, an upload retries pinning a blob GC is deleting
/// (GC holds a tombstone only while it deletes one object).
const PIN_ATTEMPTS: u32 = 50;
const PIN_RETRY: std::time::Duration = std::time::Duration::from_millis(100);
/// The lease one request holds on a session staged in a multipart upload while it
/// appends or finishes (renewed while it streams), and how long a second request waits
/// for it. A replica that dies holding it blocks the session for at most this long.
const LEASE_TTL_SECS: i64 = 30;
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(35);

#[derive(Clone)]
pub struct Uploads {
    blobs: BlobStore,
    meta: Arc<dyn MetadataStore>,
}

impl Uploads {
    pub fn new(blobs: BlobStore, meta: Arc<dyn MetadataStore>) -> Self {
        Self { blobs, meta }
    }

    /// Opens a new, empty session in `repo`, hashing with sha256 as bytes arrive.
    pub async fn start(&self, repo: &RepoName) -> StorageResult<UploadSession> {
        self.start_with(repo, &[Algorithm::Sha256]).await
    }

    /// Opens a new, empty session in `repo` that keeps running hashes of `algorithms`
    /// (a final digest of another algorithm is verified by reading the bytes again).
    pub async fn start_with(
        &self,
        repo: &RepoName,
        algorithms: &[Algorithm],
    ) -> StorageResult<UploadSession> {
        let at = now();
        let progress = self.blobs.new_progress(algorithms);
        let session = UploadSession {
            id: uuid::Uuid::new_v4().to_string(),
            repo: repo.clone(),
            size: 0,
            parts: Vec::new(),
            progress: (progress.staging != Staging::Parts).then_some(progress),
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
        if let Some(progress) = running(session) {
            return self.append_running(session, progress, start, body).await;
        }
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

    /// Appends to a session that keeps its running state: under the session's exclusive
    /// lock, from the size its row says (read again under the lock), then records the
    /// new size with the new state in one update. Bytes staged by a request whose update
    /// never happened are not counted, and the next append overwrites them.
    async fn append_running<S, E>(
        &self,
        session: &UploadSession,
        progress: &UploadProgress,
        start: Option<u64>,
        body: S,
    ) -> StorageResult<UploadSession>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut held = self.exclusive(session, progress, start).await?;
        let outcome = async {
            let current = self
                .meta
                .get_upload(&session.id)
                .await?
                .ok_or(StorageError::NotFound)?;
            if let Some(start) = start {
                if start != current.size {
                    return Err(StorageError::OutOfOrder {
                        start,
                        size: current.size,
                    });
                }
            }
            let progress = running(&current)
                .ok_or_else(|| StorageError::Corrupt("upload lost its running state".into()))?;
            let appended = self
                .blobs
                .append_staged(
                    &current.id,
                    current.size,
                    progress,
                    held.file.as_mut(),
                    body,
                )
                .await?;
            if appended.added == 0 {
                return Ok(current);
            }
            let recorded = self
                .meta
                .advance_upload(
                    &current.id,
                    current.size,
                    current.size + appended.added,
                    &appended.progress,
                )
                .await;
            // An error may come after the commit (the connection cut, the database
            // restarted, before its answer arrived): then the row, read again, says
            // which tail it names. Unknown, both stay (staging the expiry removes).
            let mut recorded = recorded;
            let committed = match &recorded {
                Ok(_) => Some(true),
                Err(_) => match self.meta.get_upload(&current.id).await {
                    Ok(Some(s)) if s.size == current.size + appended.added => {
                        // It committed: the client is told so.
                        recorded = Ok(s);
                        Some(true)
                    }
                    Ok(Some(s)) if s.size == current.size => Some(false),
                    _ => None,
                },
            };
            if let Some(committed) = committed {
                self.blobs.settle(&appended, committed).await;
            }
            match recorded {
                Err(StorageError::Conflict(_)) => Err(StorageError::OutOfOrder {
                    start: current.size,
                    size: self.current_size(&current.id).await?,
                }),
                other => other,
            }
        }
        .await;
        self.release(held).await;
        outcome
    }

    async fn current_size(&self, id: &str) -> StorageResult<u64> {
        Ok(self.meta.get_upload(id).await?.map_or(0, |s| s.size))
    }

    /// Whether the bytes `session` holds already hash to `digest` (by its running hash;
    /// false where it keeps none, or holds nothing). A final PUT whose body an earlier
    /// attempt of the same request appended finds them so: a balancer resends a PUT to
    /// another replica when the first died before answering. Appending the body again
    /// would make the content other than `digest` says; the bytes already staged are
    /// the blob, and `finish` verifies them as ever.
    pub fn already_holds(&self, session: &UploadSession, digest: &Digest) -> bool {
        session.size > 0
            && running(session)
                .and_then(|p| p.running_digest(digest.algorithm()).ok().flatten())
                .is_some_and(|d| &d == digest)
    }

    /// A final request that carries bytes (`PUT ?digest=` with a body): appends them,
    /// then finishes as [`Uploads::finish`] does; returns the blob's size.
    ///
    /// A session that holds nothing yet (a `POST` then a `PUT` with the whole blob, how
    /// clients push most blobs) does both under one hold of its lock, and the bytes are
    /// never recorded in its row: if finishing fails and the session stays open, its row
    /// still says it holds nothing, and a retry stages the body again from the start.
    /// That saves a lock, a read and a write of the row per blob. A session that holds
    /// bytes appends and records them first, so that a finish cut short finds them (see
    /// [`Uploads::already_holds`]).
    pub async fn append_and_finish<S, E>(
        &self,
        session: &UploadSession,
        start: Option<u64>,
        body: S,
        digest: &Digest,
    ) -> StorageResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let empty_and_running = session.size == 0 && start.unwrap_or(0) == 0;
        if let Some(progress) = running(session).filter(|_| empty_and_running) {
            let mut held = self.exclusive(session, progress, start).await?;
            let read = self.meta.get_upload(&session.id).await;
            let current = match read.and_then(|s| s.ok_or(StorageError::NotFound)) {
                Ok(current) => current,
                Err(e) => {
                    self.release(held).await;
                    return Err(e);
                }
            };
            if current.size == 0 {
                let outcome = self
                    .stage_and_finish(&current, &mut held, body, digest)
                    .await;
                // A body that failed to arrive leaves the session open, as an append
                // does; a finish that failed closes it unless the failure may pass.
                let close = match &outcome {
                    Ok(_) => true,
                    Err(Failed::Appending(_)) => false,
                    Err(Failed::Finishing(e)) => !is_transient(e),
                };
                self.release_closing(held, &current, close).await?;
                return outcome.map_err(Failed::into_error);
            }
            // Another request appended meanwhile: the general way, from what it recorded.
            self.release(held).await;
        }
        let appended = self.append(session, start, body).await?;
        self.finish(&appended, digest).await
    }

    /// The body of [`Uploads::append_and_finish`] for a session holding nothing, under
    /// its lock: staged, verified, placed and linked without recording it in the row.
    async fn stage_and_finish<S, E>(
        &self,
        current: &UploadSession,
        held: &mut Held,
        body: S,
        digest: &Digest,
    ) -> Result<u64, Failed>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let progress = running(current)
            .ok_or_else(|| StorageError::Corrupt("upload lost its running state".into()))
            .map_err(Failed::Appending)?;
        let appended = self
            .blobs
            .append_staged(&current.id, 0, progress, held.file.as_mut(), body)
            .await
            .map_err(Failed::Appending)?;
        let outcome = async {
            let prepared = self
                .blobs
                .prepare_staged(
                    &current.id,
                    appended.added,
                    &appended.progress,
                    held.file.as_mut(),
                    digest,
                )
                .await?;
            self.pin_place_link(&prepared, &current.repo, digest).await
        }
        .await;
        if let Err(e) = &outcome {
            // No row names what this request staged, so closing the session would not
            // find a multipart upload it opened: given up here. A session left open
            // holds nothing, so its new tail goes too.
            if is_transient(e) {
                self.blobs.settle(&appended, false).await;
            }
            self.blobs
                .abort_staged(&current.id, &appended.progress)
                .await;
        }
        outcome.map_err(Failed::Finishing)
    }

    /// Verifies everything received against `digest`, stores the blob in the repository
    /// and closes the session. A mismatch closes the session too, storing nothing.
    pub async fn finish(&self, session: &UploadSession, digest: &Digest) -> StorageResult<u64> {
        let outcome = match running(session) {
            None => {
                self.commit_and_link(&session.id, &session.parts, &session.repo, digest)
                    .await
            }
            Some(progress) => {
                let mut held = self.exclusive(session, progress, None).await?;
                let mut latest = session.clone();
                let outcome = async {
                    latest = self
                        .meta
                        .get_upload(&session.id)
                        .await?
                        .ok_or(StorageError::NotFound)?;
                    let progress = running(&latest).ok_or_else(|| {
                        StorageError::Corrupt("upload lost its running state".into())
                    })?;
                    let prepared = self
                        .blobs
                        .prepare_staged(
                            &latest.id,
                            latest.size,
                            progress,
                            held.file.as_mut(),
                            digest,
                        )
                        .await?;
                    self.pin_place_link(&prepared, &latest.repo, digest).await
                }
                .await;
                let close = !matches!(outcome, Err(ref e) if is_transient(e));
                self.release_closing(held, &latest, close).await?;
                return outcome;
            }
        };
        if !matches!(outcome, Err(ref e) if is_transient(e)) {
            self.close(session).await?;
        }
        outcome
    }

    /// Takes a session's exclusive lock: the flock on its staged file, or a lease in the
    /// metadata store for a multipart upload (which any replica may continue). A request
    /// that cannot get it in time is told where the session ends, as for any chunk that
    /// does not follow on.
    async fn exclusive(
        &self,
        session: &UploadSession,
        progress: &UploadProgress,
        start: Option<u64>,
    ) -> StorageResult<Held> {
        let busy = |size| StorageError::OutOfOrder {
            start: start.unwrap_or(size),
            size,
        };
        if progress.staging == Staging::File {
            return match self.blobs.lock_staged_file(&session.id, progress).await {
                Ok(file) => Ok(Held { file, lease: None }),
                Err(StorageError::Conflict(_)) => Err(busy(self.current_size(&session.id).await?)),
                Err(e) => Err(e),
            };
        }
        let name = format!("upload:{}", session.id);
        let holder = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        while !self
            .meta
            .lease_acquire(&name, &holder, LEASE_TTL_SECS)
            .await?
        {
            if tokio::time::Instant::now() > deadline {
                return Err(busy(self.current_size(&session.id).await?));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Renewed while the request streams; a lapse only lets a waiting request in early.
        let renewer = {
            let (meta, name, holder) = (self.meta.clone(), name.clone(), holder.clone());
            tokio::spawn(async move {
                let every = std::time::Duration::from_secs(LEASE_TTL_SECS as u64 / 3);
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = meta.lease_acquire(&name, &holder, LEASE_TTL_SECS).await {
                        tracing::warn!(lease = %name, error = %e, "could not renew an upload lease");
                    }
                }
            })
        };
        Ok(Held {
            file: None,
            lease: Some(Lease {
                meta: self.meta.clone(),
                name,
                holder,
                renewer,
            }),
        })
    }

    /// Releases a session's lock, having closed the session first when `close`: closed
    /// while still held, so no append slips in between. A failed close is the answer.
    async fn release_closing(
        &self,
        held: Held,
        session: &UploadSession,
        close: bool,
    ) -> StorageResult<()> {
        let closed = if close {
            self.close(session).await
        } else {
            Ok(())
        };
        self.release(held).await;
        closed
    }

    async fn release(&self, mut held: Held) {
        if let Some(mut lease) = held.lease.take() {
            lease.renewer.abort();
            if let Err(e) = self.meta.lease_release(&lease.name, &lease.holder).await {
                tracing::warn!(lease = %lease.name, error = %e, "could not release an upload lease");
            }
            // Released: nothing left for the drop to give back.
            lease.holder.clear();
        }
        drop(held.file);
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
    /// 4. link (touching the blob row and the link) and unpin, in one transaction.
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
        self.pin_place_link(&prepared, repo, digest).await
    }

    /// Steps 2 to 4 of [`Uploads::commit_and_link`] for verified, staged bytes.
    async fn pin_place_link(
        &self,
        prepared: &PreparedBlob,
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<u64> {
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
            self.blobs.place(prepared).await?;
            // Linked and unpinned in one commit.
            self.meta
                .link_pinned_blob(repo, digest, prepared.size, &token)
                .await
        }
        .await;
        if linked.is_err() {
            // A pin left behind (the unpin failed) only delays GC: stale pins are ignored.
            if let Err(e) = self.meta.unpin_blob(digest, &token).await {
                tracing::warn!(%digest, error = %e, "could not remove an upload's blob pin");
            }
        }
        linked.map(|()| prepared.size)
    }

    /// Cancels a session and removes its staged bytes.
    pub async fn cancel(&self, session: &UploadSession) -> StorageResult<()> {
        self.close(session).await
    }

    async fn close(&self, session: &UploadSession) -> StorageResult<()> {
        self.meta.delete_upload(&session.id).await?;
        if let Some(progress) = &session.progress {
            self.blobs.abort_staged(&session.id, progress).await;
        }
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

/// What a session holds while one request appends to it or finishes it.
struct Held {
    file: Option<FileLock>,
    lease: Option<Lease>,
}

/// A held upload lease and the task renewing it.
struct Lease {
    meta: Arc<dyn MetadataStore>,
    name: String,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    /// A request dropped mid-way (its client went away) never reaches
    /// [`Uploads::release`]: stop renewing, and give the lease back from a task rather
    /// than leave the session blocked until it expires.
    fn drop(&mut self) {
        self.renewer.abort();
        if self.holder.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (meta, name, holder) = (
                self.meta.clone(),
                std::mem::take(&mut self.name),
                std::mem::take(&mut self.holder),
            );
            runtime.spawn(async move {
                if let Err(e) = meta.lease_release(&name, &holder).await {
                    tracing::warn!(lease = %name, error = %e, "could not release an upload lease");
                }
            });
        }
    }
}

/// The running state of a session that keeps one (`None` for part-staged sessions).
fn running(session: &UploadSession) -> Option<&UploadProgress> {
    session
        .progress
        .as_ref()
        .filter(|p| p.staging != Staging::Parts)
}

/// Where [`Uploads::append_and_finish`] failed, which decides whether the session stays.
enum Failed {
    Appending(StorageError),
    Finishing(StorageError),
}

impl Failed {
    fn into_error(self) -> StorageError {
        match self {
            Failed::Appending(e) | Failed::Finishing(e) => e,
        }
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
