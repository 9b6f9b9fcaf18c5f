//! Multipart staging (S3 and stores with its multipart API): one multipart upload to
//! `uploads/<session>/data`, opened with the first full part. Its id and the parts' ETags
//! live in the session row, so any replica continues it; the bytes after the last full
//! part wait in a `tail` object for the next request or the final one.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tokio::task::JoinHandle;

use super::{FileLock, Sealed, Stager, Step};
use crate::blobs::objects::{self, join_error, WRITE_CONCURRENCY, WRITE_PART};
use crate::blobs::paths;
use crate::digest::DigestHasher;
use crate::error::{StorageError, StorageResult};

/// The smallest part S3 accepts in a multipart upload, except for the last one.
const MIN_PART: usize = 5 * 1024 * 1024;

/// A session's multipart upload as its row records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MultipartState {
    /// Opened with the first full part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// The parts sent, in order.
    #[serde(default)]
    pub etags: Vec<String>,
    /// Bytes in those parts.
    #[serde(default)]
    pub uploaded: u64,
    /// The object holding the bytes after them (shorter than a part may be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<String>,
}

#[derive(Clone)]
pub struct MultipartStaging {
    pub store: Arc<dyn ObjectStore>,
    pub api: Arc<dyn MultipartStore>,
}

/// Parts on their way to the store.
type InFlight = VecDeque<JoinHandle<object_store::Result<PartId>>>;

impl MultipartStaging {
    /// Sends one part of a session's multipart upload (opening the upload with its
    /// first part), keeping at most [`WRITE_CONCURRENCY`] in flight.
    async fn send_part(
        &self,
        key: &Path,
        state: &mut MultipartState,
        in_flight: &mut InFlight,
        part: Bytes,
    ) -> StorageResult<()> {
        let id = match &state.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.api.create_multipart(key).await?;
                state.upload_id = Some(id.clone());
                id
            }
        };
        while in_flight.len() >= WRITE_CONCURRENCY {
            let job = in_flight.pop_front().expect("a part in flight");
            state.etags.push(job.await.map_err(join_error)??.content_id);
        }
        let index = state.etags.len() + in_flight.len();
        state.uploaded += part.len() as u64;
        let (api, key) = (self.api.clone(), key.clone());
        in_flight.push_back(tokio::spawn(async move {
            api.put_part(&key, &id, index, PutPayload::from_bytes(part))
                .await
        }));
        Ok(())
    }

    async fn complete(
        &self,
        key: &Path,
        id: &str,
        etags: &[String],
        tail: Option<&str>,
    ) -> StorageResult<()> {
        let id = id.to_string();
        let mut parts: Vec<PartId> = etags
            .iter()
            .map(|e| PartId {
                content_id: e.clone(),
            })
            .collect();
        if let Some(tail) = tail {
            // The tail becomes the last part, which may be of any size.
            let bytes = self.store.get(&Path::from(tail)).await?.bytes().await?;
            let part = self
                .api
                .put_part(key, &id, parts.len(), PutPayload::from_bytes(bytes))
                .await?;
            parts.push(part);
        }
        self.api.complete_multipart(key, &id, parts).await?;
        Ok(())
    }
}

impl Stager for MultipartStaging {
    type State = MultipartState;

    async fn problem(
        &self,
        _session: &str,
        size: u64,
        state: &MultipartState,
    ) -> StorageResult<Option<String>> {
        let tail_size = match &state.tail {
            None => 0,
            Some(key) => match objects::size(self.store.as_ref(), &Path::from(key.as_str())).await?
            {
                Some(held) => held,
                None => return Ok(Some(format!("the tail object {key} is gone"))),
            },
        };
        let uploaded = state.uploaded;
        Ok((uploaded + tail_size != size).then(|| {
            format!(
                "{uploaded} bytes in parts and {tail_size} in the tail, of the {size} bytes \
                 received"
            )
        }))
    }

