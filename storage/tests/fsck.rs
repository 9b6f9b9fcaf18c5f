//! `fsck`: a clean store reports clean; corrupt bytes, lost derived rows and leftover
//! staging are reported; `repair` rebuilds what derives from manifest bytes and removes
//! orphaned staging, and never deletes a blob. Every test runs on SQLite and on
//! PostgreSQL (`<test>::sqlite`, `<test>::postgres`).

use std::sync::Arc;

use bytes::Bytes;
use futures::stream;
use serde_json::json;
use signet_storage::blobs::{paths, BlobStore};
use signet_storage::fsck::{check, FsckOptions, FsckReport};
use signet_storage::meta::{ManifestPut, PostgresMetadata, SqliteMetadata, UploadSession};
use signet_storage::testing::TestDatabase;
use signet_storage::uploads::Uploads;
use signet_storage::{Digest, MetadataStore, RepoName, Tag};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

struct World {
    meta: Arc<dyn MetadataStore>,
    blobs: BlobStore,
    uploads: Uploads,
    url: String,
    dir: tempfile::TempDir,
    _database: Option<TestDatabase>,
}

enum Backend {
    Sqlite,
    Postgres,
}

async fn world(backend: Backend) -> World {
    let dir = tempfile::tempdir().unwrap();
    let (meta, url, database): (Arc<dyn MetadataStore>, _, _) = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}/meta.db", dir.path().display());
            (
                Arc::new(SqliteMetadata::open(&url).await.unwrap()),
                url,
                None,
            )
        }
        Backend::Postgres => {
            let db = TestDatabase::create().await;
            let meta = PostgresMetadata::open(&db.url).await.unwrap();
            (Arc::new(meta), db.url.clone(), Some(db))
        }
    };
    let blobs = BlobStore::local(dir.path().join("blobs")).unwrap();
    let uploads = Uploads::new(blobs.clone(), meta.clone());
    World {
        meta,
        blobs,
        uploads,
        url,
        dir,
        _database: database,
    }
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(super::world(super::Backend::Sqlite).await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$test(super::world(super::Backend::Postgres).await).await
            }
        }
    )*};
}

on_both_backends!(
    a_clean_store_is_clean,
    corrupt_blob_bytes_are_reported_and_kept,
    lost_edges_and_attachment_rows_are_rebuilt,
    leftover_staging_is_reported_and_removed,
    a_session_whose_staged_file_lost_bytes_is_reported_and_dropped,
    a_session_whose_bytes_were_placed_before_it_closed_is_no_problem,
    a_descriptor_size_the_store_disagrees_with_is_reported,
    a_repository_of_many_windows_is_checked_whole,
    rows_of_no_manifest_are_reported,
);

fn repo() -> RepoName {
    "app".parse().unwrap()
}

/// A request body of one frame.
fn body(bytes: &[u8]) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Unpin {
    stream::iter(vec![Ok(Bytes::copy_from_slice(bytes))])
}

impl World {
    /// The local file a chunked session appends to.
    fn staged_data(&self, session: &str) -> std::path::PathBuf {
        paths::local(&self.dir.path().join("blobs"), &paths::data(session))
    }

    async fn push_blob(&self, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        self.uploads
            .put_monolithic(&repo(), &d, body(bytes))
            .await
            .unwrap();
        d
    }

    /// A chunked upload's next request: `bytes` appended at `offset`.
    async fn append(&self, session: &UploadSession, offset: u64, bytes: &[u8]) -> UploadSession {
        self.uploads
            .append(session, Some(offset), body(bytes))
            .await
            .unwrap()
    }

    async fn put(&self, body: Vec<u8>, blobs: Vec<Digest>, tag: Option<&str>) -> Digest {
        let parsed = signet_storage::manifest::parse_manifest(&body, Some(OCI_MANIFEST)).unwrap();
        let digest = Digest::sha256_of(&body);
        let put = ManifestPut {
            blobs,
            tags: tag.map(|t| t.parse::<Tag>().unwrap()).into_iter().collect(),
            ..ManifestPut::derived(repo(), digest.clone(), &parsed, Bytes::from(body))
        };
        self.meta.put_manifest(&put).await.unwrap();
        digest
    }

