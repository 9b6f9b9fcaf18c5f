//! Garbage collection: what it keeps, what it removes, and the protocol that keeps it
//! safe beside uploads (tombstones, pins, the lease). Every test runs on SQLite and on
//! PostgreSQL (`<test>::sqlite`, `<test>::postgres`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use signet_storage::blobs::BlobStore;
use signet_storage::gc::{collect, GcOptions, GcReport};
use signet_storage::meta::{GcPlan, ManifestPut, ManifestRecord, PostgresMetadata, SqliteMetadata};
use signet_storage::testing::TestDatabase;
use signet_storage::uploads::Uploads;
use signet_storage::{Digest, MetadataStore, Reference, RepoName, StorageError, Tag};

struct World {
    meta: Arc<dyn MetadataStore>,
    blobs: BlobStore,
    uploads: Uploads,
    _dir: tempfile::TempDir,
    _database: Option<TestDatabase>,
}

enum Backend {
    Sqlite,
    Postgres,
}

async fn world(backend: Backend) -> World {
    let dir = tempfile::tempdir().unwrap();
    let (meta, database): (Arc<dyn MetadataStore>, _) = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}/meta.db", dir.path().display());
            (Arc::new(SqliteMetadata::open(&url).await.unwrap()), None)
        }
        Backend::Postgres => {
            let db = TestDatabase::create().await;
            let meta = PostgresMetadata::open(&db.url).await.unwrap();
            (Arc::new(meta), Some(db))
        }
    };
    let blobs = BlobStore::local(dir.path().join("blobs")).unwrap();
    let uploads = Uploads::new(blobs.clone(), meta.clone());
    World {
        meta,
        blobs,
        uploads,
        _dir: dir,
        _database: database,
    }
}

/// Each test, as `<test>::sqlite` and `<test>::postgres`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$test(super::world(super::Backend::Sqlite).await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$test(super::world(super::Backend::Postgres).await).await
            }
        }
    )*};
}

on_both_backends!(
    gc_keeps_live_content_and_removes_the_rest,
    signature_of_a_subject_in_another_repository_is_a_root,
    the_grace_period_protects_recent_pushes,
    tombstones_refuse_links_pins_and_mounts,
    pinned_blobs_are_not_collected_and_stale_pins_expire,
    one_collector_at_a_time_and_leftover_tombstones_are_finished,
    gc_expires_abandoned_upload_sessions,
    uploads_racing_collections_never_lose_bytes,
    a_large_collection_goes_in_rounds,
);

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn one(bytes: &[u8]) -> stream::Iter<std::vec::IntoIter<Result<Bytes, std::io::Error>>> {
    stream::iter(vec![Ok(Bytes::copy_from_slice(bytes))])
}

impl World {
    async fn push_blob(&self, r: &str, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        self.uploads
            .put_monolithic(&repo(r), &d, one(bytes))
            .await
            .unwrap();
        d
    }

    /// Puts a manifest whose body is `body`, referencing blobs/children/subject.
    async fn put(
        &self,
        r: &str,
        body: &str,
        blobs: &[&Digest],
        children: &[&Digest],
        subject: Option<&Digest>,
        tag: Option<&str>,
    ) -> Digest {
        let digest = Digest::sha256_of(body.as_bytes());
        let put = ManifestPut {
            repo: repo(r),
            manifest: ManifestRecord {
                digest: digest.clone(),
                media_type: signet_storage::manifest::OCI_MANIFEST.into(),
                content: Bytes::from(body.to_string()),
                artifact_type: subject.map(|_| "application/x-test".to_string()),
                subject: subject.cloned(),
                annotations: BTreeMap::new(),
            },
            blobs: blobs.iter().map(|d| (*d).clone()).collect(),
            children: children.iter().map(|d| (*d).clone()).collect(),
            sizes: Vec::new(),
            tags: tag.map(|t| t.parse::<Tag>().unwrap()).into_iter().collect(),
            condition: None,
            immutable: Vec::new(),
        };
        self.meta.put_manifest(&put).await.unwrap();
        digest
    }