    async fn append<S, E>(
        &self,
        session: &str,
        _size: u64,
        before: &MultipartState,
        _lock: Option<&mut FileLock>,
        mut hashers: Vec<DigestHasher>,
        mut body: S,
    ) -> StorageResult<Step<MultipartState>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let key = paths::data(session);
        let mut state = before.clone();
        let mut buffer = BytesMut::new();
        let mut added = 0u64;
        let mut in_flight = InFlight::new();
        let mut tail_read = false;
        let outcome: StorageResult<()> = async {
            while let Some(frame) = body.next().await {
                let frame = frame.map_err(|e| StorageError::BodyRead(e.to_string()))?;
                if frame.is_empty() {
                    continue;
                }
                if !tail_read {
                    // The previous tail goes first; its bytes are already in the hashes.
                    tail_read = true;
                    if let Some(tail) = &before.tail {
                        let bytes = self
                            .store
                            .get(&Path::from(tail.as_str()))
                            .await?
                            .bytes()
                            .await?;
                        buffer.extend_from_slice(&bytes);
                    }
                }
                for h in &mut hashers {
                    h.update(&frame);
                }
                added += frame.len() as u64;
                buffer.extend_from_slice(&frame);
                loop {
                    let size = part_size(state.etags.len() + in_flight.len());
                    if buffer.len() < size {
                        break;
                    }
                    let part = buffer.split_to(size).freeze();
                    self.send_part(&key, &mut state, &mut in_flight, part)
                        .await?;
                }
            }
            if buffer.len() >= MIN_PART {
                let part = buffer.split().freeze();
                self.send_part(&key, &mut state, &mut in_flight, part)
                    .await?;
            }
            while let Some(job) = in_flight.pop_front() {
                state.etags.push(job.await.map_err(join_error)??.content_id);
            }
            Ok(())
        }
        .await;
        if let Err(e) = outcome {
            // Parts sent are not in any recorded list: the next append overwrites them,
            // and completing the upload names only recorded parts.
            for job in in_flight {
                job.abort();
            }
            return Err(e);
        }
        if added == 0 {
            return Ok(Step::nothing(before.clone(), hashers));
        }
        let new_tail = if buffer.is_empty() {
            None
        } else {
            let path = paths::tail(session, state.uploaded);
            self.store
                .put(&path, PutPayload::from_bytes(buffer.freeze()))
                .await?;
            Some(path)
        };
        state.tail = new_tail.as_ref().map(|p| p.to_string());
        Ok(Step {
            added,
            state,
            hashers,
            superseded: before.tail.as_ref().map(|t| Path::from(t.as_str())),
            provisional: new_tail,
        })
    }

    async fn seal(
        &self,
        session: &str,
        size: u64,
        state: &MultipartState,
        _lock: Option<&mut FileLock>,
    ) -> StorageResult<Sealed> {
        let Some(id) = &state.upload_id else {
            // Less than one part: the tail holds it all.
            let tail = state
                .tail
                .as_deref()
                .ok_or_else(|| StorageError::Corrupt("upload bytes without a tail".into()))?;
            return Ok(Sealed::At(Path::from(tail)));
        };
        let key = paths::data(session);
        // Already whole when an earlier final request completed the upload, then failed.
        if objects::size(self.store.as_ref(), &key).await? != Some(size) {
            if let Err(e) = self
                .complete(&key, id, &state.etags, state.tail.as_deref())
                .await
            {
                // Maybe an earlier final request got further.
                return Ok(Sealed::Missing(Some(e)));
            }
        }
        Ok(Sealed::At(key))
    }

    async fn abort(&self, session: &str, state: &MultipartState) {
        let Some(id) = &state.upload_id else {
            return;
        };
        // Completed uploads answer with an error: nothing is left to free then.
        if let Err(e) = self.api.abort_multipart(&paths::data(session), id).await {
            tracing::debug!(upload = %session, error = %e, "multipart upload not aborted");
        }
    }
}

/// The size of part `index` of a session's multipart upload. S3 allows 10 000 parts:
/// 8 MiB parts would stop a blob at 78 GiB, so every 2 000 parts the size doubles, up to
/// 64 MiB (about 360 GiB in all). Blobs of usual sizes keep small parts, and little
/// memory: at most [`WRITE_CONCURRENCY`] parts are in flight.
fn part_size(index: usize) -> usize {
    WRITE_PART << (index / 2000).min(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_grow_so_ten_thousand_hold_large_blobs() {
        assert_eq!(part_size(0), 8 * 1024 * 1024);
        assert_eq!(part_size(1999), 8 * 1024 * 1024);
        assert_eq!(part_size(2000), 16 * 1024 * 1024);
        assert_eq!(part_size(9999), 64 * 1024 * 1024);
        let total: u64 = (0..10_000).map(|i| part_size(i) as u64).sum();
        assert!(total > 300 * 1024 * 1024 * 1024, "{total}");
        // Every part but the last must be at least 5 MiB.
        assert!((0..10_000).all(|i| part_size(i) >= MIN_PART));
    }
}
