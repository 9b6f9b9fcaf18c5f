//! How an upload's bytes wait, before they verify, for their content address.
//!
//! Three strategies, one per kind of store, each its own type:
//! - [`parts::PartStaging`]: one object per request body (every store; monolithic
//!   uploads everywhere);
//! - [`file::FileStaging`]: one local file appended to under a lock;
//! - [`multipart::MultipartStaging`]: one multipart upload, continued by any replica.
//!
//! The two that keep a running state (file and multipart) answer the one interface
//! [`Stager`]; [`BlobStore`]'s session methods pick the strategy the session row names.
//! A new strategy is a file here, a [`Staging`] variant and an arm in each of them.

pub(crate) mod file;
pub(crate) mod multipart;
pub(crate) mod parts;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::path::Path;

pub use file::FileLock;
use file::FileStaging;
use multipart::MultipartStaging;
pub use multipart::MultipartState;

use super::{check, hash_state, objects, paths, BlobStore, PreparedBlob};
use crate::digest::{Algorithm, Digest, DigestHasher};
use crate::error::{StorageError, StorageResult};

/// A staged piece of an upload: what one request body delivered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedPart {
    /// Location in the blob store, under the session's staging prefix.
    pub key: String,
    pub size: u64,
    /// sha256 of the part, computed while it streamed in: a single-part upload is then
    /// verified without reading it again.
    pub sha256: String,
}

/// How an upload session's bytes are staged; kept in the session row beside the hash
/// state, so whichever process receives the next request continues where the last one
/// stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Staging {
    /// One staged object per request body, listed in the session's parts (stores with
    /// neither append nor a multipart API, and sessions opened before the others existed).
    #[default]
    Parts,
    /// One local file, appended to by each request under an exclusive lock.
    File,
    /// A multipart upload with its tail.
    Multipart(MultipartState),
}

/// What an upload session carries besides its size: where its bytes are, and the state
/// of each running hash over them (by algorithm name), so that the final request
/// verifies the digest without reading the bytes again.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadProgress {
    pub staging: Staging,
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
}

impl UploadProgress {
    /// What the bytes counted so far hash to under `algorithm`, by the running hash;
    /// `None` where the session keeps none for it.
    pub fn running_digest(&self, algorithm: crate::Algorithm) -> StorageResult<Option<Digest>> {
        self.hashes
            .get(algorithm.name())
            .map(|state| hash_state::load(algorithm, state).map(|h| h.finish()))
            .transpose()
    }
}

/// The outcome of appending one request body to a session's staging.
#[derive(Debug)]
pub struct Appended {
    /// Bytes the body held.
    pub added: u64,
    /// The session's progress with them: to be recorded with the new size in one update.
    pub progress: UploadProgress,
    /// A staged object this append replaced (the previous tail): removable once the row
    /// records `progress`.
    superseded: Option<Path>,
    /// A staged object this append made (the new tail): removable if the row never
    /// records `progress`.
    provisional: Option<Path>,
}

/// What a strategy's append did: the bytes, its new state and hashes, and the staged
/// objects the caller settles (see [`Appended`]).
pub(crate) struct Step<State> {
    pub added: u64,
    pub state: State,
    pub hashers: Vec<DigestHasher>,
    pub superseded: Option<Path>,
    pub provisional: Option<Path>,
}

impl<State> Step<State> {
    /// An empty body: nothing changes.
    pub fn nothing(state: State, hashers: Vec<DigestHasher>) -> Self {
        Self {
            added: 0,
            state,
            hashers,
            superseded: None,
            provisional: None,
        }
    }
}

/// Where a session's bytes are once its final request seals them.
pub(crate) enum Sealed {
    /// Whole, in one staged object.
    At(Path),
    /// Not there: an earlier final request may have placed them, else the error (or,
    /// without one, that they are missing).
    Missing(Option<StorageError>),
}

/// A staging strategy that keeps its running state in the session row.
pub(crate) trait Stager {
    /// What the session row records of it.
    type State;

    /// What is wrong with what a session of `size` bytes says is staged, if anything.
    async fn problem(
        &self,
        session: &str,
        size: u64,
        state: &Self::State,
    ) -> StorageResult<Option<String>>;

    /// Appends `body` to a session holding `size` bytes, hashing it into `hashers`.
    async fn append<S, E>(
        &self,
        session: &str,
        size: u64,
        state: &Self::State,
        lock: Option<&mut FileLock>,
        hashers: Vec<DigestHasher>,
        body: S,
    ) -> StorageResult<Step<Self::State>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display;

    /// Gathers a session's `size` (> 0) bytes into one staged object.
    async fn seal(
        &self,
        session: &str,
        size: u64,
        state: &Self::State,
        lock: Option<&mut FileLock>,
    ) -> StorageResult<Sealed>;