    /// An image (config + one layer) tagged `v1`, a signature of it by `subject`, and a
    /// cosign signature tag: edges and attachment rows of every source.
    async fn populate(&self) -> (Digest, Digest, Digest) {
        let config = self.push_blob(b"{}").await;
        let layer = self.push_blob(b"layer bytes").await;
        let image = self
            .put(
                manifest(&config, &[(&layer, 11)], json!({})),
                vec![config.clone(), layer.clone()],
                Some("v1"),
            )
            .await;
        let sig_layer = self.push_blob(b"signature").await;
        let referrer = self
            .put(
                manifest(
                    &config,
                    &[(&sig_layer, 9)],
                    json!({
                        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                        "subject": {"mediaType": OCI_MANIFEST, "digest": image.to_string(), "size": 1},
                    }),
                ),
                vec![config.clone(), sig_layer.clone()],
                None,
            )
            .await;
        let cosign = self
            .put(
                manifest(
                    &config,
                    &[(&sig_layer, 9)],
                    json!({"annotations": {"x": "y"}}),
                ),
                vec![config.clone(), sig_layer],
                Some(&format!("sha256-{}.sig", image.hex())),
            )
            .await;
        (image, referrer, cosign)
    }

    async fn fsck(&self, repair: bool) -> FsckReport {
        let options = FsckOptions {
            repair,
            staging_grace_secs: 0,
        };
        check(&self.meta, &self.blobs, &options).await.unwrap()
    }

    async fn sql(&self, statement: &str) {
        if self.url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
            sqlx::query(statement).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }

    /// Statements run with the foreign keys off, on one connection: a store damaged
    /// below the registry (a restore of some tables, a hand edit).
    async fn sql_unchecked(&self, statements: &str) {
        use sqlx::Connection;
        if self.url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(&format!("PRAGMA foreign_keys = OFF; {statements}"))
                .execute(&mut c)
                .await
                .unwrap();
        } else {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(&format!(
                "SET session_replication_role = replica; {statements}"
            ))
            .execute(&mut c)
            .await
            .unwrap();
        }
    }
}

/// An image manifest: the config (`{}`, 2 bytes) and layers of the sizes given.
fn manifest(config: &Digest, layers: &[(&Digest, u64)], extra: serde_json::Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
        "layers": layers.iter().map(|(l, size)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l.to_string(), "size": size})).collect::<Vec<_>>(),
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    serde_json::to_vec(&m).unwrap()
}

fn kinds(report: &FsckReport) -> Vec<String> {
    report.problems.iter().map(|p| p.kind.clone()).collect()
}

/// Stored before the registry checked descriptor sizes: fsck names the manifest.
async fn a_descriptor_size_the_store_disagrees_with_is_reported(w: World) {
    let config = w.push_blob(b"{}").await;
    let layer = w.push_blob(b"layer bytes").await;
    let body = manifest(&config, &[(&layer, 12)], json!({}));
    let parsed = signet_storage::manifest::parse_manifest(&body, Some(OCI_MANIFEST)).unwrap();
    let digest = Digest::sha256_of(&body);
    let unchecked = ManifestPut {
        sizes: Vec::new(),
        ..ManifestPut::derived(repo(), digest.clone(), &parsed, Bytes::from(body))
    };
    w.meta.put_manifest(&unchecked).await.unwrap();
    // The registry's own path refuses it.
    let checked = ManifestPut::derived(
        repo(),
        digest.clone(),
        &parsed,
        unchecked.manifest.content.clone(),
    );
    assert!(matches!(
        w.meta.put_manifest(&checked).await,
        Err(signet_storage::StorageError::SizeMismatch { .. })
    ));
    let report = w.fsck(false).await;
    assert_eq!(kinds(&report), ["manifest-descriptor-size"], "{report:#?}");
    assert_eq!(report.problems[0].subject, format!("app@{digest}"));
    assert!(report.problems[0].detail.contains(&layer.to_string()));
}

