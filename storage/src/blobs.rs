//! The content-addressed blob store on `object_store`.
//!
//! Bytes reach their address (`blobs/<alg>/<2 hex>/<hex>`) only through [`BlobStore::commit`],
//! which checks that they hash to it; until then they are staged under `uploads/`.
//! Because an address names its content, replacing an object with the same address is
//! harmless, and two writers racing on one blob both end with the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Seek, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Sha256, Sha512};
use tokio::task::JoinHandle;

use crate::digest::{Algorithm, Digest, DigestHasher};
use crate::error::{StorageError, StorageResult};
use crate::range::ResolvedRange;

/// Size of the frames a local blob is streamed in: large enough that the blocking-pool
/// round trip per frame disappears next to the copy itself, small enough that a stream
/// holds little (one frame being sent, the next being read).
const READ_FRAME: usize = 1024 * 1024;
/// Size of the parts handed to a multipart upload (S3 wants at least 5 MiB).
const WRITE_PART: usize = 8 * 1024 * 1024;
/// Parts a single upload may have in flight to the store at once.
const WRITE_CONCURRENCY: usize = 4;
/// The smallest part S3 accepts in a multipart upload, except for the last one.
const MIN_PART: usize = 5 * 1024 * 1024;
/// What a chunk appended to a local file is gathered into before one write: large
/// enough that the blocking-pool round trip per write disappears next to the copy.
const FILE_WRITE: usize = 4 * 1024 * 1024;
/// The largest object S3 copies in one request (CopyObject); larger ones are copied in
/// parts.
pub const S3_MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// How long an append waits for another request appending to the same session.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A staged piece of an upload: what one request body delivered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedPart {
    /// Location in the blob store, under the session's staging prefix.
    pub key: String,
    pub size: u64,
    /// sha256 of the part, computed while it streamed in: a single-part upload is then
    /// verified without reading it again.
    pub sha256: String,
}

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
    /// The folder of a local store: staging leftovers that `object_store` does not list
    /// (the `#n` files of multipart writes cut short by a crash) are removed through it,
    /// and chunked uploads append to one file in it.
    local_root: Option<PathBuf>,
    /// The same store's multipart API (S3, memory): a chunked upload is one multipart
    /// upload whose id lives in the session row, so any replica continues it.
    multipart: Option<Arc<dyn MultipartStore>>,
    /// Objects larger than this are moved by a copy in parts, not one server-side copy.
    max_single_copy: u64,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("store", &self.store)
            .field("local_root", &self.local_root)
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
        store.local_root = Some(root);
        Ok(store)
    }

    /// Blobs in memory: for tests.
    pub fn memory() -> Self {
        let memory = Arc::new(InMemory::new());
        let mut store = Self::new(memory.clone());
        store.multipart = Some(memory);
        store
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
        let mut store = if prefix.is_empty() {
            let s3 = Arc::new(s3);
            let mut store = Self::new(s3.clone());
            store.multipart = Some(s3);
            store
        } else {
            let s3 = Arc::new(object_store::prefix::PrefixStore::new(s3, prefix));
            let mut store = Self::new(s3.clone());
            store.multipart = Some(s3);
            store
        };
        store.max_single_copy = S3_MAX_COPY;
        Ok(store)
    }

    /// Blobs in any object store. Chunked uploads keep one staged object per request
    /// body there (no append, no multipart API is assumed).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
            multipart: None,
            max_single_copy: u64::MAX,
        }
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
        self.local_root.as_deref()
    }

    fn blob_path(digest: &Digest) -> Path {
        let hex = digest.hex();
        Path::from(format!(
            "blobs/{}/{}/{}",
            digest.algorithm().name(),
            &hex[..2],
            hex
        ))
    }

    fn staging_prefix(session: &str) -> Path {
        Path::from(format!("uploads/{session}"))
    }

    /// Size of a stored blob, `None` when absent.
    pub async fn size(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        self.object_size(&Self::blob_path(digest)).await
    }

    /// Size of the object at `key`, `None` when absent.
    async fn object_size(&self, key: &Path) -> StorageResult<Option<u64>> {
        match self.store.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a blob for reading, whole or the given inclusive range.
    pub async fn get(
        &self,
        digest: &Digest,
        range: Option<ResolvedRange>,
    ) -> StorageResult<BlobBody> {
        if let Some(root) = &self.local_root {
            let path = root.join(Self::blob_path(digest).as_ref());
            return match open_local_blob(path, range).await? {
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
        let result = match self.store.get_opts(&Self::blob_path(digest), options).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let size = result.meta.size;
        let span = result.range.clone();
        let stream = match result.payload {
            GetResultPayload::File(file, _) => file_frames(file, span.start, span.end - span.start),
            GetResultPayload::Stream(s) => s.map_err(io::Error::other).boxed(),
        };
        Ok(BlobBody {
            size,
            range,
            stream,
        })
    }

    pub async fn delete(&self, digest: &Digest) -> StorageResult<()> {
        match self.store.delete(&Self::blob_path(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
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
        let key = format!(
            "{}/{part_no:06}-{:016x}",
            Self::staging_prefix(session),
            rand::random::<u64>()
        );
        if let Some(root) = &self.local_root {
            // A local file is written directly (the same writer chunked uploads append
            // with): hashing and writing overlap with receiving.
            let file_path = root.join(&key);
            let opened = {
                let file_path = file_path.clone();
                tokio::task::spawn_blocking(move || -> io::Result<std::fs::File> {
                    std::fs::create_dir_all(file_path.parent().expect("a session folder"))?;
                    std::fs::File::create_new(&file_path)
                })
                .await
                .map_err(join_error)??
            };
            let hashers = vec![DigestHasher::new(Algorithm::Sha256)];
            let (size, written) = write_body(Box::new(opened), hashers, body).await;
            let hasher = match written {
                Ok((_, mut hashers)) => hashers.pop().expect("one hasher"),
                Err(e) => {
                    let _ = tokio::fs::remove_file(&file_path).await;
                    return Err(e);
                }
            };
            return Ok(StagedPart {
                key,
                size,
                sha256: hasher.finish().hex().to_string(),
            });
        }
        let path = Path::from(key.as_str());
        let mut hasher = DigestHasher::new(Algorithm::Sha256);
        let (size, outcome) = self.write_stream(&path, body, |b| hasher.update(b)).await;
        outcome?;
        Ok(StagedPart {
            key,
            size,
            sha256: hasher.finish().hex().to_string(),
        })
    }

    /// Writes a stream to `path` through a multipart upload, calling `inspect` on every
    /// frame. Returns the bytes written and the outcome; a failed write leaves nothing.
    async fn write_stream<S, E>(
        &self,
        path: &Path,
        mut body: S,
        mut inspect: impl FnMut(&[u8]),
    ) -> (u64, StorageResult<()>)
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let upload = match self.store.put_multipart(path).await {
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

    /// Verifies that the staged parts, in order, hash to `expected`, leaving one staged
    /// object ready for [`BlobStore::place`]: the single part itself (verified by the hash
    /// computed while it streamed in), or the parts concatenated into an `assembled-`
    /// object. On a mismatch nothing is kept. Nothing reaches the blob's address yet, so
    /// the caller can still wait (for garbage collection) without losing the bytes.
    pub async fn prepare(
        &self,
        session: &str,
        parts: &[StagedPart],
        expected: &Digest,
    ) -> StorageResult<PreparedBlob> {
        match parts {
            [] => {
                let actual = Digest::of(expected.algorithm(), b"");
                check(expected, actual)?;
                Ok(PreparedBlob {
                    digest: expected.clone(),
                    source: None,
                    size: 0,
                    placed: false,
                })
            }
            [only] if expected.algorithm() == Algorithm::Sha256 => {
                let actual: Digest = format!("sha256:{}", only.sha256)
                    .parse()
                    .map_err(|e| StorageError::Corrupt(format!("staged part hash: {e}")))?;
                check(expected, actual)?;
                Ok(PreparedBlob {
                    digest: expected.clone(),
                    source: Some(Path::from(only.key.as_str())),
                    size: only.size,
                    placed: false,
                })
            }
            _ => {
                // Several parts (or another algorithm): concatenate them into one staged
                // object, hashing as we go; it is renamed into place once it verifies.
                let assembled = Path::from(format!(
                    "{}/assembled-{:016x}",
                    Self::staging_prefix(session),
                    rand::random::<u64>()
                ));
                let store = self.store.clone();
                let keys: Vec<Path> = parts.iter().map(|p| Path::from(p.key.as_str())).collect();
                let concatenated = futures::stream::iter(keys)
                    .then(move |key| {
                        let store = store.clone();
                        async move { read_whole(store.as_ref(), &key).await }
                    })
                    .try_flatten()
                    .boxed();
                let mut hasher = DigestHasher::new(expected.algorithm());
                let (size, outcome) = self
                    .write_stream(&assembled, concatenated, |b| hasher.update(b))
                    .await;
                outcome?;
                if let Err(e) = check(expected, hasher.finish()) {
                    let _ = self.store.delete(&assembled).await;
                    return Err(e);
                }
                Ok(PreparedBlob {
                    digest: expected.clone(),
                    source: Some(assembled),
                    size,
                    placed: false,
                })
            }
        }
    }

    /// Moves prepared bytes to their content address; when the address already holds
    /// them the staged object is left for the caller to discard with its session.
    pub async fn place(&self, prepared: &PreparedBlob) -> StorageResult<()> {
        if prepared.placed {
            return Ok(());
        }
        let target = Self::blob_path(&prepared.digest);
        // The bytes are already there (the same digest pushed again): addresses are
        // content, so they are these bytes. Moving the staged copy over them would only
        // cost a write-back (ext4 flushes a file renamed over another) or an S3 copy;
        // the caller discards the staging.
        if self.object_size(&target).await? == Some(prepared.size) {
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
        let source = read_whole(self.store.as_ref(), from).await?;
        let (_, outcome) = self.write_stream(to, source, |_| {}).await;
        outcome?;
        match self.store.delete(from).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes one staged part that will not be used.
    pub async fn discard_part(&self, part: &StagedPart) -> StorageResult<()> {
        match self.store.delete(&Path::from(part.key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes everything staged for a session (finished, cancelled or expired).
    pub async fn discard_session(&self, session: &str) -> StorageResult<()> {
        let prefix = Self::staging_prefix(session);
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            match meta {
                Ok(meta) => match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                },
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // A write interrupted by a crash leaves a temporary `<part>#<n>` file that the
        // listing above does not show; remove the session's folder itself.
        if let Some(root) = &self.local_root {
            if !session.is_empty() && !session.contains(['/', '\\', '.']) {
                match tokio::fs::remove_dir_all(root.join("uploads").join(session)).await {
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

/// How an upload session's bytes are staged; kept in the session row beside the hash
/// state, so whichever process receives the next request continues where the last one
/// stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Staging {
    /// One staged object per request body, listed in the session's parts (stores with
    /// neither append nor a multipart API, and sessions opened before the others existed).
    #[default]
    Parts,
    /// One local file, `uploads/<session>/data`, appended to by each request under an
    /// exclusive lock. Bytes past the session's size belong to a request that did not
    /// complete; the next one cuts them off.
    File,
    /// A multipart upload to `uploads/<session>/data`, opened with the first full part.
    /// `etags` are its parts in order (`uploaded` bytes); the rest, shorter than a part
    /// may be, waits in the `tail` object for the next request or the final one.
    Multipart {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload_id: Option<String>,
        #[serde(default)]
        etags: Vec<String>,
        #[serde(default)]
        uploaded: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<String>,
    },
}

/// What an upload session carries besides its size: where its bytes are, and the state
/// of each running hash over them (by algorithm name), so that the final request
/// verifies the digest without reading the bytes again.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadProgress {
    pub staging: Staging,
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
}

/// The exclusive lock on a session's local staged file, held from before the session
/// row is read until after it records the append (or the blob is placed). The kernel
/// drops it with the process, so a crash never leaves a session locked.
pub struct FileLock {
    file: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// The outcome of appending one request body to a session's staging.
#[derive(Debug)]
pub struct Appended {
    /// Bytes the body held.
    pub added: u64,
    /// The session's progress with them: to be recorded with the new size in one update.
    pub progress: UploadProgress,
    /// A staged object this append replaced (the previous tail): removable once the row
    /// records `progress`.
    superseded: Option<Path>,
    /// A staged object this append made (the new tail): removable if the row never
    /// records `progress`.
    provisional: Option<Path>,
}

impl BlobStore {
    fn staged_data(session: &str) -> Path {
        Path::from(format!("uploads/{session}/data"))
    }

    /// Where a new upload session stages its bytes, with fresh hashes of `algorithms`.
    pub fn new_progress(&self, algorithms: &[Algorithm]) -> UploadProgress {
        let staging = if self.local_root.is_some() {
            Staging::File
        } else if self.multipart.is_some() {
            Staging::Multipart {
                upload_id: None,
                etags: Vec::new(),
                uploaded: 0,
                tail: None,
            }
        } else {
            return UploadProgress::default();
        };
        let hashes = algorithms
            .iter()
            .map(|a| (a.name().to_string(), save_hasher(&DigestHasher::new(*a))))
            .collect();
        UploadProgress { staging, hashes }
    }

    /// What is wrong with the bytes a session says are staged, if anything: staged parts
    /// gone, the staged file or tail object gone, or fewer bytes staged than the session
    /// received.
    pub async fn staging_problem(
        &self,
        session: &crate::meta::UploadSession,
    ) -> StorageResult<Option<String>> {
        let mut gone = Vec::new();
        for part in &session.parts {
            if self
                .object_size(&Path::from(part.key.as_str()))
                .await?
                .is_none()
            {
                gone.push(part.key.as_str());
            }
        }
        if !gone.is_empty() {
            return Ok(Some(format!("staged parts are gone: {}", gone.join(", "))));
        }
        let Some(progress) = &session.progress else {
            return Ok(None);
        };
        let size = session.size;
        match &progress.staging {
            Staging::Parts => Ok(None),
            // Bytes past `size` are a cut-short request's, cut off by the next one.
            Staging::File if size == 0 => Ok(None),
            Staging::File => {
                let key = Self::staged_data(&session.id);
                Ok(match self.object_size(&key).await? {
                    None => Some(format!("{key} is gone ({size} bytes received)")),
                    Some(held) if held < size => {
                        Some(format!("{key} holds {held} of the {size} bytes received"))
                    }
                    Some(_) => None,
                })
            }
            Staging::Multipart { uploaded, tail, .. } => {
                let tail_size = match tail {
                    None => 0,
                    Some(key) => match self.object_size(&Path::from(key.as_str())).await? {
                        Some(held) => held,
                        None => return Ok(Some(format!("the tail object {key} is gone"))),
                    },
                };
                Ok((uploaded + tail_size != size).then(|| {
                    format!(
                        "{uploaded} bytes in parts and {tail_size} in the tail, of the {size} \
                         bytes received"
                    )
                }))
            }
        }
    }

    /// Takes the exclusive lock on a session's staged file (creating it), waiting a while
    /// for a request that holds it. `None` when the session does not stage to a file.
    pub async fn lock_staged_file(
        &self,
        session: &str,
        progress: &UploadProgress,
    ) -> StorageResult<Option<FileLock>> {
        if progress.staging != Staging::File {
            return Ok(None);
        }
        let path = self.local_data_file(session)?;
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
        Ok(Some(FileLock { file: Some(file) }))
    }

    fn local_data_file(&self, session: &str) -> StorageResult<PathBuf> {
        let root = self.local_root.as_ref().ok_or_else(|| {
            StorageError::Corrupt("a file-staged upload on a remote store".into())
        })?;
        if session.is_empty() || session.contains(['/', '\\', '.']) {
            return Err(StorageError::Corrupt(format!("upload id {session:?}")));
        }
        Ok(root.join("uploads").join(session).join("data"))
    }

    /// Appends one request body to a session that holds `size` bytes, hashing it into
    /// the session's running hashes. Nothing the session row records is changed: the
    /// caller records [`Appended::progress`] with the new size, then calls
    /// [`BlobStore::settle`]. `lock` is the session's [`FileLock`] for file staging.
    pub async fn append_staged<S, E>(
        &self,
        session: &str,
        size: u64,
        progress: &UploadProgress,
        lock: Option<&mut FileLock>,
        body: S,
    ) -> StorageResult<Appended>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let hashers = load_hashers(&progress.hashes)?;
        match &progress.staging {
            Staging::File => {
                let lock = lock.ok_or_else(|| {
                    StorageError::Corrupt("appending to a staged file without its lock".into())
                })?;
                let (added, hashers) = append_file(lock, size, hashers, body).await?;
                Ok(Appended {
                    added,
                    progress: UploadProgress {
                        staging: Staging::File,
                        hashes: save_hashers(&hashers),
                    },
                    superseded: None,
                    provisional: None,
                })
            }
            Staging::Multipart { .. } => {
                self.append_multipart(session, progress, hashers, body)
                    .await
            }
            Staging::Parts => Err(StorageError::Corrupt(
                "a part-staged upload has no running state".into(),
            )),
        }
    }

    /// Removes what an append left that is no longer needed: the replaced tail when the
    /// session row recorded the append, its own new tail when it did not.
    pub async fn settle(&self, appended: &Appended, recorded: bool) {
        let garbage = if recorded {
            &appended.superseded
        } else {
            &appended.provisional
        };
        if let Some(path) = garbage {
            if let Err(e) = self.store.delete(path).await {
                tracing::debug!(%path, error = %e, "could not remove a staged tail");
            }
        }
    }

    async fn append_multipart<S, E>(
        &self,
        session: &str,
        progress: &UploadProgress,
        mut hashers: Vec<DigestHasher>,
        mut body: S,
    ) -> StorageResult<Appended>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let Staging::Multipart {
            upload_id,
            etags,
            uploaded,
            tail,
        } = &progress.staging
        else {
            unreachable!("called for multipart staging only");
        };
        let multipart = self
            .multipart
            .clone()
            .ok_or_else(|| StorageError::Corrupt("a multipart upload on a plain store".into()))?;
        let key = Self::staged_data(session);
        let (mut upload_id, mut etags, mut uploaded) =
            (upload_id.clone(), etags.clone(), *uploaded);
        let mut buffer = BytesMut::new();
        let mut added = 0u64;
        let mut in_flight: std::collections::VecDeque<JoinHandle<object_store::Result<PartId>>> =
            Default::default();
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
                    if let Some(tail) = tail {
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
                while buffer.len() >= session_part_size(etags.len() + in_flight.len()) {
                    let size = session_part_size(etags.len() + in_flight.len());
                    let part = buffer.split_to(size).freeze();
                    self.send_part(
                        &multipart,
                        &key,
                        &mut upload_id,
                        &mut etags,
                        &mut uploaded,
                        &mut in_flight,
                        part,
                    )
                    .await?;
                }
            }
            if buffer.len() >= MIN_PART {
                let part = buffer.split().freeze();
                self.send_part(
                    &multipart,
                    &key,
                    &mut upload_id,
                    &mut etags,
                    &mut uploaded,
                    &mut in_flight,
                    part,
                )
                .await?;
            }
            while let Some(job) = in_flight.pop_front() {
                etags.push(job.await.map_err(join_error)??.content_id);
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
            return Ok(Appended {
                added,
                progress: progress.clone(),
                superseded: None,
                provisional: None,
            });
        }
        let new_tail = if buffer.is_empty() {
            None
        } else {
            let path = Path::from(format!(
                "uploads/{session}/tail-{uploaded}-{:016x}",
                rand::random::<u64>()
            ));
            self.store
                .put(&path, PutPayload::from_bytes(buffer.freeze()))
                .await?;
            Some(path)
        };
        Ok(Appended {
            added,
            progress: UploadProgress {
                staging: Staging::Multipart {
                    upload_id,
                    etags,
                    uploaded,
                    tail: new_tail.as_ref().map(|p| p.to_string()),
                },
                hashes: save_hashers(&hashers),
            },
            superseded: tail.as_ref().map(|t| Path::from(t.as_str())),
            provisional: new_tail,
        })
    }

    /// Sends one part of a session's multipart upload (opening the upload with its first
    /// part), keeping at most [`WRITE_CONCURRENCY`] in flight.
    #[allow(clippy::too_many_arguments)]
    async fn send_part(
        &self,
        multipart: &Arc<dyn MultipartStore>,
        key: &Path,
        upload_id: &mut Option<String>,
        etags: &mut Vec<String>,
        uploaded: &mut u64,
        in_flight: &mut std::collections::VecDeque<JoinHandle<object_store::Result<PartId>>>,
        part: Bytes,
    ) -> StorageResult<()> {
        let id = match upload_id {
            Some(id) => id.clone(),
            None => {
                let id = multipart.create_multipart(key).await?;
                *upload_id = Some(id.clone());
                id
            }
        };
        while in_flight.len() >= WRITE_CONCURRENCY {
            let job = in_flight.pop_front().expect("a part in flight");
            etags.push(job.await.map_err(join_error)??.content_id);
        }
        let index = etags.len() + in_flight.len();
        *uploaded += part.len() as u64;
        let (multipart, key) = (multipart.clone(), key.clone());
        in_flight.push_back(tokio::spawn(async move {
            multipart
                .put_part(&key, &id, index, PutPayload::from_bytes(part))
                .await
        }));
        Ok(())
    }

    /// Verifies a session's `size` staged bytes against `expected`, by its running hash
    /// when it kept one for that algorithm (reading them again otherwise), and leaves
    /// them as one staged object for [`BlobStore::place`]: the local file as it is, the
    /// multipart upload completed with its tail as the last part. On a mismatch nothing
    /// is placed. A session whose bytes an earlier attempt already moved to `expected`
    /// (and that failed later) is found there.
    pub async fn prepare_staged(
        &self,
        session: &str,
        size: u64,
        progress: &UploadProgress,
        lock: Option<&mut FileLock>,
        expected: &Digest,
    ) -> StorageResult<PreparedBlob> {
        let running = match progress.hashes.get(expected.algorithm().name()) {
            Some(state) => Some(load_hasher(expected.algorithm(), state)?.finish()),
            None => None,
        };
        if let Some(actual) = &running {
            check(expected, actual.clone())?;
        }
        let staged = match &progress.staging {
            Staging::Parts => {
                return Err(StorageError::Corrupt(
                    "a part-staged upload has no running state".into(),
                ))
            }
            _ if size == 0 => None,
            Staging::File => {
                let lock = lock.ok_or_else(|| {
                    StorageError::Corrupt("finishing a staged file without its lock".into())
                })?;
                let file = lock
                    .file
                    .as_ref()
                    .ok_or_else(|| StorageError::Corrupt("staged file lock lost".into()))?;
                let length = file.metadata()?.len();
                if length > size {
                    // A request that did not complete wrote past the session's end.
                    file.set_len(size)?;
                } else if length < size {
                    return self.already_placed(expected, size, running.is_some()).await;
                }
                Some(Self::staged_data(session))
            }
            Staging::Multipart {
                upload_id,
                etags,
                tail,
                ..
            } => match upload_id {
                None => Some(Path::from(tail.as_deref().ok_or_else(|| {
                    StorageError::Corrupt("upload bytes without a tail".into())
                })?)),
                Some(id) => {
                    let key = Self::staged_data(session);
                    // Already whole when an earlier final request completed the
                    // upload, then failed.
                    if self.object_size(&key).await? != Some(size) {
                        let completed = self
                            .complete_multipart(&key, id, etags, tail.as_deref())
                            .await;
                        if let Err(e) = completed {
                            // Maybe an earlier final request got further.
                            return match self
                                .already_placed(expected, size, running.is_some())
                                .await
                            {
                                Ok(placed) => Ok(placed),
                                Err(_) => Err(e),
                            };
                        }
                    }
                    Some(key)
                }
            },
        };
        if running.is_none() {
            // No running hash for this algorithm: read the bytes once to verify them.
            let mut hasher = DigestHasher::new(expected.algorithm());
            if let Some(path) = &staged {
                let mut stream = read_whole(self.store.as_ref(), path).await?;
                while let Some(frame) = stream.next().await {
                    hasher.update(&frame?);
                }
            }
            check(expected, hasher.finish())?;
        }
        Ok(PreparedBlob {
            digest: expected.clone(),
            source: staged,
            size,
            placed: false,
        })
    }

    async fn complete_multipart(
        &self,
        key: &Path,
        id: &str,
        etags: &[String],
        tail: Option<&str>,
    ) -> StorageResult<()> {
        let multipart = self
            .multipart
            .clone()
            .ok_or_else(|| StorageError::Corrupt("a multipart upload on a plain store".into()))?;
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
            let part = multipart
                .put_part(key, &id, parts.len(), PutPayload::from_bytes(bytes))
                .await?;
            parts.push(part);
        }
        multipart.complete_multipart(key, &id, parts).await?;
        Ok(())
    }

    /// Gives up a session's multipart upload, if it opened one and did not complete it,
    /// so the store frees its parts (objects under the session's prefix are removed by
    /// [`BlobStore::discard_session`]).
    pub async fn abort_staged(&self, session: &str, progress: &UploadProgress) {
        let (
            Some(multipart),
            Staging::Multipart {
                upload_id: Some(id),
                ..
            },
        ) = (&self.multipart, &progress.staging)
        else {
            return;
        };
        // Completed uploads answer with an error: nothing is left to free then.
        if let Err(e) = multipart
            .abort_multipart(&Self::staged_data(session), &id.clone())
            .await
        {
            tracing::debug!(upload = %session, error = %e, "multipart upload not aborted");
        }
    }

    /// The staged bytes are gone: an earlier final request verified and moved them to
    /// `expected`, then failed (linking, say). They count only if they are there with the
    /// session's size and the running hash vouched for them.
    async fn already_placed(
        &self,
        expected: &Digest,
        size: u64,
        verified: bool,
    ) -> StorageResult<PreparedBlob> {
        if verified && self.size(expected).await? == Some(size) {
            return Ok(PreparedBlob {
                digest: expected.clone(),
                source: None,
                size,
                placed: true,
            });
        }
        Err(StorageError::Corrupt(format!(
            "the staged bytes of an upload of {size} bytes are missing"
        )))
    }
}

/// The size of part `index` of a session's multipart upload. S3 allows 10 000 parts:
/// 8 MiB parts would stop a blob at 78 GiB, so every 2 000 parts the size doubles, up to
/// 64 MiB (about 360 GiB in all). Blobs of usual sizes keep small parts, and little
/// memory: at most [`WRITE_CONCURRENCY`] parts are in flight.
fn session_part_size(index: usize) -> usize {
    WRITE_PART << (index / 2000).min(3)
}

/// Appends `body` to the locked file at offset `size` (cutting off whatever a request
/// that did not complete wrote past it), through [`write_body`].
async fn append_file<S, E>(
    lock: &mut FileLock,
    size: u64,
    hashers: Vec<DigestHasher>,
    body: S,
) -> StorageResult<(u64, Vec<DigestHasher>)>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Held = (nix::fcntl::Flock<std::fs::File>, Vec<DigestHasher>);
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
    Ok((added, hashers))
}

/// A batch being hashed and written, giving the file and hashes back.
type Writing<F> = JoinHandle<io::Result<(F, Vec<DigestHasher>)>>;

/// Streams `body` into `file` at its current position, hashing it into `hashers`.
/// Frames are gathered into [`FILE_WRITE`] batches; each batch is hashed and written
/// (one `writev`, no copy into a buffer) on a blocking thread while the next arrives.
/// Returns the bytes the body held, and the file and hashes back unless it failed.
async fn write_body<F, S, E>(
    file: F,
    hashers: Vec<DigestHasher>,
    mut body: S,
) -> (u64, StorageResult<(F, Vec<DigestHasher>)>)
where
    F: std::ops::DerefMut<Target = std::fs::File> + Send + 'static,
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut idle: Option<(F, Vec<DigestHasher>)> = Some((file, hashers));
    let mut writing: Option<Writing<F>> = None;
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
                let (mut file, mut hashers) = match writing.take() {
                    Some(job) => job.await.map_err(join_error)??,
                    None => idle.take().expect("the file is idle or being written"),
                };
                let batch = std::mem::take(&mut frames);
                gathered = 0;
                writing = Some(tokio::task::spawn_blocking(move || {
                    for frame in &batch {
                        for h in &mut hashers {
                            h.update(frame);
                        }
                    }
                    write_frames(&mut file, &batch)?;
                    Ok((file, hashers))
                }));
            }
            if done {
                return Ok(());
            }
        }
    }
    .await;
    // Wait for the last write either way, so the lock goes back to its holder.
    let held = match writing.take() {
        Some(job) => match job.await {
            Ok(held) => held,
            Err(e) => return (added, Err(join_error(e))),
        },
        None => Ok(idle.take().expect("the file is idle")),
    };
    if let Err(e) = outcome {
        return (added, Err(e));
    }
    (added, held.map_err(StorageError::from))
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

fn join_error(e: tokio::task::JoinError) -> StorageError {
    StorageError::Io(io::Error::other(e))
}

/// A running hash as text for the session row (`SerializableState`, hex).
fn save_hasher(h: &DigestHasher) -> String {
    match h {
        DigestHasher::Sha256(h) => hex::encode(h.serialize()),
        DigestHasher::Sha512(h) => hex::encode(h.serialize()),
    }
}

fn load_hasher(algorithm: Algorithm, state: &str) -> StorageResult<DigestHasher> {
    let corrupt = || StorageError::Corrupt(format!("{} hash state of an upload", algorithm.name()));
    let bytes = hex::decode(state).map_err(|_| corrupt())?;
    Ok(match algorithm {
        Algorithm::Sha256 => {
            let state =
                SerializedState::<Sha256>::try_from(bytes.as_slice()).map_err(|_| corrupt())?;
            DigestHasher::Sha256(Sha256::deserialize(&state).map_err(|_| corrupt())?)
        }
        Algorithm::Sha512 => {
            let state =
                SerializedState::<Sha512>::try_from(bytes.as_slice()).map_err(|_| corrupt())?;
            DigestHasher::Sha512(Sha512::deserialize(&state).map_err(|_| corrupt())?)
        }
    })
}

fn load_hashers(hashes: &BTreeMap<String, String>) -> StorageResult<Vec<DigestHasher>> {
    hashes
        .iter()
        .map(|(name, state)| {
            let algorithm = match name.as_str() {
                "sha256" => Algorithm::Sha256,
                "sha512" => Algorithm::Sha512,
                other => {
                    return Err(StorageError::Corrupt(format!(
                        "hash {other:?} of an upload"
                    )))
                }
            };
            load_hasher(algorithm, state)
        })
        .collect()
}

fn save_hashers(hashers: &[DigestHasher]) -> BTreeMap<String, String> {
    hashers
        .iter()
        .map(|h| {
            let name = match h {
                DigestHasher::Sha256(_) => Algorithm::Sha256.name(),
                DigestHasher::Sha512(_) => Algorithm::Sha512.name(),
            };
            (name.to_string(), save_hasher(h))
        })
        .collect()
}

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

/// A stored object as a stream (a local file through [`file_frames`]).
async fn read_whole(
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

/// `len` bytes of a local file from `start`, in [`READ_FRAME`]s. object_store's own
/// stream reads 8 KiB frames, and a tokio file copies every read through its own
/// buffer; here each frame is read on a blocking thread straight into the memory it is
/// sent from (`read_to_end` fills a vector's spare capacity without zeroing it first),
/// and the next frame is read while the current one is being sent.
fn file_frames(file: std::fs::File, start: u64, len: u64) -> BoxStream<'static, io::Result<Bytes>> {
    let positioned = tokio::task::spawn_blocking(move || {
        let mut file = file;
        file.seek(io::SeekFrom::Start(start))?;
        Ok((file, Bytes::new()))
    });
    frames_from(joined(positioned), len)
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

/// A local blob opened, measured, positioned and its first frame read in one trip to
/// the blocking pool (a 1 MiB range is one trip in all). `None` when it is absent.
async fn open_local_blob(
    path: PathBuf,
    range: Option<ResolvedRange>,
) -> io::Result<Option<(u64, BoxStream<'static, io::Result<Bytes>>)>> {
    let opened = tokio::task::spawn_blocking(move || {
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        let (start, len) = match range {
            Some(r) => (r.start, r.len()),
            None => (0, size),
        };
        if start > 0 {
            file.seek(io::SeekFrom::Start(start))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_grow_so_ten_thousand_hold_large_blobs() {
        assert_eq!(session_part_size(0), 8 * 1024 * 1024);
        assert_eq!(session_part_size(1999), 8 * 1024 * 1024);
        assert_eq!(session_part_size(2000), 16 * 1024 * 1024);
        assert_eq!(session_part_size(9999), 64 * 1024 * 1024);
        let total: u64 = (0..10_000).map(|i| session_part_size(i) as u64).sum();
        assert!(total > 300 * 1024 * 1024 * 1024, "{total}");
        // Every part but the last must be at least 5 MiB.
        assert!((0..10_000).all(|i| session_part_size(i) >= MIN_PART));
    }

    #[test]
    fn hash_states_survive_the_session_row() {
        // Hashing in two halves across a save and load equals hashing at once.
        let bytes = b"the first half|and the second half of a blob";
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut first = DigestHasher::new(algorithm);
            first.update(&bytes[..15]);
            let saved = save_hasher(&first);
            let mut resumed = load_hasher(algorithm, &saved).unwrap();
            resumed.update(&bytes[15..]);
            assert_eq!(resumed.finish(), Digest::of(algorithm, bytes));
        }
        assert!(matches!(
            load_hasher(Algorithm::Sha256, "00ff"),
            Err(StorageError::Corrupt(_))
        ));
    }
}