    async fn has_manifest(&self, r: &str, d: &Digest) -> bool {
        self.meta
            .get_manifest(&repo(r), &Reference::Digest(d.clone()))
            .await
            .unwrap()
            .is_some()
    }

    async fn has_blob(&self, d: &Digest) -> bool {
        let row = self.meta.blob_size(d).await.unwrap().is_some();
        let bytes = self.blobs.size(d).await.unwrap().is_some();
        assert_eq!(row, bytes, "blob row and bytes of {d} disagree");
        row
    }

    async fn gc(&self, delete_untagged: bool, dry_run: bool) -> GcReport {
        collect(
            &self.meta,
            &self.blobs,
            &GcOptions {
                grace_secs: 0,
                delete_untagged,
                dry_run,
                ..GcOptions::default()
            },
        )
        .await
        .unwrap()
    }
}

/// With a grace of 0, what was written in the current second is still protected
/// (`created_at < now`); step past it.
/// More garbage than one round holds, in two repositories, among live blobs (digest
/// order mixes them): every round removes its share and the next goes on after it, the
/// report counts them all, and what is live stays.
async fn a_large_collection_goes_in_rounds(w: World) {
    let a = "gc/rounds";
    let mut kept = Vec::new();
    for i in 0..8 {
        kept.push(w.push_blob(a, format!("kept layer {i}").as_bytes()).await);
    }
    let layers: Vec<&Digest> = kept.iter().collect();
    w.put(a, "{\"kept\":1}", &layers, &[], None, Some("v1"))
        .await;
    let mut garbage = Vec::new();
    for i in 0..11 {
        let r = if i % 2 == 0 { a } else { "gc/rounds-b" };
        garbage.push(w.push_blob(r, format!("garbage {i}").as_bytes()).await);
    }
    age().await;
    let options = GcOptions {
        grace_secs: 0,
        round: 3,
        ..GcOptions::default()
    };
    let report = collect(&w.meta, &w.blobs, &options).await.unwrap();
    assert_eq!((report.links_count, report.blobs_count), (11, 11));
    assert_eq!((report.links.len(), report.blobs.len()), (11, 11));
    let sizes: u64 = (0..11).map(|i| format!("garbage {i}").len() as u64).sum();
    assert_eq!(report.bytes_freed, sizes);
    for d in &garbage {
        assert!(!w.has_blob(d).await, "{d} should be collected");
    }
    for d in &kept {
        assert!(w.has_blob(d).await, "{d} is live");
    }
    assert!(w.meta.blob_deletions().await.unwrap().is_empty());
    // Nothing left: the next collection removes nothing.
    let again = collect(&w.meta, &w.blobs, &options).await.unwrap();
    assert!(again.is_empty(), "{again:?}");
}

async fn age() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