    /// Frees what the store holds for a session beyond its objects.
    async fn abort(&self, _session: &str, _state: &Self::State) {}
}

fn no_running_state() -> StorageError {
    StorageError::Corrupt("a part-staged upload has no running state".into())
}

impl BlobStore {
    fn file_staging(&self) -> StorageResult<&FileStaging> {
        self.file
            .as_ref()
            .ok_or_else(|| StorageError::Corrupt("a file-staged upload on a remote store".into()))
    }

    fn multipart_staging(&self) -> StorageResult<&MultipartStaging> {
        self.multipart
            .as_ref()
            .ok_or_else(|| StorageError::Corrupt("a multipart upload on a plain store".into()))
    }

    /// Where a new upload session stages its bytes, with fresh hashes of `algorithms`.
    pub fn new_progress(&self, algorithms: &[Algorithm]) -> UploadProgress {
        let staging = if self.file.is_some() {
            Staging::File
        } else if self.multipart.is_some() {
            Staging::Multipart(MultipartState::default())
        } else {
            return UploadProgress::default();
        };
        UploadProgress {
            staging,
            hashes: hash_state::fresh(algorithms),
        }
    }

    /// What is wrong with the bytes a session says are staged, if anything: staged parts
    /// gone, the staged file or tail object gone, or fewer bytes staged than the session
    /// received.
    pub async fn staging_problem(
        &self,
        session: &crate::meta::UploadSession,
    ) -> StorageResult<Option<String>> {
        let mut gone = Vec::new();
        for part in &session.parts {
            let key = Path::from(part.key.as_str());
            if objects::size(self.store.as_ref(), &key).await?.is_none() {
                gone.push(part.key.as_str());
            }
        }
        if !gone.is_empty() {
            return Ok(Some(format!("staged parts are gone: {}", gone.join(", "))));
        }
        let (id, size) = (session.id.as_str(), session.size);
        match session.progress.as_ref().map(|p| &p.staging) {
            None | Some(Staging::Parts) => Ok(None),
            Some(Staging::File) => self.file_staging()?.problem(id, size, &()).await,
            Some(Staging::Multipart(state)) => {
                self.multipart_staging()?.problem(id, size, state).await
            }
        }
    }

    /// Takes the exclusive lock on a session's staged file, waiting a while for a
    /// request that holds it. `None` when the session does not stage to a file.
    pub async fn lock_staged_file(
        &self,
        session: &str,
        progress: &UploadProgress,
    ) -> StorageResult<Option<FileLock>> {
        match progress.staging {
            Staging::File => Ok(Some(self.file_staging()?.lock(session).await?)),
            _ => Ok(None),
        }
    }

