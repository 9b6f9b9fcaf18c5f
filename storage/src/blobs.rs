//! The content-addressed blob store on `object_store`.
//!
//! Bytes reach their address (`blobs/<alg>/<2 hex>/<hex>`) only through [`BlobStore::commit`],
//! which checks that they hash to it; until then they are staged under `uploads/`.
//! Because an address names its content, replacing an object with the same address is
//! harmless, and two writers racing on one blob both end with the same bytes.

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
    GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::digest::{Algorithm, Digest, DigestHasher};
use crate::error::{StorageError, StorageResult};
use crate::range::ResolvedRange;

/// Size of the frames a blob is streamed in: large enough that per-frame overhead
/// disappears next to the copy itself.
const READ_FRAME: usize = 256 * 1024;
/// Size of the parts handed to a multipart upload (S3 wants at least 5 MiB).
const WRITE_PART: usize = 8 * 1024 * 1024;
/// Parts a single upload may have in flight to the store at once.
const WRITE_CONCURRENCY: usize = 4;

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

#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The folder of a local store: staging leftovers that `object_store` does not list
    /// (the `#n` files of multipart writes cut short by a crash) are removed through it.
    local_root: Option<PathBuf>,
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
        Self::new(Arc::new(InMemory::new()))
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
        Ok(if prefix.is_empty() {
            Self::new(Arc::new(s3))
        } else {
            Self::new(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)))
        })
    }

    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            local_root: None,
        }
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
        match self.store.head(&Self::blob_path(digest)).await {
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
            // object_store reads local files in 8 KiB frames; read them in large ones.
            GetResultPayload::File(file, _) => {
                let mut file = tokio::fs::File::from_std(file);
                file.seek(io::SeekFrom::Start(span.start)).await?;
                let reader = file.take(span.end - span.start);
                ReaderStream::with_capacity(reader, READ_FRAME).boxed()
            }
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
                })
            }
        }
    }

    /// Moves prepared bytes to their content address (the staged object is consumed).
    pub async fn place(&self, prepared: &PreparedBlob) -> StorageResult<()> {
        let target = Self::blob_path(&prepared.digest);
        match &prepared.source {
            None => {
                self.store.put(&target, PutPayload::new()).await?;
            }
            Some(source) => {
                self.store.rename(source, &target).await?;
            }
        }
        Ok(())
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

/// A stored object as a stream. A local file is read in [`READ_FRAME`]s: object_store's
/// own stream reads it in 8 KiB frames, one blocking-pool round trip each.
async fn read_whole(
    store: &dyn ObjectStore,
    key: &Path,
) -> io::Result<BoxStream<'static, io::Result<Bytes>>> {
    let result = store.get(key).await.map_err(io::Error::other)?;
    let span = result.range.clone();
    Ok(match result.payload {
        GetResultPayload::File(file, _) => {
            let mut file = tokio::fs::File::from_std(file);
            file.seek(io::SeekFrom::Start(span.start)).await?;
            ReaderStream::with_capacity(file.take(span.end - span.start), READ_FRAME).boxed()
        }
        GetResultPayload::Stream(s) => s.map_err(io::Error::other).boxed(),
    })
}
