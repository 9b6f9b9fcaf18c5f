//! Every backend runs the same suites.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream;
use signet_storage::blobs::BlobStore;
use signet_storage::meta::{suite, BlobLinks, Manifests, PostgresMetadata, SqliteMetadata};
use signet_storage::range::ResolvedRange;
use signet_storage::{open_metadata, Algorithm, Digest, MetadataStore, StorageError};

/// Runs the suite on the store `url` names, then opens it again under each of
/// `reopen_as` (as a restart or a second replica does): the migrations run again as a
/// no-op and the data is kept.
async fn passes_the_suite_and_reopens(url: &str, reopen_as: &[&str]) {
    suite::run(open_metadata(url).await.unwrap()).await;
    for again in reopen_as {
        let again = open_metadata(again).await.unwrap();
        assert!(again
            .repository_exists(&"suite/pages".parse().unwrap())
            .await
            .unwrap());
    }
}

#[tokio::test]
async fn sqlite_file_passes_the_metadata_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/meta.db", dir.path().display());
    passes_the_suite_and_reopens(&url, &[&url]).await;
}

#[tokio::test]
async fn sqlite_memory_passes_the_metadata_suite() {
    suite::run(Arc::new(
        SqliteMetadata::open("sqlite::memory:").await.unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn postgres_passes_the_metadata_suite() {
    let db = signet_storage::testing::TestDatabase::create().await;
    // Both URL schemes name PostgreSQL.
    let other_scheme = db.url.replacen("postgres://", "postgresql://", 1);
    passes_the_suite_and_reopens(&db.url, &[&db.url, &other_scheme]).await;
}

#[tokio::test]
async fn open_metadata_refuses_other_schemes_without_echoing_secrets() {
    let err = open_metadata("mysql://u:hunter2@h/db")
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("mysql") && !text.contains("hunter2"),
        "{text}"
    );
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

#[tokio::test]
async fn seaweedfs_passes_the_blob_suite() {
    let s3 = signet_storage::testing::TestS3::seaweedfs().await;
    blob_suite(s3.blob_store()).await;
    assert_nothing_staged(&s3.blob_store()).await;
}

#[tokio::test]
async fn moto_passes_the_blob_suite() {
    let s3 = signet_storage::testing::TestS3::moto().await;
    blob_suite(s3.blob_store()).await;
    assert_nothing_staged(&s3.blob_store()).await;
}

#[tokio::test]
async fn s3_under_a_prefix_passes_the_blob_suite_and_keeps_to_it() {
    use futures::TryStreamExt;
    let s3 = signet_storage::testing::TestS3::moto().await;
    let mut config = s3.config.clone();
    config.prefix = "/registry/one/".into();
    blob_suite(BlobStore::s3(&config).unwrap()).await;
    let everything: Vec<_> = s3
        .blob_store()
        .object_store()
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(
        everything
            .iter()
            .all(|k| k.starts_with("registry/one/blobs/")),
        "{everything:?}"
    );
}

#[test]
fn s3_settings_hide_the_secret() {
    let config = signet_storage::S3Config {
        bucket: "b".into(),
        access_key_id: "AKIA".into(),
        secret_access_key: "hunter2".into(),
        ..Default::default()
    };
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("<redacted>"),
        "{shown}"
    );
}

/// A chunked upload begun on one replica continues and finishes on another: the session
/// lives in PostgreSQL, its staged parts in the shared bucket.
#[tokio::test]
async fn s3_upload_begun_on_one_replica_finishes_on_another() {
    use signet_storage::uploads::Uploads;
    let db = signet_storage::testing::TestDatabase::create().await;
    let s3 = signet_storage::testing::TestS3::seaweedfs().await;
    let replica = || async {
        Uploads::new(
            s3.blob_store(),
            Arc::new(PostgresMetadata::open(&db.url).await.unwrap()) as Arc<dyn MetadataStore>,
        )
    };
    let (a, b) = (replica().await, replica().await);
    let repo: signet_storage::RepoName = "replicas/app".parse().unwrap();
    let session = a.start(&repo).await.unwrap();
    let session = a
        .append(&session, Some(0), body(&[b"begun "]))
        .await
        .unwrap();
    let on_b = b
        .get(&repo, &session.id)
        .await
        .unwrap()
        .expect("B sees A's session");
    assert_eq!(on_b.size, 6);
    let on_b = b.append(&on_b, Some(6), body(&[b"on A, "])).await.unwrap();
    assert_eq!(on_b.size, 12);
    let on_a = a.get(&repo, &session.id).await.unwrap().unwrap();
    let on_a = a
        .append(&on_a, Some(12), body(&[b"ended on B"]))
        .await
        .unwrap();
    let last = b.get(&repo, &on_a.id).await.unwrap().unwrap();
    let want = Digest::sha256_of(b"begun on A, ended on B");
    assert_eq!(b.finish(&last, &want).await.unwrap(), 22);
    assert_eq!(
        read_all(&s3.blob_store(), &want, None).await,
        b"begun on A, ended on B"
    );
    assert!(a.get(&repo, &session.id).await.unwrap().is_none());
    assert_nothing_staged(&s3.blob_store()).await;
}

/// Nothing is left under `uploads/` once every session is finished or discarded.
async fn assert_nothing_staged(store: &BlobStore) {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from("uploads");
    let left: Vec<_> = store
        .object_store()
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(left.is_empty(), "staging left behind: {left:?}");
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

/// Two replicas (two pools on one database) pushing the same blob, manifest and tag at
/// once end in one state; of two `If-None-Match: *` creations of one tag, one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_racing_on_one_tag_agree() {
    use signet_storage::meta::{ManifestPut, ManifestRecord, TagCondition};
    use signet_storage::{Reference, RepoName};

    let db = signet_storage::testing::TestDatabase::create().await;
    let a = Arc::new(PostgresMetadata::open(&db.url).await.unwrap());
    let b = Arc::new(PostgresMetadata::open(&db.url).await.unwrap());
    let repo: RepoName = "race/app".parse().unwrap();
    let layer = Digest::sha256_of(b"layer");
    let put = |body: &str, tag: &str, condition: Option<TagCondition>| ManifestPut {
        repo: repo.clone(),
        manifest: ManifestRecord {
            digest: Digest::sha256_of(body.as_bytes()),
            media_type: signet_storage::manifest::OCI_MANIFEST.into(),
            content: Bytes::from(body.to_string()),
            artifact_type: None,
            subject: None,
            annotations: Default::default(),
        },
        blobs: vec![layer.clone()],
        children: vec![],
        sizes: Vec::new(),
        tags: vec![tag.parse().unwrap()],
        condition,
        immutable: Vec::new(),
    };
    for round in 0..20 {
        let (ra, rb) = tokio::join!(a.link_blob(&repo, &layer, 5), b.link_blob(&repo, &layer, 5));
        ra.unwrap();
        rb.unwrap();
        let same = put("{\"same\":1}", "latest", None);
        let (ra, rb) = tokio::join!(a.put_manifest(&same), b.put_manifest(&same));
        ra.unwrap();
        rb.unwrap();

        let tag = format!("once-{round}");
        let first = put(
            &format!("{{\"a\":{round}}}"),
            &tag,
            Some(TagCondition::NotAt(vec![])),
        );
        let second = put(
            &format!("{{\"b\":{round}}}"),
            &tag,
            Some(TagCondition::NotAt(vec![])),
        );
        let (ra, rb) = tokio::join!(a.put_manifest(&first), b.put_manifest(&second));
        let won = match (ra, rb) {
            (Ok(()), Err(StorageError::PreconditionFailed(_))) => &first,
            (Err(StorageError::PreconditionFailed(_)), Ok(())) => &second,
            other => panic!("exactly one creation must win: {other:?}"),
        };
        let now = a
            .get_manifest(&repo, &Reference::Tag(tag.parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now.digest, won.manifest.digest);
    }
    assert_eq!(a.blob_in_repository(&repo, &layer).await.unwrap(), Some(5));
}
