//! SQLite's change signal: in WAL mode every commit, from any connection of any process
//! (the server, a `signet gc` run beside it), updates the WAL-index header at the start
//! of `<database>-shm` before it becomes visible to readers. Reading that header is how
//! SQLite's own connections notice a commit; it is this engine's change token.
//!
//! The file is kept open and read with one `pread` per token. SQLite unlinks the `-shm`
//! only when the last connection of every process closes, and this process keeps the
//! store's connections open; still, the path is checked at most every [`REOPEN_EVERY`]
//! and a new file (another inode) is opened beside the old one.
//!
//! A descriptor of the `-shm` file is never closed: closing *any* descriptor of a file
//! drops every POSIX lock the process holds on it, SQLite's included. Without its shared
//! lock on the `-shm`, the next process to open the database (`signet gc`, `signet fsck`)
//! takes itself for the only user and truncates the file under this process's memory
//! map, which then dies of SIGBUS. So the path is compared by `stat`, and a replaced
//! file is retired, not closed.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::change_token::ChangeToken;

/// The WAL-index header: two copies of a 48-byte `WalIndexHdr` (change counter, last
/// valid frame, checksums and salts; see SQLite's `walformat.html`).
const HEADER_BYTES: usize = 96;

/// How often the `-shm` path is opened again, in case the file was replaced.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// The open `-shm` file and when its path was last opened.
struct Shm {
    file: Option<Arc<File>>,
    opened_at: Instant,
}

/// The WAL-index header of one database file.
pub(crate) struct WalIndex {
    shm: PathBuf,
    open: RwLock<Option<Shm>>,
    /// Files the path no longer names, kept open (see the module documentation).
    retired: Mutex<Vec<Arc<File>>>,
}

impl std::fmt::Debug for WalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalIndex")
            .field("shm", &self.shm)
            .finish_non_exhaustive()
    }
}

impl WalIndex {
    /// The header of the database at `database` (its `-shm` beside it).
    pub(crate) fn new(database: &Path) -> Self {
        let mut shm = database.as_os_str().to_owned();
        shm.push("-shm");
        WalIndex {
            shm: PathBuf::from(shm),
            open: RwLock::default(),
            retired: Mutex::default(),
        }
    }

    /// The header as it is now; `None` when there is no `-shm` file to read.
    pub(crate) fn token(&self) -> Option<ChangeToken> {
        let mut header = [0u8; HEADER_BYTES];
        self.file()?.read_exact_at(&mut header, 0).ok()?;
        Some(ChangeToken::new(&header))
    }

    /// The `-shm` file, opened again when [`REOPEN_EVERY`] has passed.
    fn file(&self) -> Option<Arc<File>> {
        {
            let open = self.open.read().unwrap_or_else(|e| e.into_inner());
            if let Some(shm) = open
                .as_ref()
                .filter(|s| s.opened_at.elapsed() < REOPEN_EVERY)
            {
                return shm.file.clone();
            }
        }
        let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
        // `stat`, not `open`: a descriptor opened here only to compare would be closed.
        let current = std::fs::metadata(&self.shm).ok();
        let same = |a: &File, b: &std::fs::Metadata| {
            a.metadata()
                .is_ok_and(|a| a.dev() == b.dev() && a.ino() == b.ino())
        };
        let old = open.take().and_then(|s| s.file);
        let file = match (old, current) {
            (Some(old), Some(current)) if same(&old, &current) => Some(old),
            (old, current) => {
                if let Some(old) = old {
                    self.retired
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(old);
                }
                current
                    .and_then(|_| File::open(&self.shm).ok())
                    .map(Arc::new)
            }
        };
        *open = Some(Shm {
            file: file.clone(),
            opened_at: Instant::now(),
        });
        file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_follows_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        let index = WalIndex::new(&db);
        assert_eq!(index.token(), None, "no -shm file yet");
        std::fs::write(dir.path().join("m.db-shm"), [0u8; 4096]).unwrap();
        std::thread::sleep(REOPEN_EVERY);
        let before = index.token().expect("a header");
        assert_eq!(index.token(), Some(before.clone()));
        // A commit (here: a changed frame count) changes the token.
        let mut shm = [0u8; 4096];
        shm[16] = 1;
        std::fs::write(dir.path().join("m.db-shm"), shm).unwrap();
        assert_ne!(index.token(), Some(before));
    }
}