async fn a_clean_store_is_clean(w: World) {
    w.populate().await;
    let report = w.fsck(false).await;
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.blobs_checked, 3);
    assert_eq!(report.manifests_checked, 3);
    assert_eq!(report.tags_checked, 2);
}

async fn corrupt_blob_bytes_are_reported_and_kept(w: World) {
    w.populate().await;
    let layer = Digest::sha256_of(b"layer bytes");
    let file = w
        .dir
        .path()
        .join("blobs/blobs/sha256")
        .join(&layer.hex()[..2])
        .join(layer.hex());
    std::fs::write(&file, b"rotten bytes").unwrap();

    for repair in [false, true] {
        let report = w.fsck(repair).await;
        assert_eq!(kinds(&report), ["blob-corrupt"], "{report:#?}");
        assert_eq!(report.problems[0].subject, layer.to_string());
        assert_eq!(report.remaining(), 1);
    }
    // Not "repaired" by deletion: the row and the (rotten) bytes are still there.
    assert!(w.meta.blob_size(&layer).await.unwrap().is_some());
    assert_eq!(std::fs::read(&file).unwrap(), b"rotten bytes");

    std::fs::remove_file(&file).unwrap();
    let report = w.fsck(true).await;
    assert_eq!(kinds(&report), ["blob-missing"], "{report:#?}");
    assert!(w.meta.blob_size(&layer).await.unwrap().is_some());
}

async fn lost_edges_and_attachment_rows_are_rebuilt(w: World) {
    let (image, referrer, cosign) = w.populate().await;
    let layer = Digest::sha256_of(b"layer bytes");
    w.sql(&format!(
        "DELETE FROM manifest_blobs WHERE manifest_digest = '{image}' AND blob_digest = '{layer}'"
    ))
    .await;
    w.sql(&format!(
        "DELETE FROM attachments WHERE attachment = '{referrer}'"
    ))
    .await;
    w.sql(&format!(
        "DELETE FROM attachments WHERE attachment = '{cosign}'"
    ))
    .await;

    let report = w.fsck(false).await;
    let mut found = kinds(&report);
    found.sort();
    assert_eq!(
        found,
        ["attachment-rows", "attachment-rows", "manifest-edges"],
        "{report:#?}"
    );
    assert_eq!(report.remaining(), 3);

    let report = w.fsck(true).await;
    assert_eq!(report.problems.len(), 3, "{report:#?}");
    assert!(report.is_clean(), "{report:#?}");

    let report = w.fsck(false).await;
    assert!(report.is_clean(), "{report:#?}");
    let attachments = w.meta.list_attachments(&repo(), &image).await.unwrap();
    let mut found: Vec<&Digest> = attachments.iter().map(|a| &a.attachment).collect();
    found.sort();
    let mut wanted = vec![&referrer, &cosign];
    wanted.sort();
    assert_eq!(found, wanted);
}