async fn gc_keeps_live_content_and_removes_the_rest(w: World) {
    let a = "gc/app";
    // A tagged image.
    let cfg = w.push_blob(a, b"config-1").await;
    let layer = w.push_blob(a, b"layer-1").await;
    let image = w
        .put(a, "{\"image\":1}", &[&cfg, &layer], &[], None, Some("v1"))
        .await;
    // A platform manifest only reachable as the child of a tagged index.
    let child_layer = w.push_blob(a, b"child-layer").await;
    let child = w
        .put(a, "{\"child\":1}", &[&child_layer], &[], None, None)
        .await;
    let index = w
        .put(a, "{\"index\":1}", &[], &[&child], None, Some("multi"))
        .await;
    // A cosign-style signature tag of the image, whose layer only it references.
    let sig_layer = w.push_blob(a, b"signature payload").await;
    let sig_tag = format!("sha256-{}.sig", image.hex());
    let sig = w
        .put(a, "{\"sig\":1}", &[&sig_layer], &[], None, Some(&sig_tag))
        .await;
    // A referrer (subject field) of the image, untagged, and an attachment of it.
    let sbom_layer = w.push_blob(a, b"sbom").await;
    let sbom = w
        .put(a, "{\"sbom\":1}", &[&sbom_layer], &[], Some(&image), None)
        .await;
    let sbom_sig = w
        .put(a, "{\"sbom-sig\":1}", &[], &[], Some(&sbom), None)
        .await;
    // An untagged image, and a blob pushed but never referenced.
    let old_layer = w.push_blob(a, b"untagged-layer").await;
    let untagged = w
        .put(a, "{\"untagged\":1}", &[&old_layer], &[], None, None)
        .await;
    let stray = w.push_blob(a, b"never referenced").await;
    // A deleted image whose layer is shared with a live one in another repository.
    let shared = w.push_blob(a, b"shared").await;
    let gone = w
        .put(a, "{\"gone\":1}", &[&shared], &[], None, Some("gone"))
        .await;
    w.push_blob("gc/other", b"shared").await;
    let other = w
        .put(
            "gc/other",
            "{\"other\":1}",
            &[&shared],
            &[],
            None,
            Some("x"),
        )
        .await;
    w.meta
        .delete_manifest(&repo(a), &gone, true, &|_| false)
        .await
        .unwrap();
    age().await;

    // Untagged kept by default: only the stray blob goes, and the deleted image's link.
    let report = w.gc(false, false).await;
    assert!(report.manifests.is_empty(), "{report:?}");
    let linked: Vec<_> = report
        .links
        .iter()
        .map(|l| (l.repository.as_str(), &l.digest))
        .collect();
    assert_eq!(linked.len(), 2, "{report:?}");
    assert!(linked.contains(&(a, &stray)) && linked.contains(&(a, &shared)));
    assert_eq!(report.blobs.len(), 1);
    assert_eq!(report.blobs[0].digest, stray);
    assert_eq!(report.bytes_freed, b"never referenced".len() as u64);
    assert!(!w.has_blob(&stray).await);
    assert!(w.has_blob(&shared).await, "still used in gc/other");
    assert!(w.has_manifest("gc/other", &other).await);
    assert!(w.has_manifest(a, &untagged).await);
    assert!(w.has_blob(&old_layer).await);
    assert!(w.meta.blob_deletions().await.unwrap().is_empty());

    // With delete_untagged, the untagged image goes; everything reachable stays.
    let report = w.gc(true, false).await;
    let gone: Vec<_> = report.manifests.iter().map(|m| &m.digest).collect();
    assert_eq!(gone, vec![&untagged], "{report:?}");
    assert_eq!(report.blobs.len(), 1);
    assert_eq!(report.blobs[0].digest, old_layer);
    assert!(!w.has_blob(&old_layer).await);
    for m in [&image, &child, &index, &sig, &sbom, &sbom_sig] {
        assert!(w.has_manifest(a, m).await, "live manifest {m} collected");
    }
    for b in [&cfg, &layer, &child_layer, &sig_layer, &sbom_layer] {
        assert!(w.has_blob(b).await, "live blob {b} collected");
        assert!(w
            .meta
            .blob_in_repository(&repo(a), b)
            .await
            .unwrap()
            .is_some());
    }

    // Untag the image: it, its signature tag and its referrers follow.
    w.meta
        .delete_tag(&repo(a), &"v1".parse().unwrap())
        .await
        .unwrap();
    age().await;
    let dry = w.gc(true, true).await;
    assert!(dry.dry_run);
    assert_eq!(dry.manifests.len(), 4, "{dry:?}");
    assert!(w.has_manifest(a, &image).await, "a dry run removes nothing");
    assert!(w.has_blob(&sig_layer).await, "a dry run removes nothing");
    let report = w.gc(true, false).await;
    assert_eq!(report.manifests, dry.manifests);
    assert_eq!(report.links, dry.links);
    assert_eq!(report.blobs, dry.blobs);
    for m in [&image, &sig, &sbom, &sbom_sig] {
        assert!(!w.has_manifest(a, m).await, "{m} should be collected");
    }
    for b in [&cfg, &layer, &sig_layer, &sbom_layer] {
        assert!(!w.has_blob(b).await, "{b} should be collected");
    }
    assert!(w.has_manifest(a, &child).await && w.has_manifest(a, &index).await);
    assert!(w.has_blob(&child_layer).await);
    let again = w.gc(true, false).await;
    assert!(again.is_empty(), "a second run finds nothing: {again:?}");
}

