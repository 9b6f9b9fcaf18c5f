//! The content-addressed blob store on `object_store`.
//!
//! Bytes reach their address (`blobs/<alg>/<2 hex>/<hex>`) only through
//! [`BlobStore::place`] of a [`PreparedBlob`], which exists only once they hashed to
//! it; until then they are staged under `uploads/` ([`staging`]). Because an address
//! names its content, replacing an object with the same address is harmless, and two
//! writers racing on one blob both end with the same bytes.
//!
//! - [`paths`]: every key, spelled once;
//! - [`staging`]: the three ways an upload waits for its digest, one type each;
//! - [`objects`]: reading, writing, measuring and removing objects of any store;
//! - [`local_file`]: large-frame reads and writes of local files;
//! - [`hash_state`]: running hashes saved in a session row.

mod cached_read;
mod hash_state;
mod local_file;
mod objects;
pub mod paths;
pub mod staging;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload,
};

use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};
use crate::range::ResolvedRange;
use staging::file::FileStaging;
use staging::multipart::MultipartStaging;
use staging::parts::PartStaging;
pub use staging::{Appended, FileLock, MultipartState, StagedPart, Staging, UploadProgress};

/// Deletions [`BlobStore::delete_each`] keeps in flight.
const DELETES_AT_ONCE: usize = 16;

/// The largest object S3 copies in one request (CopyObject); larger ones are copied in
/// parts.
pub const S3_MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;

/// Verified bytes, staged, waiting to be moved to their address by [`BlobStore::place`].
#[derive(Debug, Clone)]
pub struct PreparedBlob {
    pub digest: Digest,
    /// The staged object holding the bytes; `None` for the empty blob.
    source: Option<Path>,
    pub size: u64,
    /// Already at its address (an earlier attempt moved it there).
    placed: bool,
}

impl PreparedBlob {
    /// Bytes that verified as `digest`, staged at `source`.
    fn staged(digest: &Digest, source: Option<Path>, size: u64) -> Self {
        Self {
            digest: digest.clone(),
            source,
            size,
            placed: false,
        }
    }

    /// Bytes an earlier attempt verified and moved to their address.
    fn placed(digest: &Digest, size: u64) -> Self {
        Self {
            digest: digest.clone(),
            source: None,
            size,
            placed: true,
        }
    }
}

/// A blob (or part of one) ready to be streamed to a client.
pub struct BlobBody {
    /// Size of the whole blob.
    pub size: u64,
    /// The part being returned, when a range was asked for.
    pub range: Option<ResolvedRange>,
    pub stream: BoxStream<'static, io::Result<Bytes>>,
}

/// Where an S3-compatible blob store is (`[storage.s3]` in the server's configuration).
///
/// Requests are path-style (`ENDPOINT/BUCKET/KEY`), which every S3-compatible server
/// understands. Empty credentials fall back to the usual `AWS_*` environment variables.
/// The secret never appears in `Debug` output (nor, through it, in logs).
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// `http(s)://host:port`; empty means AWS itself (from the region).
    pub endpoint: String,
    /// Empty means `us-east-1` (what most S3-compatible servers expect).
    pub region: String,
    /// The bucket; it must exist. Setting it turns the S3 blob store on.
    pub bucket: String,
    /// Folder inside the bucket under which everything is kept; empty: the bucket root.
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Allows a plain `http://` endpoint (a store on loopback or a private network).
    pub allow_http: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl S3Config {
    /// Whether S3 is configured at all (a bucket is named).
    pub fn enabled(&self) -> bool {
        !self.bucket.is_empty()
    }
}

#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Chunked uploads append to one file under a local store's folder (through which
    /// staging leftovers that `object_store` does not list are removed too: the `#n`
    /// files of multipart writes cut short by a crash).
    file: Option<FileStaging>,
    /// The same store's multipart API (S3, memory): a chunked upload is one multipart
    /// upload whose id lives in the session row, so any replica continues it.
    multipart: Option<MultipartStaging>,
    /// Objects larger than this are moved by a copy in parts, not one server-side copy.
    max_single_copy: u64,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("store", &self.store)
            .field("local_root", &self.local_root())
            .field("multipart", &self.multipart.is_some())
            .finish()
    }
}

