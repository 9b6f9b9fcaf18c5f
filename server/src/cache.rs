//! A bounded in-process cache of manifest lookups (`GET`/`HEAD /v2/<name>/manifests/<ref>`),
//! the hottest request, and of listing responses (tags lists, referrers indexes), the
//! costliest reads: a hit answers without a round trip to the metadata store.
//!
//! An entry is valid while the database has committed nothing since it was read, and
//! the cache learns that the way SQLite's own connections do: in WAL mode every commit,
//! from any connection of any process (the server, a `signet gc` run beside it), updates
//! the WAL-index header at the start of `<database>-shm` before it becomes visible to
//! readers. A lookup reads that header *before* querying the store and caches its answer
//! under it; a hit re-reads the header and must find it byte for byte unchanged. So an
//! answer is never served after a commit that might change it, whatever the writer.
//!
//! The file is kept open and read with one `pread` per lookup. SQLite unlinks the `-shm`
//! only when the last connection of every process closes, and this process keeps the
//! metadata store's connections open; still, the path is checked at most every
//! [`REOPEN_EVERY`] and a new file (another inode) is opened beside the old one.
//!
//! A descriptor of the `-shm` file is never closed: closing *any* descriptor of a file
//! drops every POSIX lock the process holds on it, SQLite's included. Without its
//! shared lock on the `-shm`, the next process to open the database (`signet gc`,
//! `signet fsck`) takes itself for the only user and truncates the file under this
//! process's memory map, which then dies of SIGBUS. So the path is compared by `stat`,
//! and a replaced file is retired, not closed.
//!
//! Without such a header (PostgreSQL, an in-memory database, no `-shm` file) nothing is
//! cached: several replicas sharing a database would need a change feed instead.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use signet_storage::meta::StoredManifest;

/// Total manifest bytes kept; the cache is emptied when it would grow past this.
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Larger manifests are not cached.
const MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// The WAL-index header: two copies of a 48-byte `WalIndexHdr` (change counter, last
/// valid frame, checksums and salts; see SQLite's `walformat.html`).
const HEADER_BYTES: usize = 96;

/// How often the `-shm` path is opened again, in case the file was replaced.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// What the database looked like when an answer was read.
pub type Version = Option<[u8; HEADER_BYTES]>;

/// A listing response as sent: its body and the headers that depend on the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub body: bytes::Bytes,
    pub headers: Vec<(&'static str, String)>,
}

/// Which listing a cached response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListingKind {
    Tags,
    Referrers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Manifest,
    Listing(ListingKind),
}

enum Value {
    Manifest(StoredManifest),
    Listing(Listing),
}

impl Value {
    fn bytes(&self) -> usize {
        match self {
            Value::Manifest(m) => m.content.len(),
            Value::Listing(l) => l.body.len() + l.headers.iter().map(|h| h.1.len()).sum::<usize>(),
        }
    }
}

struct Entry {
    version: [u8; HEADER_BYTES],
    value: Value,
}

/// (what, repository, reference or query).
type Key = (Kind, String, String);

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    bytes: usize,
}

/// The open `-shm` file and when its path was last opened.
struct Shm {
    file: Option<Arc<File>>,
    opened_at: Instant,
}

#[derive(Default)]
pub struct ManifestCache {
    /// `<database>-shm`; `None` disables the cache.
    shm: Option<PathBuf>,
    open: RwLock<Option<Shm>>,
    /// Files the path no longer names, kept open (see the module documentation).
    retired: Mutex<Vec<Arc<File>>>,
    entries: Mutex<Entries>,
}