async fn signature_of_a_subject_in_another_repository_is_a_root(w: World) {
    let subject = Digest::sha256_of(b"elsewhere");
    let layer = w.push_blob("gc/sigs", b"sig").await;
    let tag = format!("sha256-{}.sig", subject.hex());
    let sig = w
        .put("gc/sigs", "{\"s\":1}", &[&layer], &[], None, Some(&tag))
        .await;
    age().await;
    let report = w.gc(true, false).await;
    assert!(report.is_empty(), "{report:?}");
    assert!(w.has_manifest("gc/sigs", &sig).await);
    // Every tag is a root when attachments do not follow their subject.
    let sub = w
        .put("gc/sigs", "{\"subject\":1}", &[], &[], None, None)
        .await;
    let tag = format!("sha256-{}.sig", sub.hex());
    let sig2 = w
        .put("gc/sigs", "{\"s\":2}", &[], &[], None, Some(&tag))
        .await;
    age().await;
    let report = collect(
        &w.meta,
        &w.blobs,
        &GcOptions {
            grace_secs: 0,
            delete_untagged: true,
            attachments_follow_subject: false,
            ..GcOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.manifests.len(), 1);
    assert_eq!(report.manifests[0].digest, sub);
    assert!(w.has_manifest("gc/sigs", &sig2).await);
}

async fn the_grace_period_protects_recent_pushes(w: World) {
    let stray = w.push_blob("gc/grace", b"fresh").await;
    let untagged = w
        .put("gc/grace", "{\"fresh\":1}", &[], &[], None, None)
        .await;
    age().await;
    let report = collect(
        &w.meta,
        &w.blobs,
        &GcOptions {
            grace_secs: 3600,
            delete_untagged: true,
            ..GcOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(report.is_empty(), "{report:?}");
    assert!(w.has_blob(&stray).await && w.has_manifest("gc/grace", &untagged).await);

    // Pushing an old blob again, or putting an old manifest again, renews it.
    let plan = |cutoff| GcPlan {
        cutoff,
        delete_untagged: true,
        attachments_follow_subject: true,
        stale_pin_cutoff: 0,
        dry_run: true,
        limit: None,
        resume: Default::default(),
    };
    let before = signet_storage_now() + 5;
    let sweep = w.meta.gc_sweep(&plan(before)).await.unwrap();
    assert_eq!(sweep.blobs.len(), 1);
    assert_eq!(sweep.manifests.len(), 1);
    age().await;
    w.push_blob("gc/grace", b"fresh").await;
    w.put("gc/grace", "{\"fresh\":1}", &[], &[], None, None)
        .await;
    let sweep = w
        .meta
        .gc_sweep(&plan(signet_storage_now() - 1))
        .await
        .unwrap();
    assert!(
        sweep.blobs.is_empty() && sweep.manifests.is_empty(),
        "{sweep:?}"
    );
}

fn signet_storage_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn tombstones_refuse_links_pins_and_mounts(w: World) {
    let d = w.push_blob("gc/tomb", b"doomed").await;
    w.meta.unlink_blob(&repo("gc/tomb"), &d).await.unwrap();
    // Sweep the row but keep the tombstone, as a collector that is deleting the bytes.
    let sweep = w
        .meta
        .gc_sweep(&GcPlan {
            cutoff: signet_storage_now() + 5,
            delete_untagged: false,
            attachments_follow_subject: true,
            stale_pin_cutoff: 0,
            dry_run: false,
            limit: None,
            resume: Default::default(),
        })
        .await
        .unwrap();
    assert_eq!(sweep.blobs, vec![(d.clone(), 6)]);
    assert_eq!(w.meta.blob_deletions().await.unwrap(), vec![d.clone()]);
    assert!(matches!(
        w.meta.link_blob(&repo("gc/tomb"), &d, 6).await,
        Err(StorageError::BlobBeingDeleted(_))
    ));
    assert!(matches!(
        w.meta.pin_blob(&d, "t").await,
        Err(StorageError::BlobBeingDeleted(_))
    ));
    assert!(matches!(
        w.meta.link_pinned_blob(&repo("gc/tomb"), &d, 6, "t").await,
        Err(StorageError::BlobBeingDeleted(_))
    ));
    assert!(matches!(
        w.meta.mount_blob(&repo("gc/other"), &d).await,
        Err(StorageError::BlobBeingDeleted(_))
    ));
    assert!(!w.meta.repository_exists(&repo("gc/other")).await.unwrap());

    // An upload of the same bytes waits for the collector, then lands whole.
    let uploads = w.uploads.clone();
    let upload = tokio::spawn(async move {
        uploads
            .put_monolithic(
                &repo("gc/tomb"),
                &Digest::sha256_of(b"doomed"),
                one(b"doomed"),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !upload.is_finished(),
        "the upload must wait for the tombstone"
    );
    w.blobs.delete(&d).await.unwrap();
    w.meta
        .clear_blob_deletions(std::slice::from_ref(&d))
        .await
        .unwrap();
    assert_eq!(upload.await.unwrap().unwrap(), 6);
    assert!(w.has_blob(&d).await);
    assert!(w
        .meta
        .blob_in_repository(&repo("gc/tomb"), &d)
        .await
        .unwrap()
        .is_some());
    // And a mount of a present blob links it; of an absent one, does not.
    assert_eq!(
        w.meta.mount_blob(&repo("gc/other"), &d).await.unwrap(),
        Some(6)
    );
    let absent = Digest::sha256_of(b"absent");
    assert_eq!(
        w.meta.mount_blob(&repo("gc/other"), &absent).await.unwrap(),
        None
    );
}

async fn pinned_blobs_are_not_collected_and_stale_pins_expire(w: World) {
    let d = w.push_blob("gc/pin", b"pinned").await;
    w.meta.unlink_blob(&repo("gc/pin"), &d).await.unwrap();
    w.meta.pin_blob(&d, "upload-1").await.unwrap();
    let plan = |stale_pin_cutoff| GcPlan {
        cutoff: signet_storage_now() + 5,
        delete_untagged: false,
        attachments_follow_subject: true,
        stale_pin_cutoff,
        dry_run: true,
        limit: None,
        resume: Default::default(),
    };
    let sweep = w.meta.gc_sweep(&plan(0)).await.unwrap();
    assert!(sweep.blobs.is_empty(), "a pinned blob is kept");
    let sweep = w
        .meta
        .gc_sweep(&plan(signet_storage_now() + 5))
        .await
        .unwrap();
    assert_eq!(sweep.blobs.len(), 1, "a stale pin is ignored");
    w.meta.unpin_blob(&d, "upload-1").await.unwrap();
    let sweep = w.meta.gc_sweep(&plan(0)).await.unwrap();
    assert_eq!(sweep.blobs.len(), 1);

    // An upload's last step links the blob and drops its pin in one commit.
    w.meta.pin_blob(&d, "upload-2").await.unwrap();
    w.meta
        .link_pinned_blob(&repo("gc/pin"), &d, 6, "upload-2")
        .await
        .unwrap();
    assert_eq!(
        w.meta
            .blob_in_repository(&repo("gc/pin"), &d)
            .await
            .unwrap(),
        Some(6)
    );
    w.meta.unlink_blob(&repo("gc/pin"), &d).await.unwrap();
    let sweep = w.meta.gc_sweep(&plan(0)).await.unwrap();
    assert_eq!(sweep.blobs.len(), 1, "the pin went with the link");
}

async fn one_collector_at_a_time_and_leftover_tombstones_are_finished(w: World) {
    assert!(w.meta.gc_acquire("a", 60).await.unwrap());
    assert!(w.meta.gc_acquire("a", 60).await.unwrap(), "renewal");
    assert!(!w.meta.gc_acquire("b", 60).await.unwrap());
    match collect(&w.meta, &w.blobs, &GcOptions::default()).await {
        Err(StorageError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    w.meta.gc_release("a").await.unwrap();
    assert!(w.meta.gc_acquire("b", -1).await.unwrap());
    assert!(
        w.meta.gc_acquire("c", 60).await.unwrap(),
        "an expired lease is taken over"
    );
    w.meta.gc_release("c").await.unwrap();

    // A collector died between deleting the row and the bytes.
    let d = w.push_blob("gc/crash", b"half deleted").await;
    w.meta.unlink_blob(&repo("gc/crash"), &d).await.unwrap();
    w.meta
        .gc_sweep(&GcPlan {
            cutoff: signet_storage_now() + 5,
            delete_untagged: false,
            attachments_follow_subject: true,
            stale_pin_cutoff: 0,
            dry_run: false,
            limit: None,
            resume: Default::default(),
        })
        .await
        .unwrap();
    assert!(w.blobs.size(&d).await.unwrap().is_some());
    let report = collect(&w.meta, &w.blobs, &GcOptions::default())
        .await
        .unwrap();
    assert_eq!(report.leftover_deletions, 1);
    assert!(w.blobs.size(&d).await.unwrap().is_none());
    assert!(w.meta.blob_deletions().await.unwrap().is_empty());
}

async fn gc_expires_abandoned_upload_sessions(w: World) {
    let session = w.uploads.start(&repo("gc/up")).await.unwrap();
    w.uploads
        .append(&session, None, one(b"partial"))
        .await
        .unwrap();
    age().await;
    let options = GcOptions {
        expire_uploads_after_secs: Some(0),
        dry_run: true,
        ..GcOptions::default()
    };
    let report = collect(&w.meta, &w.blobs, &options).await.unwrap();
    assert_eq!(report.uploads_expired, 1);
    assert!(w.meta.get_upload(&session.id).await.unwrap().is_some());
    let options = GcOptions {
        dry_run: false,
        ..options
    };
    let report = collect(&w.meta, &w.blobs, &options).await.unwrap();
    assert_eq!(report.uploads_expired, 1);
    assert!(w.meta.get_upload(&session.id).await.unwrap().is_none());
}

/// Uploads of the same content race collections with no grace period; every upload
/// that succeeded and was then referenced keeps its bytes.
async fn uploads_racing_collections_never_lose_bytes(w: World) {
    let w = Arc::new(w);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let w = w.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            let mut freed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = w.gc(true, false).await;
                freed += r.blobs.len();
                runs += 1;
            }
            (runs, freed)
        })
    };
    let mut pushers = Vec::new();
    for p in 0..3 {
        let w = w.clone();
        pushers.push(tokio::spawn(async move {
            let r = format!("gc/race{p}");
            let mut kept = Vec::new();
            for i in 0..40 {
                // The same few contents again and again: each is collected in between
                // (once its link is a second old) and pushed again.
                let content = format!("shared content {}", i % 6).into_bytes();
                let d = w.push_blob(&r, &content).await;
                if i % 5 == 0 {
                    // Keep this one: reference it (the link may already be collected:
                    // then the manifest is refused, never accepted with a missing blob).
                    let body = format!("{{\"keep\":\"{p}-{i}\"}}");
                    let put = ManifestPut {
                        repo: repo(&r),
                        manifest: ManifestRecord {
                            digest: Digest::sha256_of(body.as_bytes()),
                            media_type: signet_storage::manifest::OCI_MANIFEST.into(),
                            content: Bytes::from(body),
                            artifact_type: None,
                            subject: None,
                            annotations: BTreeMap::new(),
                        },
                        blobs: vec![d.clone()],
                        children: vec![],
                        sizes: Vec::new(),
                        tags: vec![format!("keep-{i}").parse().unwrap()],
                        condition: None,
                        immutable: Vec::new(),
                    };
                    match w.meta.put_manifest(&put).await {
                        Ok(()) => kept.push(d),
                        Err(StorageError::MissingReferences(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            kept
        }));
    }
    let mut kept = Vec::new();
    for p in pushers {
        kept.extend(p.await.unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (runs, freed) = collector.await.unwrap();
    assert!(runs > 3, "collections ran: {runs}");
    assert!(freed > 0, "collections removed blobs while uploads ran");
    assert!(!kept.is_empty());
    w.gc(true, false).await;
    for d in kept {
        assert!(w.has_blob(&d).await, "referenced blob {d} lost");
        let mut body = w.blobs.get(&d, None).await.unwrap();
        let mut bytes = Vec::new();
        while let Some(chunk) = futures::StreamExt::next(&mut body.stream).await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(Digest::sha256_of(&bytes), d);
    }
}