async fn leftover_staging_is_reported_and_removed(w: World) {
    w.populate().await;
    let uploads = w.dir.path().join("blobs/uploads");
    // A monolithic upload cut short: its staged part and a hidden temporary file.
    let direct = uploads.join("direct-0c8f2d0e-1111-2222-3333-444455556666");
    std::fs::create_dir_all(&direct).unwrap();
    std::fs::write(direct.join("000000-00000000000000aa"), b"partial").unwrap();
    std::fs::write(direct.join("000000-00000000000000bb#1"), b"partial").unwrap();
    // Only a hidden file (object_store's listing does not show it).
    let hidden = uploads.join("5e7a1b2c-aaaa-bbbb-cccc-ddddeeeeffff");
    std::fs::create_dir_all(&hidden).unwrap();
    std::fs::write(hidden.join("000001-00000000000000cc#3"), b"partial").unwrap();

    let report = w.fsck(false).await;
    assert_eq!(
        kinds(&report),
        ["staging-orphaned", "staging-orphaned"],
        "{report:#?}"
    );
    // Younger than the upload expiry: a push may be writing them.
    let options = FsckOptions {
        repair: true,
        staging_grace_secs: 3600,
    };
    let report = check(&w.meta, &w.blobs, &options).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert!(direct.exists());

    let report = w.fsck(true).await;
    assert_eq!(report.problems.len(), 2, "{report:#?}");
    assert!(report.is_clean(), "{report:#?}");
    assert!(!direct.exists() && !hidden.exists());
    assert!(w.fsck(false).await.is_clean());
}

async fn a_session_whose_staged_file_lost_bytes_is_reported_and_dropped(w: World) {
    // Two sessions part way through a chunked push, staged in one file each.
    let intact = w.uploads.start(&repo()).await.unwrap();
    let intact = w.append(&intact, 0, b"first chunk").await;
    let damaged = w.uploads.start(&repo()).await.unwrap();
    let damaged = w.append(&damaged, 0, b"0123456789").await;
    assert_eq!(damaged.size, 10);
    assert!(w.fsck(false).await.is_clean());

    // The damaged one's staged file loses its end (a disk that did not keep it).
    let staged = w.staged_data(&damaged.id);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&staged)
        .unwrap();
    file.set_len(4).unwrap();
    let report = w.fsck(false).await;
    assert_eq!(kinds(&report), ["upload-missing-parts"], "{report:#?}");
    assert_eq!(report.problems[0].subject, damaged.id);
    assert!(
        report.problems[0]
            .detail
            .contains("holds 4 of the 10 bytes"),
        "{report:#?}"
    );

    // Repair drops it (its client starts over); the intact one goes on and completes.
    let report = w.fsck(true).await;
    assert!(report.is_clean(), "{report:#?}");
    assert!(w.uploads.get(&repo(), &damaged.id).await.unwrap().is_none());
    assert!(!staged.exists());
    let intact = w.uploads.get(&repo(), &intact.id).await.unwrap().unwrap();
    let whole = w.append(&intact, 11, b" and the rest").await;
    assert_eq!(whole.size, 24);
    assert!(w.fsck(false).await.is_clean());
}

/// A final PUT that placed the session's bytes at their address and then failed before
/// the session was closed (the database went) leaves no staging behind: that is no
/// problem, and the PUT sent again completes.
async fn a_session_whose_bytes_were_placed_before_it_closed_is_no_problem(w: World) {
    let bytes = b"placed, never closed";
    let digest = Digest::sha256_of(bytes);
    let session = w.uploads.start(&repo()).await.unwrap();
    let session = w.append(&session, 0, bytes).await;
    // What the failed final request did: the bytes moved to their address.
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(bytes))]);
    w.blobs.put_verified(&digest, body).await.unwrap();
    let staged = w.staged_data(&session.id);
    std::fs::remove_file(&staged).unwrap();

    let report = w.fsck(false).await;
    assert!(report.is_clean(), "{report:#?}");
    let size = w.uploads.finish(&session, &digest).await.unwrap();
    assert_eq!(size, bytes.len() as u64);
    assert!(w.uploads.get(&repo(), &session.id).await.unwrap().is_none());

    // Bytes at no address are still a problem.
    let lost = w.uploads.start(&repo()).await.unwrap();
    let lost = w.append(&lost, 0, b"these go nowhere").await;
    std::fs::remove_file(w.staged_data(&lost.id)).unwrap();
    assert_eq!(kinds(&w.fsck(false).await), ["upload-missing-parts"]);
}