impl BlobStore {
    /// Blobs under `root` on the local filesystem (created when missing).
    pub fn local(root: impl Into<PathBuf>) -> StorageResult<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        let fs = LocalFileSystem::new_with_prefix(&root)?;
        let mut store = Self::new(Arc::new(fs));
        store.file = Some(FileStaging { root });
        Ok(store)
    }

    /// Blobs in memory: for tests.
    pub fn memory() -> Self {
        let memory = Arc::new(InMemory::new());
        Self::new(memory.clone()).with_multipart(memory)
    }

    /// Blobs in an S3-compatible bucket. Nothing is contacted yet: a wrong endpoint or
    /// credentials show on the first request.
    pub fn s3(config: &S3Config) -> StorageResult<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(if config.region.is_empty() {
                "us-east-1"
            } else {
                &config.region
            })
            .with_virtual_hosted_style_request(false)
            .with_allow_http(config.allow_http)
            // `copy_if_not_exists` through a multipart upload (what AWS itself supports).
            .with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
        if !config.endpoint.is_empty() {
            builder = builder.with_endpoint(&config.endpoint);
        }
        if !config.access_key_id.is_empty() {
            builder = builder.with_access_key_id(&config.access_key_id);
        }
        if !config.secret_access_key.is_empty() {
            builder = builder.with_secret_access_key(&config.secret_access_key);
        }
        let s3 = builder.build()?;
        let prefix = config.prefix.trim_matches('/');
        let store = if prefix.is_empty() {
            let s3 = Arc::new(s3);
            Self::new(s3.clone()).with_multipart(s3)
        } else {
            let s3 = Arc::new(object_store::prefix::PrefixStore::new(s3, prefix));
            Self::new(s3.clone()).with_multipart(s3)
        };
        Ok(store.with_max_single_copy(S3_MAX_COPY))
    }

    /// Blobs in any object store. Chunked uploads keep one staged object per request
    /// body there (no append, no multipart API is assumed).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            file: None,
            multipart: None,
            max_single_copy: u64::MAX,
        }
    }

    /// Chunked uploads through `api`, the multipart API of the same store.
    fn with_multipart(mut self, api: Arc<dyn object_store::multipart::MultipartStore>) -> Self {
        self.multipart = Some(MultipartStaging {
            store: self.store.clone(),
            api,
        });
        self
    }

    /// Lowers the size above which objects are copied in parts instead of by one
    /// server-side copy (S3 refuses a CopyObject over 5 GiB): lets tests take that path
    /// with small blobs.
    pub fn with_max_single_copy(mut self, bytes: u64) -> Self {
        self.max_single_copy = bytes;
        self
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The folder of a local store (`None` for memory and S3).
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.file.as_ref().map(|f| f.root.as_path())
    }

    fn parts(&self) -> PartStaging<'_> {
        PartStaging {
            store: &self.store,
            local_root: self.local_root(),
        }
    }

    /// Size of a stored blob, `None` when absent.
    pub async fn size(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        objects::size(self.store.as_ref(), &paths::blob(digest)).await
    }

    /// Opens a blob for reading, whole or the given inclusive range.
    pub async fn get(
        &self,
        digest: &Digest,
        range: Option<ResolvedRange>,
    ) -> StorageResult<BlobBody> {
        if let Some(root) = self.local_root() {
            let path = paths::local(root, &paths::blob(digest));
            return match local_file::open_blob(path, range).await? {
                Some((size, stream)) => Ok(BlobBody {
                    size,
                    range,
                    stream,
                }),
                None => Err(StorageError::NotFound),
            };
        }
        let options =
            GetOptions::new().with_range(range.map(|r| GetRange::Bounded(r.start..r.end + 1)));
        let result = match self.store.get_opts(&paths::blob(digest), options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        let span = result.range.clone();
        let stream = match result.payload {
            GetResultPayload::File(file, _) => {
                local_file::file_frames(file, span.start, span.end - span.start)
            }
            GetResultPayload::Stream(s) => Box::pin(s.map_err(io::Error::other)),
        };
        Ok(BlobBody {
            size,
            range,
            stream,
        })
    }

    /// A local blob's file, opened on the calling thread, when the kernel's caches hold
    /// its path and the `len` bytes from `start` (see [`cached_read::holds`]): what a
    /// response can send from the page cache to the socket without reading it first.
    /// `None` for memory and S3 stores, a file shorter than the range, or anything that
    /// would wait for the disk: [`BlobStore::get`] then reads it.
    pub fn open_resident(&self, digest: &Digest, start: u64, len: u64) -> Option<std::fs::File> {
        let root = self.local_root()?;
        let (file, size) = cached_read::open(&paths::local(root, &paths::blob(digest)))?;
        let end = start.checked_add(len)?;
        (end <= size && cached_read::holds(&file, start, len)).then_some(file)
    }

    pub async fn delete(&self, digest: &Digest) -> StorageResult<()> {
        objects::remove(self.store.as_ref(), &paths::blob(digest)).await
    }

    /// Deletes the bytes of each of `digests`, [`DELETES_AT_ONCE`] at a time; each one's
    /// outcome, in order. One at a time, a collection waits out a round trip per blob
    /// (a thread hand-off on a disk, a request on S3).
    pub async fn delete_each(&self, digests: &[Digest]) -> Vec<StorageResult<()>> {
        // Made up front (a future starts when first polled): a stream mapping digests to
        // borrowed futures is not `Send` for callers that spawn.
        let deletions: Vec<_> = digests.iter().map(|digest| self.delete(digest)).collect();
        futures::stream::iter(deletions)
            .buffered(DELETES_AT_ONCE)
            .collect()
            .await
    }

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
        self.parts().stage(session, part_no, body).await
    }

    /// Verifies that the staged parts, in order, hash to `expected`, then makes them the
    /// blob at that address. Returns the blob's size. On a mismatch nothing is stored.
    pub async fn commit(
        &self,
        session: &str,
        parts: &[StagedPart],
        expected: &Digest,
    ) -> StorageResult<u64> {
        let prepared = self.prepare(session, parts, expected).await?;
        self.place(&prepared).await?;
        Ok(prepared.size)
    }

    /// Verifies staged parts into one staged object (see [`PartStaging::prepare`]).
    pub async fn prepare(
        &self,
        session: &str,
        parts: &[StagedPart],
        expected: &Digest,
    ) -> StorageResult<PreparedBlob> {
        self.parts().prepare(session, parts, expected).await
    }

    /// Moves prepared bytes to their content address; when the address already holds
    /// them the staged object is left for the caller to discard with its session.
    pub async fn place(&self, prepared: &PreparedBlob) -> StorageResult<()> {
        if prepared.placed {
            return Ok(());
        }
        let target = paths::blob(&prepared.digest);
        // The bytes are already there (the same digest pushed again): addresses are
        // content, so they are these bytes. Moving the staged copy over them would only
        // cost a write-back (ext4 flushes a file renamed over another) or an S3 copy;
        // the caller discards the staging.
        if objects::size(self.store.as_ref(), &target).await? == Some(prepared.size) {
            return Ok(());
        }
        match &prepared.source {
            None => {
                self.store.put(&target, PutPayload::new()).await?;
            }
            Some(source) => self.move_object(source, &target, prepared.size).await?,
        }
        Ok(())
    }

    /// Renames `from` to `to`. On S3 a rename is a server-side copy, which one request
    /// can only do up to 5 GiB: larger objects are streamed into a multipart upload.
    async fn move_object(&self, from: &Path, to: &Path, size: u64) -> StorageResult<()> {
        if size <= self.max_single_copy {
            self.store.rename(from, to).await?;
            return Ok(());
        }
        let source = objects::read_whole(self.store.as_ref(), from).await?;
        let (_, outcome) = objects::write_stream(self.store.as_ref(), to, source, |_| {}).await;
        outcome?;
        objects::remove(self.store.as_ref(), from).await
    }

    /// Removes one staged part that will not be used.
    pub async fn discard_part(&self, part: &StagedPart) -> StorageResult<()> {
        self.parts().discard(part).await
    }

    /// Removes everything staged for a session (finished, cancelled or expired).
    pub async fn discard_session(&self, session: &str) -> StorageResult<()> {
        let prefix = paths::session(session);
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = futures::StreamExt::next(&mut listing).await {
            match meta {
                Ok(meta) => objects::remove(self.store.as_ref(), &meta.location).await?,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A write interrupted by a crash leaves a temporary `<part>#<n>` file that the
        // listing above does not show; remove the session's folder itself.
        if let Some(root) = self.local_root() {
            if let Ok(folder) = paths::local_session(root, session) {
                match tokio::fs::remove_dir_all(folder).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Stores `body` as the blob `expected` in one go (monolithic upload), verified.
    pub async fn put_verified<S, E>(&self, expected: &Digest, body: S) -> StorageResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let session = format!("direct-{}", uuid::Uuid::new_v4());
        let result = async {
            let part = self.stage(&session, 0, body).await?;
            self.commit(&session, &[part], expected).await
        }
        .await;
        let _ = self.discard_session(&session).await;
        result
    }
}

/// Whether `actual` is the digest the client named.
fn check(expected: &Digest, actual: Digest) -> StorageResult<()> {
    if *expected == actual {
        Ok(())
    } else {
        Err(StorageError::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }
}
