//! Blob reads that never leave the worker thread while the kernel's caches hold
//! everything they take: the path's every component (`openat2` with `RESOLVE_CACHED`)
//! and the bytes (`preadv2` with `RWF_NOWAIT`). Each step that would wait for the disk
//! refuses instead, and the caller goes the blocking pool's way. A `Range` read of a hot
//! blob, what lazy-pulling snapshotters send by the thousand, so costs no trip to
//! another thread and back.
//!
//! Frames are small ([`CACHED_FRAME`]): read, copied into the connection's buffer and
//! sent while they are still in the CPU's cache. `preadv2` reads into initialised memory
//! only, so they come from a small pool of buffers, zeroed once and reused: a frame is
//! dropped as soon as the connection has copied it, and its buffer goes back.

use std::fs::File;
use std::io::IoSliceMut;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
use rustix::io::{preadv2, Errno, ReadWriteFlags};

/// The size of a frame read on the worker thread: its read, its copy into the
/// connection's buffer and its send stay in the CPU's cache. With 1 MiB frames they did
/// not: 1 MiB `Range` reads at 64 connections ran at 0.58× nginx, against 0.72× with
/// 256 KiB frames (0.59× with 64 KiB, 0.69× with 128 KiB: more sends, more wake-ups).
pub const CACHED_FRAME: usize = 256 * 1024;

/// Buffers kept for reuse. A frame lives from its read until the connection copies it
/// into its own buffer, so few are out at once; this bounds what an idle server holds.
const POOLED: usize = 16;

/// Cleared for good once the kernel says it lacks either call (before Linux 5.12), or a
/// seccomp profile refuses them: every read then goes the blocking pool's way.
static AVAILABLE: AtomicBool = AtomicBool::new(true);

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// `path` opened and measured if every component of it is in the kernel's caches;
/// `None` when anything would wait or failed (the blocking path opens it and says why).
pub fn open(path: &Path) -> Option<(File, u64)> {
    if !AVAILABLE.load(Ordering::Relaxed) {
        return None;
    }
    let fd = rustix::fs::openat2(
        CWD,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::CACHED,
    )
    .map_err(unavailable_if_unsupported)
    .ok()?;
    let file = File::from(fd);
    let size = file.metadata().ok()?.len();
    Some((file, size))
}

/// `len` (at most [`CACHED_FRAME`]) bytes of `file` from `offset` if the page cache
/// holds them all; `None` when any would be read from the disk, or the file is short.
pub fn read(file: &File, offset: u64, len: usize) -> Option<Bytes> {
    if len == 0 {
        return Some(Bytes::new());
    }
    let mut buffer = take_buffer(len);
    let read = preadv2(
        file,
        &mut [IoSliceMut::new(&mut buffer)],
        offset,
        ReadWriteFlags::NOWAIT,
    );
    match read {
        Ok(n) if n == len => Some(Bytes::from_owner(Pooled(buffer))),
        Ok(_) => {
            give_back(buffer);
            None
        }
        Err(e) => {
            give_back(buffer);
            unavailable_if_unsupported(e);
            None
        }
    }
}

/// Whether the page cache holds `len` bytes of `file` from `offset`, as far as its first
/// and last byte tell (one-byte `preadv2` with `RWF_NOWAIT` at each end): what decides
/// that a range is sent from the page cache on the worker thread. A page in the middle
/// evicted on its own costs that send one wait for the disk, as it would nginx's.
pub fn holds(file: &File, offset: u64, len: u64) -> bool {
    let cached = |at: u64| read(file, at, 1).is_some();
    len == 0 || (cached(offset) && (len == 1 || cached(offset + len - 1)))
}

fn unavailable_if_unsupported(e: Errno) -> Errno {
    if e == Errno::NOSYS || e == Errno::OPNOTSUPP || e == Errno::PERM {
        AVAILABLE.store(false, Ordering::Relaxed);
    }
    e
}

/// A buffer of exactly `len` bytes: a pooled one, or a zeroed new one.
fn take_buffer(len: usize) -> Vec<u8> {
    let reused = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let mut buffer = reused.unwrap_or_else(|| Vec::with_capacity(CACHED_FRAME));
    // A reused buffer keeps its old bytes, which a frame never shows: a frame is
    // handed out only when the read filled all of it.
    buffer.resize(len, 0);
    buffer
}

fn give_back(buffer: Vec<u8>) {
    if buffer.capacity() > CACHED_FRAME {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOLED {
        pool.push(buffer);
    }
}

/// A frame's memory, back to the pool when the frame is dropped.
struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give_back(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True once the kernel refused the calls (too old, or a seccomp profile): there is
    /// nothing to check then.
    fn unsupported_here() -> bool {
        !AVAILABLE.load(Ordering::Relaxed)
    }

    #[test]
    fn a_cached_file_is_read_on_the_calling_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        // Just written, so the page cache holds it.
        let Some((file, size)) = open(&path) else {
            assert!(unsupported_here());
            return;
        };
        assert_eq!(size, content.len() as u64);
        // Twice, so a pooled buffer is reused: its old bytes never show.
        for (offset, len) in [(1000, CACHED_FRAME), (299_990, 10)] {
            match read(&file, offset as u64, len) {
                Some(frame) => assert_eq!(&frame[..], &content[offset..offset + len]),
                None => assert!(unsupported_here()),
            }
        }
        assert_eq!(read(&file, 0, 0), Some(Bytes::new()));
    }

    #[test]
    fn a_range_is_held_only_within_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, vec![7u8; 100_000]).unwrap();
        let Some((file, _)) = open(&path) else {
            assert!(unsupported_here());
            return;
        };
        if unsupported_here() {
            return;
        }
        assert!(holds(&file, 0, 100_000));
        assert!(holds(&file, 99_999, 1));
        assert!(holds(&file, 5, 0));
        // Past the end: a file shorter than its size is never sent from here.
        assert!(!holds(&file, 0, 100_001));
        assert!(!holds(&file, 100_000, 1));
    }

    #[test]
    fn an_absent_file_is_left_to_the_blocking_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(open(&dir.path().join("absent")).is_none());
    }

    #[test]
    fn a_frame_shorter_than_asked_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, b"0123456789").unwrap();
        let Some((file, size)) = open(&path) else {
            assert!(unsupported_here());
            return;
        };
        assert_eq!(size, 10);
        assert_eq!(read(&file, 0, 20), None);
        assert_eq!(read(&file, 8, 4), None);
    }
}
