//! Reading, writing, measuring and removing objects of any `object_store`.

use std::io;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart};

use super::local_file::file_frames;
use crate::error::{StorageError, StorageResult};

/// Size of the parts handed to a multipart upload (S3 wants at least 5 MiB).
pub const WRITE_PART: usize = 8 * 1024 * 1024;
/// Parts a single upload may have in flight to the store at once.
pub const WRITE_CONCURRENCY: usize = 4;

/// Size of the object at `key`, `None` when absent.
pub async fn size(store: &dyn ObjectStore, key: &Path) -> StorageResult<Option<u64>> {
    match store.head(key).await {
        Ok(meta) => Ok(Some(meta.size)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the object at `key`; one already gone is no error.
pub async fn remove(store: &dyn ObjectStore, key: &Path) -> StorageResult<()> {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A stored object as a stream (a local file through [`file_frames`]).
pub async fn read_whole(
    store: &dyn ObjectStore,
    key: &Path,
) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
    let result = store.get(key).await.map_err(io::Error::other)?;
    let span = result.range.clone();
    Ok(match result.payload {
        GetResultPayload::File(file, _) => file_frames(file, span.start, span.end - span.start),
        GetResultPayload::Stream(s) => s.map_err(io::Error::other).boxed(),
    })
}

/// Writes a stream to `path` through a multipart upload, calling `inspect` on every
/// frame. Returns the bytes written and the outcome; a failed write leaves nothing.
pub async fn write_stream<S, E>(
    store: &dyn ObjectStore,
    path: &Path,
    mut body: S,
    mut inspect: impl FnMut(&[u8]),
) -> (u64, StorageResult<()>)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let upload = match store.put_multipart(path).await {
        Ok(u) => u,
        Err(e) => return (0, Err(e.into())),
    };
    let mut writer = WriteMultipart::new_with_chunk_size(upload, WRITE_PART);
    let mut size = 0u64;
    let outcome: StorageResult<()> = async {
        while let Some(frame) = body.next().await {
            let frame = frame.map_err(|e| StorageError::BodyRead(e.to_string()))?;
            inspect(&frame);
            size += frame.len() as u64;
            writer.wait_for_capacity(WRITE_CONCURRENCY).await?;
            writer.put(frame);
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => match writer.finish().await {
            Ok(_) => (size, Ok(())),
            Err(e) => (size, Err(e.into())),
        },
        Err(e) => {
            let _ = writer.abort().await;
            (size, Err(e))
        }
    }
}

pub fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageError::Io(io::Error::other(e))
}
