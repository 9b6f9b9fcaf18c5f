//! File staging (local stores): one file, `uploads/<session>/data`, that each request
//! appends to under an exclusive lock. Bytes past the session's size belong to a
//! request that did not complete; the next one cuts them off.

use std::io::{self, Seek};
use std::path::PathBuf;

use bytes::Bytes;
use futures::Stream;

use super::{Sealed, Stager, Step};
use crate::blobs::local_file::write_body;
use crate::blobs::objects::join_error;
use crate::blobs::paths;
use crate::digest::DigestHasher;
use crate::error::{StorageError, StorageResult};

/// How long an append waits for another request appending to the same session.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The exclusive lock on a session's local staged file, held from before the session
/// row is read until after it records the append (or the blob is placed). The kernel
/// drops it with the process, so a crash never leaves a session locked.
pub struct FileLock {
    file: Option<nix::fcntl::Flock<std::fs::File>>,
}

#[derive(Debug, Clone)]
pub struct FileStaging {
    /// The folder of the local store.
    pub root: PathBuf,
}

impl FileStaging {
    fn data_file(&self, session: &str) -> StorageResult<PathBuf> {
        Ok(paths::local_session(&self.root, session)?.join("data"))
    }

    /// Takes the exclusive lock on a session's staged file (creating it), waiting a
    /// while for a request that holds it.
    pub async fn lock(&self, session: &str) -> StorageResult<FileLock> {
        let path = self.data_file(session)?;
        let file = tokio::task::spawn_blocking(move || -> StorageResult<_> {
            std::fs::create_dir_all(path.parent().expect("a session folder"))?;
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let deadline = std::time::Instant::now() + LOCK_WAIT;
            loop {
                use nix::fcntl::{Flock, FlockArg};
                match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    Ok(locked) => return Ok(locked),
                    Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                        if std::time::Instant::now() > deadline {
                            return Err(StorageError::Conflict(
                                "another request is appending to this upload".into(),
                            ));
                        }
                        file = back;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err((_, errno)) => return Err(io::Error::from(errno).into()),
                }
            }
        })
        .await
        .map_err(join_error)??;
        Ok(FileLock { file: Some(file) })
    }
}

fn locked(lock: Option<&mut FileLock>) -> StorageResult<&mut FileLock> {
    lock.ok_or_else(|| StorageError::Corrupt("a staged file used without its lock".into()))
}

impl Stager for FileStaging {
    type State = ();

    async fn problem(&self, session: &str, size: u64, _: &()) -> StorageResult<Option<String>> {
        // Bytes past `size` are a cut-short request's, cut off by the next one.
        if size == 0 {
            return Ok(None);
        }
        let key = paths::data(session);
        Ok(match tokio::fs::metadata(self.data_file(session)?).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Some(format!("{key} is gone ({size} bytes received)"))
            }
            Err(e) => return Err(e.into()),
            Ok(m) if m.len() < size => Some(format!(
                "{key} holds {} of the {size} bytes received",
                m.len()
            )),
            Ok(_) => None,
        })
    }

    /// Appends `body` to the locked file at offset `size`, cutting off whatever a
    /// request that did not complete wrote past it.
    async fn append<S, E>(
        &self,
        _session: &str,
        size: u64,
        _: &(),
        lock: Option<&mut FileLock>,
        hashers: Vec<DigestHasher>,
        body: S,
    ) -> StorageResult<Step<()>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        type Held = (nix::fcntl::Flock<std::fs::File>, Vec<DigestHasher>);
        let lock = locked(lock)?;
        let mut file = lock
            .file
            .take()
            .ok_or_else(|| StorageError::Corrupt("staged file lock lost".into()))?;
        let positioned: Held = tokio::task::spawn_blocking(move || -> io::Result<Held> {
            let length = file.metadata()?.len();
            if length < size {
                return Err(io::Error::other(format!(
                    "the staged file holds {length} bytes, the session {size}"
                )));
            }
            if length > size {
                file.set_len(size)?;
            }
            file.seek(io::SeekFrom::Start(size))?;
            Ok((file, hashers))
        })
        .await
        .map_err(join_error)??;
        let (file, hashers) = positioned;
        let (added, written) = write_body(file, hashers, body).await;
        let (file, hashers) = written?;
        lock.file = Some(file);
        Ok(Step {
            added,
            state: (),
            hashers,
            superseded: None,
            provisional: None,
        })
    }

    async fn seal(
        &self,
        session: &str,
        size: u64,
        _: &(),
        lock: Option<&mut FileLock>,
    ) -> StorageResult<Sealed> {
        let file = locked(lock)?
            .file
            .as_ref()
            .ok_or_else(|| StorageError::Corrupt("staged file lock lost".into()))?;
        let length = file.metadata()?.len();
        if length > size {
            // A request that did not complete wrote past the session's end.
            file.set_len(size)?;
        } else if length < size {
            return Ok(Sealed::Missing(None));
        }
        Ok(Sealed::At(paths::data(session)))
    }
}