impl ManifestCache {
    /// A cache for the metadata store at `url`: enabled for an on-disk SQLite database.
    pub fn for_metadata_url(url: &str) -> Self {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(rest))
            .filter(|p| !p.is_empty() && !p.contains(":memory:") && !url.contains("mode=memory"));
        Self {
            shm: path.map(|p| PathBuf::from(format!("{p}-shm"))),
            open: RwLock::default(),
            retired: Mutex::default(),
            entries: Mutex::default(),
        }
    }

    /// The `-shm` file, opened again when [`REOPEN_EVERY`] has passed.
    fn shm_file(&self) -> Option<Arc<File>> {
        let path = self.shm.as_ref()?;
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
        let current = std::fs::metadata(path).ok();
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
                current.and_then(|_| File::open(path).ok()).map(Arc::new)
            }
        };
        *open = Some(Shm {
            file: file.clone(),
            opened_at: Instant::now(),
        });
        file
    }

    /// The database's current version; read it before querying the store.
    pub fn version(&self) -> Version {
        let mut header = [0u8; HEADER_BYTES];
        self.shm_file()?.read_exact_at(&mut header, 0).ok()?;
        Some(header)
    }

    /// The manifest `reference` (tag or digest, as in the URL) of `repo`, if cached and
    /// nothing was committed since it was read.
    pub fn get(&self, repo: &str, reference: &str) -> Option<StoredManifest> {
        match self.lookup(Kind::Manifest, repo, reference)? {
            Value::Manifest(m) => Some(m),
            Value::Listing(_) => None,
        }
    }

    /// Caches what the store answered, read at `version`.
    pub fn insert(&self, repo: &str, reference: &str, version: Version, m: &StoredManifest) {
        self.store(
            Kind::Manifest,
            repo,
            reference,
            version,
            Value::Manifest(m.clone()),
        );
    }

    /// The response of a listing of `repo` (`query`: everything else it depends on), if
    /// cached and nothing was committed since it was read.
    pub fn listing(&self, kind: ListingKind, repo: &str, query: &str) -> Option<Listing> {
        match self.lookup(Kind::Listing(kind), repo, query)? {
            Value::Listing(l) => Some(l),
            Value::Manifest(_) => None,
        }
    }

    /// Caches a listing response built from what the store answered at `version`.
    pub fn insert_listing(
        &self,
        kind: ListingKind,
        repo: &str,
        query: &str,
        version: Version,
        listing: &Listing,
    ) {
        let value = Value::Listing(listing.clone());
        self.store(Kind::Listing(kind), repo, query, version, value);
    }

    fn lookup(&self, kind: Kind, repo: &str, key: &str) -> Option<Value> {
        self.shm.as_ref()?;
        let now = self.version()?;
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.map.get(&(kind, repo.to_owned(), key.to_owned()))?;
        if entry.version != now {
            return None;
        }
        Some(match &entry.value {
            Value::Manifest(m) => Value::Manifest(m.clone()),
            Value::Listing(l) => Value::Listing(l.clone()),
        })
    }

    fn store(&self, kind: Kind, repo: &str, key: &str, version: Version, value: Value) {
        let Some(version) = version else {
            return;
        };
        let size = value.bytes() + repo.len() + key.len();
        if size > MAX_ENTRY_BYTES {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.bytes + size > MAX_BYTES {
            entries.map.clear();
            entries.bytes = 0;
        }
        let old = entries.map.insert(
            (kind, repo.to_owned(), key.to_owned()),
            Entry { version, value },
        );
        entries.bytes += size;
        if let Some(old) = old {
            let old_size = old.value.bytes() + repo.len() + key.len();
            entries.bytes = entries.bytes.saturating_sub(old_size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn manifest() -> StoredManifest {
        StoredManifest {
            digest: "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
                .parse()
                .unwrap(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn only_on_disk_sqlite_is_cached() {
        let shm = |url: &str| ManifestCache::for_metadata_url(url).shm;
        assert_eq!(
            shm("sqlite:///data/signet.db"),
            Some(PathBuf::from("/data/signet.db-shm"))
        );
        assert_eq!(
            shm("sqlite://./d/x.db?mode=rwc"),
            Some(PathBuf::from("./d/x.db-shm"))
        );
        assert_eq!(shm("sqlite::memory:"), None);
        assert_eq!(shm("sqlite://file:x?mode=memory&cache=shared"), None);
        assert_eq!(shm("postgres://u@h/db"), None);
    }

    #[test]
    fn serves_until_the_header_changes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        std::fs::write(dir.path().join("m.db-shm"), [0u8; 4096]).unwrap();
        let cache = ManifestCache::for_metadata_url(&format!("sqlite://{}", db.display()));
        let v = cache.version();
        assert!(v.is_some());
        cache.insert("a/b", "latest", v, &manifest());
        assert_eq!(cache.get("a/b", "latest"), Some(manifest()));
        assert_eq!(cache.get("a/b", "other"), None);
        // a commit (here: a changed frame count) invalidates every entry
        let mut shm = [0u8; 4096];
        shm[16] = 1;
        std::fs::write(dir.path().join("m.db-shm"), shm).unwrap();
        assert_eq!(cache.get("a/b", "latest"), None);
        // an answer read before that commit is never served after it
        cache.insert("a/b", "latest", v, &manifest());
        assert_eq!(cache.get("a/b", "latest"), None);
    }

    #[test]
    fn listings_are_kept_apart_from_manifests_and_invalidated_alike() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        std::fs::write(dir.path().join("m.db-shm"), [0u8; 4096]).unwrap();
        let cache = ManifestCache::for_metadata_url(&format!("sqlite://{}", db.display()));
        let listing = Listing {
            body: Bytes::from_static(b"{\"tags\":[]}"),
            headers: vec![(
                "Link",
                "</v2/a/b/tags/list?n=1&last=x>; rel=\"next\"".into(),
            )],
        };
        let v = cache.version();
        cache.insert_listing(ListingKind::Tags, "a/b", "n=1", v, &listing);
        assert_eq!(
            cache.listing(ListingKind::Tags, "a/b", "n=1"),
            Some(listing.clone())
        );
        assert_eq!(cache.listing(ListingKind::Tags, "a/b", "n=2"), None);
        assert_eq!(cache.listing(ListingKind::Referrers, "a/b", "n=1"), None);
        assert_eq!(cache.get("a/b", "n=1"), None);
        let mut shm = [0u8; 4096];
        shm[16] = 1;
        std::fs::write(dir.path().join("m.db-shm"), shm).unwrap();
        assert_eq!(cache.listing(ListingKind::Tags, "a/b", "n=1"), None);
    }

    #[test]
    fn without_a_header_nothing_is_cached() {
        let cache = ManifestCache::for_metadata_url("sqlite:///nonexistent/dir/x.db");
        cache.insert("a/b", "latest", cache.version(), &manifest());
        assert_eq!(cache.get("a/b", "latest"), None);
    }
}
