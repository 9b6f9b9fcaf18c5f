//! Every backend runs the same suites.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream;
use signet_storage::blobs::BlobStore;
use signet_storage::meta::{suite, SqliteMetadata};
use signet_storage::range::ResolvedRange;
use signet_storage::{Algorithm, Digest, StorageError};

#[tokio::test]
async fn sqlite_file_passes_the_metadata_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/meta.db", dir.path().display());
    suite::run(Arc::new(SqliteMetadata::open(&url).await.unwrap())).await;
    // Reopening runs the migrations again as a no-op and keeps the data.
    let again = SqliteMetadata::open(&url).await.unwrap();
    use signet_storage::MetadataStore;
    assert!(again
        .repository_exists(&"suite/pages".parse().unwrap())
        .await
        .unwrap());
}

#[tokio::test]
async fn sqlite_memory_passes_the_metadata_suite() {
    suite::run(Arc::new(
        SqliteMetadata::open("sqlite::memory:").await.unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn memory_passes_the_blob_suite() {
    blob_suite(BlobStore::memory()).await;
}

#[tokio::test]
async fn local_filesystem_passes_the_blob_suite() {
    let dir = tempfile::tempdir().unwrap();
    blob_suite(BlobStore::local(dir.path()).unwrap()).await;
    // Nothing staged is left behind once sessions are done.
    let uploads = dir.path().join("uploads");
    let leftovers: Vec<_> = walk(&uploads);
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(p) else {
        return vec![];
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

fn body(
    chunks: &[&'static [u8]],
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    stream::iter(
        chunks
            .iter()
            .map(|c| Ok(Bytes::from_static(c)))
            .collect::<Vec<_>>(),
    )
}

async fn read_all(store: &BlobStore, d: &Digest, range: Option<ResolvedRange>) -> Vec<u8> {
    use futures::TryStreamExt;
    let b = store.get(d, range).await.unwrap();
    b.stream
        .try_fold(Vec::new(), |mut acc, x| async move {
            acc.extend_from_slice(&x);
            Ok(acc)
        })
        .await
        .unwrap()
}

async fn blob_suite(store: BlobStore) {
    // Monolithic, verified.
    let d = Digest::sha256_of(b"hello world");
    assert_eq!(store.size(&d).await.unwrap(), None);
    assert!(matches!(
        store.get(&d, None).await,
        Err(StorageError::NotFound)
    ));
    assert_eq!(
        store
            .put_verified(&d, body(&[b"hello ", b"world"]))
            .await
            .unwrap(),
        11
    );
    assert_eq!(store.size(&d).await.unwrap(), Some(11));
    assert_eq!(read_all(&store, &d, None).await, b"hello world");
    assert_eq!(
        read_all(&store, &d, Some(ResolvedRange { start: 6, end: 10 })).await,
        b"world"
    );
    let ranged = store
        .get(&d, Some(ResolvedRange { start: 0, end: 4 }))
        .await
        .unwrap();
    assert_eq!(ranged.size, 11);
    // Same blob again: harmless.
    store
        .put_verified(&d, body(&[b"hello world"]))
        .await
        .unwrap();

    // Wrong bytes: refused, nothing stored.
    let other = Digest::sha256_of(b"other");
    match store.put_verified(&other, body(&[b"not other"])).await {
        Err(StorageError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, other);
            assert_eq!(actual, Digest::sha256_of(b"not other"));
        }
        r => panic!("expected a digest mismatch, got {r:?}"),
    }
    assert_eq!(store.size(&other).await.unwrap(), None);

    // Several parts, sha512, assembled and verified.
    let d512 = Digest::of(Algorithm::Sha512, b"abcdef");
    let p1 = store.stage("s1", 0, body(&[b"abc"])).await.unwrap();
    let p2 = store.stage("s1", 1, body(&[b"de", b"f"])).await.unwrap();
    assert_eq!(
        store
            .commit("s1", &[p1.clone(), p2.clone()], &d512)
            .await
            .unwrap(),
        6
    );
    assert_eq!(read_all(&store, &d512, None).await, b"abcdef");
    store.discard_session("s1").await.unwrap();

    // Several parts that do not match.
    let p1 = store.stage("s2", 0, body(&[b"abc"])).await.unwrap();
    let p2 = store.stage("s2", 1, body(&[b"xyz"])).await.unwrap();
    let want = Digest::sha256_of(b"abcdef");
    assert!(matches!(
        store.commit("s2", &[p1, p2], &want).await,
        Err(StorageError::DigestMismatch { .. })
    ));
    assert_eq!(store.size(&want).await.unwrap(), None);
    store.discard_session("s2").await.unwrap();

    // The empty blob.
    let empty = Digest::sha256_of(b"");
    assert_eq!(store.commit("s3", &[], &empty).await.unwrap(), 0);
    assert_eq!(read_all(&store, &empty, None).await, b"");

    // A body that breaks off stores nothing.
    let broken = stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("client went away")),
    ]);
    assert!(matches!(
        store.stage("s4", 0, broken).await,
        Err(StorageError::BodyRead(_))
    ));
    store.discard_session("s4").await.unwrap();

    store.delete(&d).await.unwrap();
    store.delete(&d).await.unwrap();
    assert_eq!(store.size(&d).await.unwrap(), None);
}
