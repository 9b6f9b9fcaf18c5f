//! Local files read and written in large frames on the blocking pool: what makes a
//! filesystem store as fast as a plain web server at serving blobs, and as fast as
//! the disk at receiving them.

use std::io::{self, Seek, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::task::JoinHandle;

use super::cached_read;
use super::objects::join_error;
use crate::digest::DigestHasher;
use crate::error::{StorageError, StorageResult};
use crate::range::ResolvedRange;

/// Size of the frames a local blob is streamed in: large enough that the blocking-pool
/// round trip per frame disappears next to the copy itself, small enough that a stream
/// holds little (one frame being sent, the next being read).
const READ_FRAME: usize = 1024 * 1024;
/// What a chunk appended to a local file is gathered into before one write: large
/// enough that the blocking-pool round trip per write disappears next to the copy.
const FILE_WRITE: usize = 4 * 1024 * 1024;

/// `len` bytes of a local file from `start`, in [`READ_FRAME`]s. object_store's own
/// stream reads 8 KiB frames, and a tokio file copies every read through its own
/// buffer; here each frame is read on a blocking thread straight into the memory it is
/// sent from (`read_to_end` fills a vector's spare capacity without zeroing it first),
/// and the next frame is read while the current one is being sent.
pub fn file_frames(
    file: std::fs::File,
    start: u64,
    len: u64,
) -> BoxStream<'static, io::Result<Bytes>> {
    let positioned = tokio::task::spawn_blocking(move || {
        let mut file = file;
        file.seek(io::SeekFrom::Start(start))?;
        Ok((file, Bytes::new()))
    });
    frames_from(joined(positioned), len)
}

/// The longest stream served from the worker thread while the page cache holds it
/// ([`cached_read`]): a `Range` read, a small blob. A longer one is read ahead on the
/// blocking pool, a frame while the one before is sent, which is what keeps a single
/// large download at the disk's and the socket's speed together.
const CACHED_STREAM: u64 = 4 * 1024 * 1024;

/// A local blob opened and measured, as a stream of `range` (or all of it). On the
/// calling thread when the kernel's caches hold its path: a short stream is then read
/// there too, frame by frame as it is sent ([`cached_frames`]). Otherwise it is opened,
/// positioned and its first frame read in one trip to the blocking pool (a 1 MiB range
/// is one trip in all). `None` when it is absent.
pub async fn open_blob(
    path: PathBuf,
    range: Option<ResolvedRange>,
) -> io::Result<Option<(u64, BoxStream<'static, io::Result<Bytes>>)>> {
    let start = range.map_or(0, |r| r.start);
    let length = move |size: u64| range.map_or(size, |r| r.len());
    let opened = match cached_read::open(&path) {
        Some((file, size)) if length(size) <= CACHED_STREAM => {
            return Ok(Some((size, cached_frames(file, start, length(size)))));
        }
        opened => opened,
    };
    // Opened above (a long stream) or not yet: opened if need be, positioned and its
    // first frame read in one trip to the blocking pool.
    let opened = tokio::task::spawn_blocking(move || {
        let (mut file, size) = match opened {
            Some(opened) => opened,
            None => match std::fs::File::open(&path) {
                Ok(f) => {
                    let size = f.metadata()?.len();
                    (f, size)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        if start > 0 {
            file.seek(io::SeekFrom::Start(start))?;
        }
        let len = length(size);
        let want = len.min(READ_FRAME as u64);
        let frame = read_frame(&mut file, want)?;
        Ok(Some((file, size, frame, len - want)))
    })
    .await
    .map_err(io::Error::other)??;
    Ok(opened.map(|(file, size, frame, left)| {
        let first: Reading = Box::pin(futures::future::ready(Ok((file, frame))));
        (size, frames_from(first, left))
    }))
}

/// Where a stream of [`cached_frames`] is.
enum CachedFrames {
    /// Reading on the worker thread, `left` bytes from `offset`.
    OnWorker {
        file: std::fs::File,
        offset: u64,
        left: u64,
    },
    /// A frame was not in the page cache: the rest comes from the blocking pool.
    Blocking(BoxStream<'static, io::Result<Bytes>>),
    Failed,
}

/// `left` bytes of `file` from `offset` in [`cached_read::CACHED_FRAME`]s read on the
/// worker thread, until one is not in the page cache; from there on, in frames read on
/// the blocking pool.
fn cached_frames(
    file: std::fs::File,
    offset: u64,
    left: u64,
) -> BoxStream<'static, io::Result<Bytes>> {
    let start = CachedFrames::OnWorker { file, offset, left };
    futures::stream::unfold(start, |state| async move {
        let mut rest = match state {
            CachedFrames::OnWorker { file, offset, left } => {
                if left == 0 {
                    return None;
                }
                let want = left.min(cached_read::CACHED_FRAME as u64);
                if let Some(frame) = cached_read::read(&file, offset, want as usize) {
                    let next = CachedFrames::OnWorker {
                        file,
                        offset: offset + want,
                        left: left - want,
                    };
                    return Some((Ok(frame), next));
                }
                let mut file = file;
                if let Err(e) = file.seek(io::SeekFrom::Start(offset)) {
                    return Some((Err(e), CachedFrames::Failed));
                }
                let ready: Reading = Box::pin(futures::future::ready(Ok((file, Bytes::new()))));
                frames_from(ready, left)
            }
            CachedFrames::Blocking(rest) => rest,
            CachedFrames::Failed => return None,
        };
        let next = rest.next().await?;
        Some((next, CachedFrames::Blocking(rest)))
    })
    .boxed()
}

/// A frame being read: the file back with the frame.
type Reading = futures::future::BoxFuture<'static, io::Result<(std::fs::File, Bytes)>>;

fn joined(job: JoinHandle<io::Result<(std::fs::File, Bytes)>>) -> Reading {
    Box::pin(async move { job.await.map_err(io::Error::other)? })
}

/// Reads exactly `want` bytes at the file's position into a vector of that capacity.
fn read_frame(file: &mut std::fs::File, want: u64) -> io::Result<Bytes> {
    use std::io::Read;
    let mut frame = Vec::with_capacity(want as usize);
    file.take(want).read_to_end(&mut frame)?;
    if frame.len() as u64 != want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "blob file shorter than its size",
        ));
    }
    Ok(Bytes::from(frame))
}

