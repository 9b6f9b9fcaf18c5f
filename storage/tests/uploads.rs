//! Chunked uploads keep their running hash and staging in the session row: the final
//! request verifies without reading the bytes again, any process continues any session,
//! and a request that fails half-way leaves nothing counted. Every backend runs the same
//! scenarios: an appended local file, S3 multipart uploads (SeaweedFS, moto), memory
//! (multipart API) and a plain object store (one staged object per request).

use std::sync::Arc;

use bytes::Bytes;
use futures::{stream, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use signet_storage::blobs::{BlobStore, MultipartState, Staging};
use signet_storage::fsck::{self, FsckOptions};
use signet_storage::meta::{PostgresMetadata, SqliteMetadata};
use signet_storage::uploads::Uploads;
use signet_storage::{Algorithm, Digest, MetadataStore, RepoName, StorageError};

const MIB: usize = 1024 * 1024;

/// Deterministic, incompressible-looking bytes.
fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A body in frames of at most 64 KiB (as HTTP delivers it).
fn body(bytes: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let frames: Vec<_> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(frames)
}

/// A body that breaks off after `bytes`.
fn broken(bytes: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let mut frames: Vec<_> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    frames.push(Err(std::io::Error::other("client went away")));
    stream::iter(frames)
}

async fn read_all(store: &BlobStore, d: &Digest) -> Vec<u8> {
    let b = store.get(d, None).await.unwrap();
    b.stream
        .try_fold(Vec::new(), |mut acc, x| async move {
            acc.extend_from_slice(&x);
            Ok(acc)
        })
        .await
        .unwrap()
}

async fn staged_objects(store: &BlobStore) -> Vec<String> {
    let prefix = object_store::path::Path::from("uploads");
    store
        .object_store()
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

async fn sqlite() -> Arc<dyn MetadataStore> {
    Arc::new(SqliteMetadata::open("sqlite::memory:").await.unwrap())
}

/// The scenarios every backend passes. `expect` is the staging a new session gets.
async fn upload_suite(blobs: BlobStore, meta: Arc<dyn MetadataStore>, expect: &str) {
    let uploads = Uploads::new(blobs.clone(), meta.clone());
    // A second process on the same stores (another replica).
    let other = Uploads::new(blobs.clone(), meta.clone());
    let repo: RepoName = "uploads/suite".parse().unwrap();

    // Chunks of every size around the multipart limits, alternating between processes;
    // one chunk breaks off half-way and is sent again.
    let sizes = [
        MIB / 2,
        3 * MIB,
        6 * MIB,
        17 * MIB,
        1,
        5 * MIB,
        8 * MIB,
        100,
    ];
    let total: usize = sizes.iter().sum();
    let bytes = data(total, 1);
    let want = Digest::sha256_of(&bytes);
    let mut session = uploads.start(&repo).await.unwrap();
    let staging = match session.progress.as_ref().map(|p| &p.staging) {
        Some(Staging::File) => "file",
        Some(Staging::Multipart(_)) => "multipart",
        None | Some(Staging::Parts) => "parts",
    };
    assert_eq!(staging, expect);
    let mut offset = 0;
    for (i, size) in sizes.iter().enumerate() {
        let chunk = &bytes[offset..offset + size];
        let by = if i % 2 == 0 { &uploads } else { &other };
        if i == 3 {
            // Half the chunk arrives, then the client goes away: nothing is counted.
            let failed = by
                .append(&session, Some(offset as u64), broken(&chunk[..size / 2]))
                .await;
            assert!(
                matches!(failed, Err(StorageError::BodyRead(_))),
                "{failed:?}"
            );
            session = by.get(&repo, &session.id).await.unwrap().unwrap();
            assert_eq!(session.size, offset as u64);
        }
        session = by
            .append(&session, Some(offset as u64), body(chunk))
            .await
            .unwrap();
        offset += size;
        assert_eq!(session.size, offset as u64);
    }
    // fsck finds the half-done session's staged bytes whole, however they are staged.
    let report = fsck::check(&meta, &blobs, &FsckOptions::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.uploads_checked, 1);
    // A chunk that does not follow on is refused, and changes nothing.
    assert!(matches!(
        uploads.append(&session, Some(3), body(b"late")).await,
        Err(StorageError::OutOfOrder { start: 3, size }) if size == total as u64
    ));
    let last = other.get(&repo, &session.id).await.unwrap().unwrap();
    assert_eq!(last.size, total as u64);
    assert_eq!(other.finish(&last, &want).await.unwrap(), total as u64);
    assert_eq!(blobs.size(&want).await.unwrap(), Some(total as u64));
    assert!(read_all(&blobs, &want).await == bytes, "blob bytes differ");
    assert_eq!(
        meta.blob_in_repository(&repo, &want).await.unwrap(),
        Some(total as u64)
    );
    assert!(uploads.get(&repo, &session.id).await.unwrap().is_none());

    // The same bytes pushed again (another repository): the stored blob stays, the new
    // staging goes (checked with the rest at the end).
    let again: RepoName = "uploads/again".parse().unwrap();
    let session = other.start(&again).await.unwrap();
    let session = other.append(&session, Some(0), body(&bytes)).await.unwrap();
    assert_eq!(uploads.finish(&session, &want).await.unwrap(), total as u64);
    assert!(read_all(&blobs, &want).await == bytes, "blob bytes differ");
    assert_eq!(
        meta.blob_in_repository(&again, &want).await.unwrap(),
        Some(total as u64)
    );

    // The wrong digest: refused, nothing stored, the session closed.
    let bytes = data(6 * MIB + 7, 2);
    let session = uploads.start(&repo).await.unwrap();
    let session = uploads.append(&session, None, body(&bytes)).await.unwrap();
    let wrong = Digest::sha256_of(b"something else");
    assert!(matches!(
        uploads.finish(&session, &wrong).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(blobs.size(&wrong).await.unwrap(), None);
    assert!(uploads.get(&repo, &session.id).await.unwrap().is_none());

    // sha512: announced (a running hash) or not (the bytes are read once more).
    for announced in [true, false] {
        let bytes = data(2 * MIB + 3, 3 + announced as u8);
        let want = Digest::of(Algorithm::Sha512, &bytes);
        let session = if announced {
            uploads
                .start_with(&repo, &[Algorithm::Sha256, Algorithm::Sha512])
                .await
                .unwrap()
        } else {
            uploads.start(&repo).await.unwrap()
        };
        let session = uploads
            .append(&session, Some(0), body(&bytes[..MIB]))
            .await
            .unwrap();
        let session = other
            .append(&session, Some(MIB as u64), body(&bytes[MIB..]))
            .await
            .unwrap();
        assert_eq!(
            uploads.finish(&session, &want).await.unwrap(),
            bytes.len() as u64
        );
        assert!(read_all(&blobs, &want).await == bytes);
    }

    // Small blobs (all in one tail, or nothing at all).
    for bytes in [b"tiny".to_vec(), Vec::new()] {
        let want = Digest::sha256_of(&bytes);
        let session = uploads.start(&repo).await.unwrap();
        let session = uploads.append(&session, None, body(&bytes)).await.unwrap();
        assert_eq!(
            uploads.finish(&session, &want).await.unwrap(),
            bytes.len() as u64
        );
        assert_eq!(read_all(&blobs, &want).await, bytes);
    }

    // Two requests appending at the same offset at once: one is counted, the other is
    // told where the session ends; the blob holds the winner's bytes.
    let (a, b) = (data(3 * MIB, 5), data(3 * MIB, 6));
    let session = uploads.start(&repo).await.unwrap();
    let (ra, rb) = tokio::join!(
        uploads.append(&session, Some(0), body(&a)),
        other.append(&session, Some(0), body(&b))
    );
    let winner = match (ra, rb) {
        (Ok(_), Err(StorageError::OutOfOrder { .. })) => &a,
        (Err(StorageError::OutOfOrder { .. }), Ok(_)) => &b,
        other => panic!("exactly one append must win: {other:?}"),
    };
    let session = uploads.get(&repo, &session.id).await.unwrap().unwrap();
    let want = Digest::sha256_of(winner);
    assert_eq!(
        uploads.finish(&session, &want).await.unwrap(),
        winner.len() as u64
    );
    assert!(read_all(&blobs, &want).await == *winner);

    // The whole blob in the final request (a POST, then a PUT with the body), small and
    // large enough for a multipart upload: stored, the session closed.
    for bytes in [data(MIB / 2, 8), data(9 * MIB, 9)] {
        let want = Digest::sha256_of(&bytes);
        let session = uploads.start(&repo).await.unwrap();
        let stored = uploads
            .append_and_finish(&session, None, body(&bytes), &want)
            .await
            .unwrap();
        assert_eq!(stored, bytes.len() as u64);
        assert!(read_all(&blobs, &want).await == bytes, "blob bytes differ");
        assert!(uploads.get(&repo, &session.id).await.unwrap().is_none());
    }
    // That body breaking off: the session stays open, holding nothing, and the request
    // sent again (to the other process) stores the blob.
    let bytes = data(9 * MIB, 10);
    let want = Digest::sha256_of(&bytes);
    let session = uploads.start(&repo).await.unwrap();
    let failed = uploads
        .append_and_finish(&session, None, broken(&bytes[..5 * MIB]), &want)
        .await;
    assert!(
        matches!(failed, Err(StorageError::BodyRead(_))),
        "{failed:?}"
    );
    let session = other.get(&repo, &session.id).await.unwrap().unwrap();
    assert_eq!(session.size, 0);
    let stored = other
        .append_and_finish(&session, Some(0), body(&bytes), &want)
        .await
        .unwrap();
    assert_eq!(stored, bytes.len() as u64);
    assert!(read_all(&blobs, &want).await == bytes, "blob bytes differ");
    // The wrong digest: refused, nothing stored, the session closed.
    let session = uploads.start(&repo).await.unwrap();
    let wrong = Digest::sha256_of(b"not these bytes");
    let refused = uploads
        .append_and_finish(&session, None, body(&data(9 * MIB, 11)), &wrong)
        .await;
    assert!(
        matches!(refused, Err(StorageError::DigestMismatch { .. })),
        "{refused:?}"
    );
    assert_eq!(blobs.size(&wrong).await.unwrap(), None);
    assert!(uploads.get(&repo, &session.id).await.unwrap().is_none());
    // A session already holding bytes: the last chunk in the final request.
    let bytes = data(3 * MIB, 12);
    let want = Digest::sha256_of(&bytes);
    let session = uploads.start(&repo).await.unwrap();
    let session = uploads
        .append(&session, Some(0), body(&bytes[..MIB]))
        .await
        .unwrap();
    let stored = other
        .append_and_finish(&session, Some(MIB as u64), body(&bytes[MIB..]), &want)
        .await
        .unwrap();
    assert_eq!(stored, bytes.len() as u64);
    assert!(read_all(&blobs, &want).await == bytes, "blob bytes differ");
    assert!(uploads.get(&repo, &session.id).await.unwrap().is_none());

    // A cancelled session leaves nothing staged.
    let session = uploads.start(&repo).await.unwrap();
    let session = uploads
        .append(&session, None, body(&data(9 * MIB, 7)))
        .await
        .unwrap();
    uploads.cancel(&session).await.unwrap();
    assert!(uploads.get(&repo, &session.id).await.unwrap().is_none());

    let left = staged_objects(&blobs).await;
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_uploads_append_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::local(dir.path()).unwrap();
    upload_suite(blobs, sqlite().await, "file").await;
    // The local folder holds no hidden leftovers either.
    let uploads = dir.path().join("uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_uploads_use_the_multipart_api() {
    upload_suite(BlobStore::memory(), sqlite().await, "multipart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_a_multipart_session_whose_tail_is_gone() {
    let blobs = BlobStore::memory();
    let meta = sqlite().await;
    let uploads = Uploads::new(blobs.clone(), meta.clone());
    let repo: RepoName = "uploads/fsck".parse().unwrap();
    // 9 MiB: one 8 MiB part uploaded, the last MiB (under the 5 MiB a part needs)
    // waiting in the tail object.
    let session = uploads.start(&repo).await.unwrap();
    let session = uploads
        .append(&session, Some(0), body(&data(9 * MIB, 8)))
        .await
        .unwrap();
    let Some(Staging::Multipart(MultipartState {
        tail: Some(tail),
        uploaded,
        ..
    })) = session.progress.as_ref().map(|p| &p.staging)
    else {
        panic!("a multipart session with a tail: {session:?}");
    };
    assert_eq!(*uploaded, 8 * MIB as u64);
    let options = FsckOptions::default();
    assert!(fsck::check(&meta, &blobs, &options)
        .await
        .unwrap()
        .is_clean());

    let tail = object_store::path::Path::from(tail.as_str());
    blobs.object_store().delete(&tail).await.unwrap();
    let report = fsck::check(&meta, &blobs, &options).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{report:#?}");
    assert_eq!(report.problems[0].kind, "upload-missing-parts");
    assert!(
        report.problems[0].detail.contains("tail object"),
        "{report:#?}"
    );

    let repair = FsckOptions {
        repair: true,
        ..options.clone()
    };
    assert!(fsck::check(&meta, &blobs, &repair)
        .await
        .unwrap()
        .is_clean());
    assert!(uploads.get(&repo, &session.id).await.unwrap().is_none());
    assert!(fsck::check(&meta, &blobs, &options)
        .await
        .unwrap()
        .is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_object_store_uploads_stage_one_object_per_request() {
    let store = BlobStore::new(Arc::new(object_store::memory::InMemory::new()));
    upload_suite(store, sqlite().await, "parts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_uploads_are_multipart_uploads_across_replicas() {
    let db = signet_storage::testing::TestDatabase::create().await;
    let s3 = signet_storage::testing::TestS3::seaweedfs().await;
    let meta: Arc<dyn MetadataStore> = Arc::new(PostgresMetadata::open(&db.url).await.unwrap());
    upload_suite(s3.blob_store(), meta, "multipart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_uploads_are_multipart_uploads() {
    let s3 = signet_storage::testing::TestS3::moto().await;
    upload_suite(s3.blob_store(), sqlite().await, "multipart").await;
}

/// Blobs larger than one server-side copy may be (5 GiB on S3) reach their address by a
/// copy in parts: shown with the limit lowered to 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_blobs_larger_than_one_copy_are_moved_in_parts() {
    let s3 = signet_storage::testing::TestS3::seaweedfs().await;
    let blobs = s3.blob_store().with_max_single_copy(MIB as u64);
    let uploads = Uploads::new(blobs.clone(), sqlite().await);
    let repo: RepoName = "uploads/big".parse().unwrap();
    let bytes = data(12 * MIB + 5, 9);
    let want = Digest::sha256_of(&bytes);
    let session = uploads.start(&repo).await.unwrap();
    let session = uploads
        .append(&session, Some(0), body(&bytes))
        .await
        .unwrap();
    assert_eq!(
        uploads.finish(&session, &want).await.unwrap(),
        bytes.len() as u64
    );
    assert!(read_all(&blobs, &want).await == bytes);
    // Monolithic uploads take the same way.
    let bytes = data(3 * MIB, 10);
    let want = Digest::sha256_of(&bytes);
    assert_eq!(
        uploads
            .put_monolithic(&repo, &want, body(&bytes))
            .await
            .unwrap(),
        bytes.len() as u64
    );
    assert!(read_all(&blobs, &want).await == bytes);
    let left = staged_objects(&blobs).await;
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

/// A request dropped mid-body (its client went away) gives its session back at once:
/// the next append proceeds instead of waiting for the lease or lock to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_request_does_not_block_its_session() {
    let dir = tempfile::tempdir().unwrap();
    for blobs in [BlobStore::memory(), BlobStore::local(dir.path()).unwrap()] {
        let uploads = Uploads::new(blobs.clone(), sqlite().await);
        let repo: RepoName = "uploads/dropped".parse().unwrap();
        let session = uploads.start(&repo).await.unwrap();
        let stalls = stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(data(MIB, 11)))])
            .chain(stream::pending());
        let dropped = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            uploads.append(&session, Some(0), Box::pin(stalls)),
        )
        .await;
        assert!(
            dropped.is_err(),
            "the stalled request ran until it was dropped"
        );
        let bytes = data(2 * MIB, 12);
        let session = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            uploads.append(&session, Some(0), body(&bytes)),
        )
        .await
        .expect("the session is free again")
        .unwrap();
        let want = Digest::sha256_of(&bytes);
        assert_eq!(
            uploads.finish(&session, &want).await.unwrap(),
            bytes.len() as u64
        );
        assert!(read_all(&blobs, &want).await == bytes);
    }
}