    /// Appends one request body to a session that holds `size` bytes, hashing it into
    /// the session's running hashes. Nothing the session row records is changed: the
    /// caller records [`Appended::progress`] with the new size, then calls
    /// [`BlobStore::settle`]. `lock` is the session's [`FileLock`] for file staging.
    pub async fn append_staged<S, E>(
        &self,
        session: &str,
        size: u64,
        progress: &UploadProgress,
        lock: Option<&mut FileLock>,
        body: S,
    ) -> StorageResult<Appended>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let hashers = hash_state::load_all(&progress.hashes)?;
        let appended = |step: Step<Staging>| Appended {
            added: step.added,
            progress: if step.added == 0 {
                progress.clone()
            } else {
                UploadProgress {
                    staging: step.state,
                    hashes: hash_state::save_all(&step.hashers),
                }
            },
            superseded: step.superseded,
            provisional: step.provisional,
        };
        let step = match &progress.staging {
            Staging::File => {
                let step = self
                    .file_staging()?
                    .append(session, size, &(), lock, hashers, body)
                    .await?;
                restate(step, |()| Staging::File)
            }
            Staging::Multipart(state) => {
                let step = self
                    .multipart_staging()?
                    .append(session, size, state, lock, hashers, body)
                    .await?;
                restate(step, Staging::Multipart)
            }
            Staging::Parts => return Err(no_running_state()),
        };
        Ok(appended(step))
    }

    /// Removes what an append left that is no longer needed: the replaced tail when the
    /// session row recorded the append, its own new tail when it did not.
    pub async fn settle(&self, appended: &Appended, recorded: bool) {
        let garbage = if recorded {
            &appended.superseded
        } else {
            &appended.provisional
        };
        if let Some(path) = garbage {
            if let Err(e) = objects::remove(self.store.as_ref(), path).await {
                tracing::debug!(%path, error = %e, "could not remove a staged tail");
            }
        }
    }

    /// Verifies a session's `size` staged bytes against `expected`, by its running hash
    /// when it kept one for that algorithm (reading them again otherwise), and leaves
    /// them as one staged object for [`BlobStore::place`]: the local file as it is, the
    /// multipart upload completed with its tail as the last part. On a mismatch nothing
    /// is placed. A session whose bytes an earlier attempt already moved to `expected`
    /// (and that failed later) is found there.
    pub async fn prepare_staged(
        &self,
        session: &str,
        size: u64,
        progress: &UploadProgress,
        lock: Option<&mut FileLock>,
        expected: &Digest,
    ) -> StorageResult<PreparedBlob> {
        let running = progress.running_digest(expected.algorithm())?;
        if let Some(actual) = &running {
            check(expected, actual.clone())?;
        }
        let sealed = match &progress.staging {
            Staging::Parts => return Err(no_running_state()),
            _ if size == 0 => None,
            Staging::File => Some(self.file_staging()?.seal(session, size, &(), lock).await?),
            Staging::Multipart(state) => Some(
                self.multipart_staging()?
                    .seal(session, size, state, lock)
                    .await?,
            ),
        };
        let staged = match sealed {
            None => None,
            Some(Sealed::At(path)) => Some(path),
            Some(Sealed::Missing(error)) => {
                return match self.already_placed(expected, size, running.is_some()).await {
                    Ok(placed) => Ok(placed),
                    Err(missing) => Err(error.unwrap_or(missing)),
                }
            }
        };
        if running.is_none() {
            // No running hash for this algorithm: read the bytes once to verify them.
            let mut hasher = DigestHasher::new(expected.algorithm());
            if let Some(path) = &staged {
                let mut stream = objects::read_whole(self.store.as_ref(), path).await?;
                while let Some(frame) = stream.next().await {
                    hasher.update(&frame?);
                }
            }
            check(expected, hasher.finish())?;
        }
        Ok(PreparedBlob::staged(expected, staged, size))
    }

    /// Gives up a session's multipart upload, if it opened one and did not complete it,
    /// so the store frees its parts (objects under the session's prefix are removed by
    /// [`BlobStore::discard_session`]).
    pub async fn abort_staged(&self, session: &str, progress: &UploadProgress) {
        if let (Some(multipart), Staging::Multipart(state)) = (&self.multipart, &progress.staging) {
            multipart.abort(session, state).await;
        }
    }

    /// The staged bytes are gone: an earlier final request verified and moved them to
    /// `expected`, then failed (linking, say). They count only if they are there with the
    /// session's size and the running hash vouched for them.
    async fn already_placed(
        &self,
        expected: &Digest,
        size: u64,
        verified: bool,
    ) -> StorageResult<PreparedBlob> {
        if verified && self.size(expected).await? == Some(size) {
            return Ok(PreparedBlob::placed(expected, size));
        }
        Err(StorageError::Corrupt(format!(
            "the staged bytes of an upload of {size} bytes are missing"
        )))
    }

    /// Every staging folder and the time of its last write (unix seconds), including
    /// on a local store what its listing hides: the temporary files of writes a crash
    /// cut short.
    pub async fn staging_folders(&self) -> StorageResult<BTreeMap<String, i64>> {
        let mut folders: BTreeMap<String, i64> = BTreeMap::new();
        let mut listing = self.store.list(Some(&paths::staging_root()));
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(session) = paths::session_of(&meta.location) else {
                continue;
            };
            let at = meta.last_modified.timestamp();
            let entry = folders.entry(session).or_insert(at);
            *entry = (*entry).max(at);
        }
        if let Some(root) = self.local_root() {
            local_folders(&paths::local_staging_root(root), &mut folders)?;
        }
        Ok(folders)
    }
}

/// A strategy's step with its state as the session row's [`Staging`].
fn restate<S>(step: Step<S>, wrap: impl FnOnce(S) -> Staging) -> Step<Staging> {
    Step {
        added: step.added,
        state: wrap(step.state),
        hashers: step.hashers,
        superseded: step.superseded,
        provisional: step.provisional,
    }
}

/// The session folders under a local store's staging folder and the newest modification time of
/// anything in each (hidden files included).
fn local_folders(
    uploads: &std::path::Path,
    folders: &mut BTreeMap<String, i64>,
) -> StorageResult<()> {
    let entries = match std::fs::read_dir(uploads) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mtime = |m: &std::fs::Metadata| -> i64 {
        m.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64)
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let meta = entry.metadata()?;
        let mut newest = mtime(&meta);
        if meta.is_dir() {
            for inner in std::fs::read_dir(entry.path())? {
                let inner = inner?;
                newest = newest.max(mtime(&inner.metadata()?));
            }
        }
        let slot = folders.entry(name).or_insert(newest);
        *slot = (*slot).max(newest);
    }
    Ok(())
}
