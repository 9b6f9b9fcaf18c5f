//! A bounded in-process cache of manifest lookups (`GET`/`HEAD /v2/<name>/manifests/<ref>`),
//! the hottest request, of listing responses (tags lists, referrers indexes), the
//! costliest reads, and of which blobs a repository holds (every blob `GET`, and a
//! lazy-pulling client sends one per `Range`): a hit answers without a round trip to the
//! metadata store.
//!
//! An entry is valid while the store has committed nothing since it was read: a lookup
//! takes the store's change token ([`signet_storage::meta::ChangeToken`]) *before*
//! querying the store and caches its answer under it; a hit takes the token again and
//! must find it unchanged. So an answer is never served after a commit that might change
//! it, whatever the writer (this process, a `signet gc` beside it). A store without a
//! change token caches nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::http::header::{HeaderValue, InvalidHeaderValue};
use signet_storage::meta::{ChangeToken, StoredManifest};
use signet_storage::MetadataStore;

/// Total manifest bytes kept; the cache is emptied when it would grow past this.
const MAX_BYTES: usize = 32 * 1024 * 1024;
/// Larger manifests are not cached.
const MAX_MANIFEST_BYTES: usize = 1024 * 1024;
/// Larger listings are not cached. A referrers index holds every referrer in one
/// response (about 200 bytes each): 8 MiB keeps lists of tens of thousands cached, the
/// ones that cost most to read and serialise again.
const MAX_LISTING_BYTES: usize = 8 * 1024 * 1024;

/// What the store looked like when an answer was read; `None`: not cacheable.
pub type Version = Option<ChangeToken>;

/// A manifest as a pull answers it: the stored manifest and the values of the headers
/// made from it, formatted and checked once, when it is read from the store, not on
/// every pull that finds it cached.
#[derive(Debug, PartialEq)]
pub struct ManifestAnswer {
    pub manifest: StoredManifest,
    pub content_type: HeaderValue,
    pub digest: HeaderValue,
    /// The digest, quoted.
    pub etag: HeaderValue,
}

impl ManifestAnswer {
    /// Refused only for a stored media type that is not a header value.
    pub fn new(manifest: StoredManifest) -> Result<Self, InvalidHeaderValue> {
        let digest = manifest.digest.to_string();
        Ok(Self {
            content_type: HeaderValue::from_str(&manifest.media_type)?,
            etag: HeaderValue::from_str(&["\"", &digest, "\""].concat())?,
            digest: HeaderValue::from_str(&digest)?,
            manifest,
        })
    }

    /// What it holds on the heap: the bytes, the digest and media type, the header values.
    fn bytes(&self) -> usize {
        let m = &self.manifest;
        let headers = self.content_type.len() + self.digest.len() + self.etag.len();
        std::mem::size_of::<Self>()
            + m.content.len()
            + m.digest.hex().len()
            + m.media_type.len()
            + headers
    }
}

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
    Blob,
}

enum Value {
    /// Shared with every answer that serves it: a hit copies no bytes and no digest.
    Manifest(Arc<ManifestAnswer>),
    Listing(Listing),
    /// A blob the repository holds, and its size.
    BlobSize(u64),
}

impl Value {
    fn bytes(&self) -> usize {
        match self {
            Value::Manifest(m) => m.bytes(),
            Value::Listing(l) => l.body.len() + l.headers.iter().map(|h| h.1.len()).sum::<usize>(),
            Value::BlobSize(_) => std::mem::size_of::<u64>(),
        }
    }
}

struct Entry {
    version: ChangeToken,
    value: Value,
}

/// What an entry counts against [`MAX_BYTES`]: its bytes, its keys and the entry itself
/// (its version is held inline, a hundred bytes, so a cache of small entries is bounded
/// by what it really holds).
fn weight(repo: &str, key: &str, value: &Value) -> usize {
    value.bytes() + repo.len() + key.len() + std::mem::size_of::<Entry>()
}

/// Entries by what they are, then repository, then reference or query: nested so that a
/// lookup, on every pull, borrows its keys instead of building them.
type Map = HashMap<Kind, HashMap<String, HashMap<String, Entry>>>;

#[derive(Default)]
struct Entries {
    map: Map,
    bytes: usize,
}

#[derive(Default)]
pub struct ManifestCache {
    /// The store whose change token validates entries; `None` disables the cache.
    store: Option<Arc<dyn MetadataStore>>,
    /// Whether a version must have seen every commit made before it was asked, by any
    /// process (`[storage] replica_consistency = "read-after-write"`).
    read_after_write: bool,
    entries: Mutex<Entries>,
}