/// The frame `first` yields, then `left` more bytes of its file, each frame read while
/// the one before is sent.
fn frames_from(first: Reading, left: u64) -> BoxStream<'static, io::Result<Bytes>> {
    futures::stream::unfold((Some(first), left), |(reading, left)| async move {
        let (file, frame) = match reading?.await {
            Ok(done) => done,
            Err(e) => return Some((Err(e), (None, 0))),
        };
        let (next, left) = if left > 0 {
            let want = left.min(READ_FRAME as u64);
            let mut file = file;
            let job = tokio::task::spawn_blocking(move || {
                let frame = read_frame(&mut file, want)?;
                Ok((file, frame))
            });
            (Some(joined(job)), left - want)
        } else {
            (None, 0)
        };
        Some((Ok(frame), (next, left)))
    })
    .try_filter(|frame| futures::future::ready(!frame.is_empty()))
    .boxed()
}

/// A batch being hashed, giving the hashes back.
type Hashing = JoinHandle<Vec<DigestHasher>>;
/// A batch being written, giving the file back.
type Writing<F> = JoinHandle<io::Result<F>>;

/// Streams `body` into `file` at its current position, hashing it into `hashers`.
/// Frames are gathered into [`FILE_WRITE`] batches; each batch is hashed on one
/// blocking thread and written (one `writev`, no copy into a buffer) on another, while
/// the next arrives: hashing and the copy into the page cache cost about the same, so
/// a batch takes the longer of the two rather than their sum.
/// Returns the bytes the body held, and the file and hashes back unless it failed.
pub async fn write_body<F, S, E>(
    file: F,
    hashers: Vec<DigestHasher>,
    mut body: S,
) -> (u64, StorageResult<(F, Vec<DigestHasher>)>)
where
    F: std::ops::DerefMut<Target = std::fs::File> + Send + 'static,
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut idle_file: Option<F> = Some(file);
    let mut idle_hashers: Option<Vec<DigestHasher>> = Some(hashers);
    let mut writing: Option<Writing<F>> = None;
    let mut hashing: Option<Hashing> = None;
    // Frames as they arrived, written together with one writev: no copy into a buffer.
    let mut frames: Vec<Bytes> = Vec::new();
    let mut gathered = 0usize;
    let mut added = 0u64;
    let outcome: StorageResult<()> = async {
        loop {
            let frame = body.next().await;
            let done = frame.is_none();
            if let Some(frame) = frame {
                let frame = frame.map_err(|e| StorageError::BodyRead(e.to_string()))?;
                added += frame.len() as u64;
                gathered += frame.len();
                if !frame.is_empty() {
                    frames.push(frame);
                }
            }
            if gathered >= FILE_WRITE || (done && gathered > 0) {
                let mut hashers = match hashing.take() {
                    Some(job) => job.await.map_err(join_error)?,
                    None => idle_hashers.take().expect("the hashes are idle or in use"),
                };
                let mut file = match writing.take() {
                    Some(job) => job.await.map_err(join_error)??,
                    None => idle_file.take().expect("the file is idle or being written"),
                };
                let batch: Arc<[Bytes]> = std::mem::take(&mut frames).into();
                gathered = 0;
                let hashed = Arc::clone(&batch);
                hashing = Some(tokio::task::spawn_blocking(move || {
                    for frame in hashed.iter() {
                        for h in &mut hashers {
                            h.update(frame);
                        }
                    }
                    hashers
                }));
                writing = Some(tokio::task::spawn_blocking(move || {
                    write_frames(&mut file, &batch)?;
                    Ok(file)
                }));
            }
            if done {
                return Ok(());
            }
        }
    }
    .await;
    // Wait for the last batch either way, so the lock goes back to its holder.
    let hashers = match hashing.take() {
        Some(job) => job.await.map_err(join_error),
        None => Ok(idle_hashers.take().expect("the hashes are idle")),
    };
    let file = match writing.take() {
        Some(job) => job.await.map_err(join_error).and_then(|w| Ok(w?)),
        None => Ok(idle_file.take().expect("the file is idle")),
    };
    let held = outcome.and(file).and_then(|file| Ok((file, hashers?)));
    (added, held)
}

/// Writes every frame, in order, with as few `writev` calls as the kernel allows.
fn write_frames(file: &mut std::fs::File, frames: &[Bytes]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = frames.iter().map(|f| io::IoSlice::new(f)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