/// More manifests than fsck reads at once, and an index whose children fall in other
/// windows than its own: all are checked, the clean ones clean, and an edge lost in
/// the last window is found and rebuilt.
async fn a_repository_of_many_windows_is_checked_whole(w: World) {
    w.populate().await;
    let config = Digest::sha256_of(b"{}");
    let mut images = Vec::new();
    for i in 0..150 {
        let layer = w.push_blob(format!("layer {i}").as_bytes()).await;
        let body = manifest(&config, &[(&layer, layer_len(i))], json!({}));
        let size = body.len();
        let digest = w
            .put(body, vec![config.clone(), layer], Some(&format!("i{i}")))
            .await;
        images.push((digest, size));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": images.iter().map(|(d, size)| json!({
            "mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": size,
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let parsed = signet_storage::manifest::parse_manifest(&index, Some(OCI_INDEX)).unwrap();
    let index_digest = Digest::sha256_of(&index);
    let put = ManifestPut {
        tags: vec!["all".parse().unwrap()],
        ..ManifestPut::derived(repo(), index_digest.clone(), &parsed, Bytes::from(index))
    };
    w.meta.put_manifest(&put).await.unwrap();

    let report = w.fsck(false).await;
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.manifests_checked, 3 + 150 + 1);
    assert_eq!(report.tags_checked, 2 + 150 + 1);
    assert_eq!(report.blobs_checked, 3 + 150);

    let last = images
        .iter()
        .map(|(d, _)| d)
        .max_by_key(|d| d.to_string())
        .unwrap();
    w.sql(&format!(
        "DELETE FROM manifest_children WHERE index_digest = '{index_digest}' AND child_digest = '{last}'"
    ))
    .await;
    w.sql(&format!(
        "DELETE FROM manifest_blobs WHERE manifest_digest = '{last}' AND blob_digest = '{config}'"
    ))
    .await;
    let report = w.fsck(true).await;
    let mut subjects: Vec<String> = report.problems.iter().map(|p| p.subject.clone()).collect();
    subjects.sort();
    let mut expected = vec![format!("app@{index_digest}"), format!("app@{last}")];
    expected.sort();
    assert_eq!(subjects, expected, "{report:#?}");
    assert_eq!(kinds(&report), ["manifest-edges", "manifest-edges"]);
    assert!(report.is_clean(), "repaired: {report:#?}");
    assert!(w.fsck(false).await.is_clean());
}

fn layer_len(i: usize) -> u64 {
    format!("layer {i}").len() as u64
}

/// Rows whose manifest is gone (written with the store's keys off) are named: a tag
/// that points nowhere, edges and attachment rows of no manifest.
async fn rows_of_no_manifest_are_reported(w: World) {
    w.populate().await;
    let gone = Digest::sha256_of(b"a manifest never stored");
    let config = Digest::sha256_of(b"{}");
    w.sql_unchecked(&format!(
        "INSERT INTO tags (repository_id, name, digest, updated_at)
           SELECT id, 'lost', '{gone}', 0 FROM repositories WHERE name = 'app';
         INSERT INTO manifest_blobs (repository_id, manifest_digest, blob_digest)
           SELECT id, '{gone}', '{config}' FROM repositories WHERE name = 'app';
         INSERT INTO attachments (repository_id, subject, attachment, kind, source, format,
                                  carrier, created_at)
           SELECT id, '{config}', '{gone}', 'signature', 'subject', 'cosign', '{gone}', 0
           FROM repositories WHERE name = 'app';"
    ))
    .await;
    let report = w.fsck(false).await;
    let mut found: Vec<(String, String)> = report
        .problems
        .iter()
        .map(|p| (p.kind.clone(), p.subject.clone()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("attachment-rows".to_string(), format!("app@{gone}")),
            ("manifest-edges".to_string(), format!("app@{gone}")),
            ("tag-dangling".to_string(), "app:lost".to_string()),
        ],
        "{report:#?}"
    );
    assert_eq!(report.tags_checked, 3);
}