impl ManifestCache {
    /// A cache of answers from `store`, valid while its change token is unchanged; with
    /// `read_after_write`, a version has seen every commit acknowledged before it was
    /// asked ([`signet_storage::meta::Repositories::fresh_change_token`]), else the plain
    /// token (exact in one process, bounded between replicas).
    pub fn new(store: Arc<dyn MetadataStore>, read_after_write: bool) -> Self {
        Self {
            store: Some(store),
            read_after_write,
            entries: Mutex::default(),
        }
    }

    /// The store's current version. Read it once per request, before querying the
    /// store, and look entries up under it.
    pub async fn version(&self) -> Version {
        let store = self.store.as_ref()?;
        if self.read_after_write {
            store.fresh_change_token().await
        } else {
            store.change_token()
        }
    }

    /// The manifest `reference` (tag or digest, as in the URL) of `repo`, if cached and
    /// nothing was committed between its reading and `now`.
    pub fn get(&self, now: &Version, repo: &str, reference: &str) -> Option<Arc<ManifestAnswer>> {
        match self.lookup(now, Kind::Manifest, repo, reference)? {
            Value::Manifest(m) => Some(m),
            _ => None,
        }
    }

    /// Caches what the store answered, read at `version`.
    pub fn insert(&self, repo: &str, reference: &str, version: Version, m: &Arc<ManifestAnswer>) {
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
    pub fn listing(
        &self,
        now: &Version,
        kind: ListingKind,
        repo: &str,
        query: &str,
    ) -> Option<Listing> {
        match self.lookup(now, Kind::Listing(kind), repo, query)? {
            Value::Listing(l) => Some(l),
            _ => None,
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

    /// The size of `digest` if `repo` holds it, cached and nothing committed since.
    pub fn blob_size(&self, now: &Version, repo: &str, digest: &str) -> Option<u64> {
        match self.lookup(now, Kind::Blob, repo, digest)? {
            Value::BlobSize(size) => Some(size),
            _ => None,
        }
    }

    /// Caches that `repo` held `digest` of `size` bytes when the store was at `version`.
    pub fn insert_blob_size(&self, repo: &str, digest: &str, version: Version, size: u64) {
        self.store(Kind::Blob, repo, digest, version, Value::BlobSize(size));
    }

    fn lookup(&self, now: &Version, kind: Kind, repo: &str, key: &str) -> Option<Value> {
        let now = now.as_ref()?;
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.map.get(&kind)?.get(repo)?.get(key)?;
        if entry.version != *now {
            return None;
        }
        Some(match &entry.value {
            Value::Manifest(m) => Value::Manifest(m.clone()),
            Value::Listing(l) => Value::Listing(l.clone()),
            Value::BlobSize(size) => Value::BlobSize(*size),
        })
    }

    fn store(&self, kind: Kind, repo: &str, key: &str, version: Version, value: Value) {
        let Some(version) = version else {
            return;
        };
        let size = weight(repo, key, &value);
        let cap = match kind {
            Kind::Manifest | Kind::Blob => MAX_MANIFEST_BYTES,
            Kind::Listing(_) => MAX_LISTING_BYTES,
        };
        if size > cap {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.bytes + size > MAX_BYTES {
            entries.map.clear();
            entries.bytes = 0;
        }
        let old = entries
            .map
            .entry(kind)
            .or_default()
            .entry(repo.to_owned())
            .or_default()
            .insert(key.to_owned(), Entry { version, value });
        entries.bytes += size;
        if let Some(old) = old {
            let old_size = weight(repo, key, &old.value);
            entries.bytes = entries.bytes.saturating_sub(old_size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use signet_storage::{Digest, RepoName};

    fn stored() -> StoredManifest {
        StoredManifest {
            digest: "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
                .parse()
                .unwrap(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            content: Bytes::from_static(b"{}"),
        }
    }

    fn manifest() -> Arc<ManifestAnswer> {
        Arc::new(ManifestAnswer::new(stored()).unwrap())
    }

    #[test]
    fn an_answer_carries_its_headers() {
        let answer = manifest();
        let digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        assert_eq!(answer.digest, digest);
        assert_eq!(answer.etag, format!("\"{digest}\"").as_str());
        assert_eq!(
            answer.content_type,
            "application/vnd.oci.image.manifest.v1+json"
        );
        let unfit = StoredManifest {
            media_type: "application/json\nX-Injected: 1".into(),
            ..stored()
        };
        assert!(ManifestAnswer::new(unfit).is_err());
    }

    /// A cache over an on-disk SQLite store, and a way to commit to that store.
    async fn on_disk() -> (tempfile::TempDir, Arc<dyn MetadataStore>, ManifestCache) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let store = signet_storage::open_metadata(&url).await.unwrap();
        let cache = ManifestCache::new(store.clone(), true);
        (dir, store, cache)
    }

    async fn commit(store: &Arc<dyn MetadataStore>, n: u8) {
        let repo: RepoName = "commits/x".parse().unwrap();
        store
            .link_blob(&repo, &Digest::sha256_of(&[n]), 1)
            .await
            .unwrap();
    }

    #[actix_web::test]
    async fn serves_until_the_store_commits() {
        let (_dir, store, cache) = on_disk().await;
        let v = cache.version().await;
        assert!(v.is_some());
        cache.insert("a/b", "latest", v.clone(), &manifest());
        assert_eq!(cache.get(&v, "a/b", "latest"), Some(manifest()));
        assert_eq!(cache.get(&v, "a/b", "other"), None);
        // a commit invalidates every entry
        commit(&store, 1).await;
        let now = cache.version().await;
        assert_eq!(cache.get(&now, "a/b", "latest"), None);
        // an answer read before that commit is never served after it
        cache.insert("a/b", "latest", v, &manifest());
        assert_eq!(cache.get(&now, "a/b", "latest"), None);
    }

    #[actix_web::test]
    async fn listings_are_kept_apart_from_manifests_and_invalidated_alike() {
        let (_dir, store, cache) = on_disk().await;
        let listing = Listing {
            body: Bytes::from_static(b"{\"tags\":[]}"),
            headers: vec![(
                "Link",
                "</v2/a/b/tags/list?n=1&last=x>; rel=\"next\"".into(),
            )],
        };
        let v = cache.version().await;
        cache.insert_listing(ListingKind::Tags, "a/b", "n=1", v.clone(), &listing);
        assert_eq!(
            cache.listing(&v, ListingKind::Tags, "a/b", "n=1"),
            Some(listing.clone())
        );
        assert_eq!(cache.listing(&v, ListingKind::Tags, "a/b", "n=2"), None);
        assert_eq!(
            cache.listing(&v, ListingKind::Referrers, "a/b", "n=1"),
            None
        );
        assert_eq!(cache.get(&v, "a/b", "n=1"), None);
        commit(&store, 2).await;
        let now = cache.version().await;
        assert_eq!(cache.listing(&now, ListingKind::Tags, "a/b", "n=1"), None);
    }

    #[actix_web::test]
    async fn blob_sizes_are_kept_apart_and_invalidated_alike() {
        let (_dir, store, cache) = on_disk().await;
        let v = cache.version().await;
        cache.insert_blob_size("a/b", "sha256:x", v.clone(), 42);
        assert_eq!(cache.blob_size(&v, "a/b", "sha256:x"), Some(42));
        assert_eq!(cache.blob_size(&v, "a/c", "sha256:x"), None);
        assert_eq!(cache.get(&v, "a/b", "sha256:x"), None);
        commit(&store, 3).await;
        let now = cache.version().await;
        assert_eq!(cache.blob_size(&now, "a/b", "sha256:x"), None);
    }

    #[actix_web::test]
    async fn a_large_referrers_index_is_cached_a_large_manifest_is_not() {
        let (_dir, _store, cache) = on_disk().await;
        let v = cache.version().await;
        // About what 10,000 referrers make: 2 MiB.
        let listing = Listing {
            body: Bytes::from(vec![b' '; 2 * 1024 * 1024]),
            headers: Vec::new(),
        };
        cache.insert_listing(
            ListingKind::Referrers,
            "a/b",
            "sha256:x",
            v.clone(),
            &listing,
        );
        assert_eq!(
            cache.listing(&v, ListingKind::Referrers, "a/b", "sha256:x"),
            Some(listing)
        );
        let too_large = Listing {
            body: Bytes::from(vec![b' '; MAX_LISTING_BYTES + 1]),
            headers: Vec::new(),
        };
        cache.insert_listing(
            ListingKind::Referrers,
            "a/b",
            "sha256:y",
            v.clone(),
            &too_large,
        );
        assert_eq!(
            cache.listing(&v, ListingKind::Referrers, "a/b", "sha256:y"),
            None
        );
        let big = Arc::new(
            ManifestAnswer::new(StoredManifest {
                content: Bytes::from(vec![b' '; 2 * 1024 * 1024]),
                ..stored()
            })
            .unwrap(),
        );
        cache.insert("a/b", "big", v.clone(), &big);
        assert_eq!(cache.get(&v, "a/b", "big"), None);
    }

    #[actix_web::test]
    async fn without_a_change_token_nothing_is_cached() {
        let memory = signet_storage::open_metadata("sqlite::memory:")
            .await
            .unwrap();
        for cache in [ManifestCache::default(), ManifestCache::new(memory, true)] {
            let v = cache.version().await;
            cache.insert("a/b", "latest", v.clone(), &manifest());
            assert_eq!(cache.get(&v, "a/b", "latest"), None);
        }
    }
}
