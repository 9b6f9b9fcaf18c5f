//! Part staging: one staged object per request body, listed in the session's row, and
//! concatenated when they verify. Every store can do this (no append, no multipart API
//! assumed); monolithic uploads use it everywhere, chunked uploads on plain stores.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;

use super::StagedPart;
use crate::blobs::local_file::write_body;
use crate::blobs::objects::{self, join_error};
use crate::blobs::{check, paths, PreparedBlob};
use crate::digest::{Algorithm, Digest, DigestHasher};
use crate::error::{StorageError, StorageResult};

pub struct PartStaging<'a> {
    pub store: &'a Arc<dyn ObjectStore>,
    /// The folder of a local store: a part is written there directly.
    pub local_root: Option<&'a std::path::Path>,
}

impl PartStaging<'_> {
    /// Streams one request body into the session's staging area, hashing it on the way.
    /// On any error the staged object is removed and nothing of it remains.
    pub async fn stage<S, E>(
        &self,
        session: &str,
        part_no: usize,
        body: S,
    ) -> StorageResult<StagedPart>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let key = paths::part(session, part_no);
        let mut hasher = DigestHasher::new(Algorithm::Sha256);
        let size = match self.local_root {
            // A local file is written directly (the same writer chunked uploads append
            // with): hashing and writing overlap with receiving.
            Some(root) => {
                let file_path = paths::local(root, &key);
                let (size, hashed) = write_new_file(file_path, hasher, body).await?;
                hasher = hashed;
                size
            }
            None => {
                let (size, outcome) =
                    objects::write_stream(self.store.as_ref(), &key, body, |b| hasher.update(b))
                        .await;
                outcome?;
                size
            }
        };
        Ok(StagedPart {
            key: key.to_string(),
            size,
            sha256: hasher.finish().hex().to_string(),
        })
    }

    /// Verifies that the staged parts, in order, hash to `expected`, leaving one staged
    /// object ready for [`crate::blobs::BlobStore::place`]: the single part itself
    /// (verified by the hash computed while it streamed in), or the parts concatenated
    /// into an `assembled-` object. On a mismatch nothing is kept. Nothing reaches the
    /// blob's address yet, so the caller can still wait (for garbage collection)
    /// without losing the bytes.
    pub async fn prepare(
        &self,
        session: &str,
        parts: &[StagedPart],
        expected: &Digest,
    ) -> StorageResult<PreparedBlob> {
        match parts {
            [] => {
                check(expected, Digest::of(expected.algorithm(), b""))?;
                Ok(PreparedBlob::staged(expected, None, 0))
            }
            [only] if expected.algorithm() == Algorithm::Sha256 => {
                let actual: Digest = format!("sha256:{}", only.sha256)
                    .parse()
                    .map_err(|e| StorageError::Corrupt(format!("staged part hash: {e}")))?;
                check(expected, actual)?;
                Ok(PreparedBlob::staged(
                    expected,
                    Some(Path::from(only.key.as_str())),
                    only.size,
                ))
            }
            _ => {
                // Several parts (or another algorithm): concatenate them into one staged
                // object, hashing as we go; it is renamed into place once it verifies.
                let assembled = paths::assembled(session);
                let store = self.store.clone();
                let keys: Vec<Path> = parts.iter().map(|p| Path::from(p.key.as_str())).collect();
                let concatenated = futures::stream::iter(keys)
                    .then(move |key| {
                        let store = store.clone();
                        async move { objects::read_whole(store.as_ref(), &key).await }
                    })
                    .try_flatten()
                    .boxed();
                let mut hasher = DigestHasher::new(expected.algorithm());
                let (size, outcome) =
                    objects::write_stream(self.store.as_ref(), &assembled, concatenated, |b| {
                        hasher.update(b)
                    })
                    .await;
                outcome?;
                if let Err(e) = check(expected, hasher.finish()) {
                    let _ = objects::remove(self.store.as_ref(), &assembled).await;
                    return Err(e);
                }
                Ok(PreparedBlob::staged(expected, Some(assembled), size))
            }
        }
    }

    /// Removes one staged part that will not be used.
    pub async fn discard(&self, part: &StagedPart) -> StorageResult<()> {
        objects::remove(self.store.as_ref(), &Path::from(part.key.as_str())).await
    }
}

/// Writes `body` to a new local file, hashing it; on any error the file is removed.
async fn write_new_file<S, E>(
    file_path: PathBuf,
    hasher: DigestHasher,
    body: S,
) -> StorageResult<(u64, DigestHasher)>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let opened = {
        let file_path = file_path.clone();
        tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
            std::fs::create_dir_all(file_path.parent().expect("a session folder"))?;
            std::fs::File::create_new(&file_path)
        })
        .await
        .map_err(join_error)??
    };
    let (size, written) = write_body(Box::new(opened), vec![hasher], body).await;
    match written {
        Ok((_, mut hashers)) => Ok((size, hashers.pop().expect("one hasher"))),
        Err(e) => {
            let _ = tokio::fs::remove_file(&file_path).await;
            Err(e)
        }
    }
}
