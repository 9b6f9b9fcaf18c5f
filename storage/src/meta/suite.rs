//! The behaviour every metadata backend must have. Backends' tests call [`run`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{
    AtomicSignature, ExportRows, ManifestPut, ManifestRecord, MetadataStore, Page, SignatureStored,
    StoredVerdict, TagCondition, UploadSession,
};
use crate::attachments::{AttachmentKind, AttachmentSource, COSIGN_SIG_ARTIFACT};
use crate::blobs::StagedPart;
use crate::digest::Digest;
use crate::error::StorageError;
use crate::names::{Reference, RepoName, Tag};

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}

fn manifest(body: &str, subject: Option<&Digest>) -> ManifestRecord {
    ManifestRecord {
        digest: Digest::sha256_of(body.as_bytes()),
        media_type: crate::manifest::OCI_MANIFEST.to_string(),
        content: Bytes::from(body.to_string()),
        artifact_type: Some("application/x-test".into()),
        subject: subject.cloned(),
        annotations: BTreeMap::from([("k".to_string(), "v".to_string())]),
    }
}

/// Runs every check against a fresh, empty store.
pub async fn run(db: Arc<dyn MetadataStore>) {
    db.ping().await.unwrap();
    blobs(&*db).await;
    usage(&*db).await;
    manifests_and_tags(&*db).await;
    many_references(&*db).await;
    export_selections(&*db).await;
    referrers(&*db).await;
    pagination(&*db).await;
    uploads(&*db).await;
    atomic_signatures(&*db).await;
    attachment_index(&*db).await;
    tag_conditions(&*db).await;
    immutable_tags(&*db).await;
    sync_jobs(&*db).await;
    verdicts(&*db).await;
    revoked_tokens(&*db).await;
    retention(&*db).await;
    events(db.clone()).await;
}

async fn revoked_tokens(db: &dyn MetadataStore) {
    let later = super::now() + 3600;
    assert!(!db.token_revoked("jti-1").await.unwrap());
    assert!(db.revoke_token("jti-1", later).await.unwrap(), "first use");
    assert!(db.token_revoked("jti-1").await.unwrap());
    assert!(!db.revoke_token("jti-1", later).await.unwrap(), "a replay");
    assert!(db.revoke_token("jti-2", later).await.unwrap());
    // Rows of expired tokens go: the same id is new again once past its expiry.
    assert!(db.revoke_token("jti-old", 1).await.unwrap());
    assert!(db.revoke_token("jti-3", later).await.unwrap());
    assert!(db.revoke_token("jti-old", 1).await.unwrap());
}

fn verdict(subject: &Digest, attachment: &Digest, fingerprint: &str) -> StoredVerdict {
    StoredVerdict {
        subject: subject.clone(),
        attachment: attachment.clone(),
        root: Some("release".into()),
        verdict: crate::attachments::VerdictKind::Valid,
        reason: None,
        predicate_type: None,
        signer: Some("signer@example.com".into()),
        fingerprint: fingerprint.into(),
        checked_at: 1_700_000_000,
    }
}

async fn verdicts(db: &dyn MetadataStore) {
    let r = repo("suite/verdicts");
    let image = manifest("{\"verdict-image\":1}", None);
    db.put_manifest(&put(&r, &image, &[], Some("v1")))
        .await
        .unwrap();
    let sig1 = manifest("{\"verdict-sig\":1}", None);
    let sig_tag = cosign_tag(&image.digest, "sig");
    db.put_manifest(&put(&r, &sig1, &[], Some(&sig_tag)))
        .await
        .unwrap();
    let other = manifest("{\"verdict-other\":1}", Some(&image.digest));
    db.put_manifest(&put(&r, &other, &[], None)).await.unwrap();

    // Only signatures and attestations wait for a verdict (the `other` referrer does not).
    let waiting = db.unverified_attachments("fp1", 100).await.unwrap();
    let mine: Vec<_> = waiting.iter().filter(|u| u.repo == r.as_str()).collect();
    assert_eq!(mine.len(), 1, "{waiting:?}");
    assert_eq!(mine[0].attachment, sig1.digest);
    assert_eq!(mine[0].subject, image.digest);
    assert_eq!(mine[0].format, crate::attachments::AttachmentFormat::Cosign);

    assert!(db
        .get_verdict(&r, &image.digest, &sig1.digest)
        .await
        .unwrap()
        .is_none());
    let v = verdict(&image.digest, &sig1.digest, "fp1");
    assert!(db.put_verdict(&r, &v).await.unwrap());
    assert_eq!(
        db.get_verdict(&r, &image.digest, &sig1.digest)
            .await
            .unwrap(),
        Some(v.clone())
    );
    let waiting = db.unverified_attachments("fp1", 100).await.unwrap();
    assert!(
        !waiting.iter().any(|u| u.repo == r.as_str()),
        "verified under fp1: {waiting:?}"
    );
    let waiting = db.unverified_attachments("fp2", 100).await.unwrap();
    assert!(
        waiting.iter().any(|u| u.attachment == sig1.digest),
        "stale under fp2"
    );

    // Replaced, not duplicated.
    let v2 = StoredVerdict {
        root: None,
        verdict: crate::attachments::VerdictKind::NoTrustRoot,
        reason: Some("none".into()),
        signer: None,
        fingerprint: "fp2".into(),
        ..v.clone()
    };
    assert!(db.put_verdict(&r, &v2).await.unwrap());
    assert_eq!(
        db.get_verdict(&r, &image.digest, &sig1.digest)
            .await
            .unwrap(),
        Some(v2)
    );

    // No row for something that is not an attachment.
    assert!(!db
        .put_verdict(&r, &verdict(&sig1.digest, &image.digest, "fp1"))
        .await
        .unwrap());

    // The tag moves on: the old signature is no attachment any more, its verdict goes.
    let sig2 = manifest("{\"verdict-sig\":2}", None);
    db.put_manifest(&put(&r, &sig2, &[], Some(&sig_tag)))
        .await
        .unwrap();
    assert!(db
        .get_verdict(&r, &image.digest, &sig1.digest)
        .await
        .unwrap()
        .is_none());
    assert!(db
        .put_verdict(&r, &verdict(&image.digest, &sig2.digest, "fp1"))
        .await
        .unwrap());

    // An atomic signature's verdict goes with the signature.
    let atomic = AtomicSignature {
        id: "b".repeat(32),
        content: Bytes::from_static(b"atomic verdict"),
    };
    db.put_atomic_signature(&r, &image.digest, &atomic)
        .await
        .unwrap();
    let atomic_digest = Digest::sha256_of(b"atomic verdict");
    assert!(db
        .put_verdict(&r, &verdict(&image.digest, &atomic_digest, "fp1"))
        .await
        .unwrap());
    db.delete_atomic_signature(&r, &image.digest, &atomic.id)
        .await
        .unwrap();
    assert!(db
        .get_verdict(&r, &image.digest, &atomic_digest)
        .await
        .unwrap()
        .is_none());

    // Deleting the subject takes its attachments' rows and so their verdicts.
    db.delete_manifest(&r, &image.digest, true, &|_| false)
        .await
        .unwrap();
    assert!(db
        .get_verdict(&r, &image.digest, &sig2.digest)
        .await
        .unwrap()
        .is_none());
    assert!(db.orphan_verdicts().await.unwrap().is_empty());
    assert_eq!(db.delete_orphan_verdicts().await.unwrap(), 0);
}

async fn sync_jobs(db: &dyn MetadataStore) {
    assert!(db.sync_jobs().await.unwrap().is_empty());
    assert!(db.sync_job_create("b", "{\"n\":2}").await.unwrap());
    assert!(db.sync_job_create("a", "{\"n\":1}").await.unwrap());
    assert!(
        !db.sync_job_create("a", "{\"n\":3}").await.unwrap(),
        "name taken"
    );
    assert_eq!(
        db.sync_jobs().await.unwrap(),
        [
            ("a".to_string(), "{\"n\":1}".to_string()),
            ("b".to_string(), "{\"n\":2}".to_string())
        ]
    );
    assert!(db.sync_job_delete("a").await.unwrap());
    assert!(!db.sync_job_delete("a").await.unwrap());
    assert_eq!(db.sync_jobs().await.unwrap().len(), 1);
}

async fn usage(db: &dyn MetadataStore) {
    let (a, b, c) = (repo("usage/one"), repo("usage/two"), repo("usagex/three"));
    let d1 = Digest::sha256_of(b"usage blob one");
    let d2 = Digest::sha256_of(b"usage blob two");
    db.link_blob(&a, &d1, 10).await.unwrap();
    db.link_blob(&b, &d1, 10).await.unwrap();
    db.link_blob(&b, &d2, 5).await.unwrap();
    db.link_blob(&c, &d2, 5).await.unwrap();
    // Distinct blobs count once; `usagex/...` is not below `usage/`.
    let used = db.usage_under(&repo("usage")).await.unwrap();
    assert_eq!((used.repositories, used.bytes), (2, 15));
    assert_eq!(
        db.usage_under(&repo("nothing")).await.unwrap(),
        Default::default()
    );
    // `_` in a prefix is a character, not a wildcard.
    db.link_blob(&repo("u_s/x"), &d1, 10).await.unwrap();
    db.link_blob(&repo("uxs/x"), &d2, 5).await.unwrap();
    let used = db.usage_under(&repo("u_s")).await.unwrap();
    assert_eq!((used.repositories, used.bytes), (1, 10));
}

async fn blobs(db: &dyn MetadataStore) {
    let (a, b) = (repo("suite/blobs-a"), repo("suite/blobs-b"));
    let d = Digest::sha256_of(b"blob");
    assert_eq!(db.blob_size(&d).await.unwrap(), None);
    assert!(!db.repository_exists(&a).await.unwrap());
    db.link_blob(&a, &d, 4).await.unwrap();
    db.link_blob(&a, &d, 4).await.unwrap(); // idempotent
    assert!(db.repository_exists(&a).await.unwrap());
    assert_eq!(db.blob_in_repository(&a, &d).await.unwrap(), Some(4));
    assert_eq!(db.blob_in_repository(&b, &d).await.unwrap(), None);
    assert_eq!(db.blob_size(&d).await.unwrap(), Some(4));
    assert!(db.unlink_blob(&a, &d).await.unwrap());
    assert!(!db.unlink_blob(&a, &d).await.unwrap());
    assert_eq!(db.blob_in_repository(&a, &d).await.unwrap(), None);
}

async fn manifests_and_tags(db: &dyn MetadataStore) {
    let r = repo("suite/manifests");
    let layer = Digest::sha256_of(b"layer");
    let m = manifest("{\"m\":1}", None);
    let put = ManifestPut {
        repo: r.clone(),
        manifest: m.clone(),
        blobs: vec![layer.clone()],
        children: vec![],
        sizes: Vec::new(),
        tags: vec![tag("v1")],
        condition: None,
        immutable: Vec::new(),
    };
    match db.put_manifest(&put).await {
        Err(StorageError::MissingReferences(missing)) => assert_eq!(missing, vec![layer.clone()]),
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    assert!(
        !db.repository_exists(&r).await.unwrap(),
        "a refused manifest leaves nothing behind"
    );
    db.link_blob(&r, &layer, 5).await.unwrap();
    // A descriptor that gives the blob another size is refused, and leaves nothing.
    let wrong_size = ManifestPut {
        sizes: vec![(layer.clone(), 6)],
        ..put.clone()
    };
    match db.put_manifest(&wrong_size).await {
        Err(StorageError::SizeMismatch {
            digest,
            declared: 6,
            stored: 5,
        }) => assert_eq!(digest, layer),
        other => panic!("expected SizeMismatch, got {other:?}"),
    }
    assert!(db
        .get_manifest(&r, &Reference::Digest(m.digest.clone()))
        .await
        .unwrap()
        .is_none());
    let put = ManifestPut {
        sizes: vec![(layer.clone(), 5)],
        ..put
    };
    db.put_manifest(&put).await.unwrap();
    db.put_manifest(&put).await.unwrap(); // idempotent

    let by_tag = db
        .get_manifest(&r, &Reference::Tag(tag("v1")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_tag.content, m.content);
    assert_eq!(by_tag.digest, m.digest);
    let by_digest = db
        .get_manifest(&r, &Reference::Digest(m.digest.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_digest, by_tag);

    // An index over it, tagged; then the tag moves to another manifest.
    let index = manifest("{\"index\":1}", None);
    let index_put = ManifestPut {
        repo: r.clone(),
        manifest: index.clone(),
        blobs: vec![],
        children: vec![m.digest.clone()],
        sizes: Vec::new(),
        tags: vec![tag("multi")],
        condition: None,
        immutable: Vec::new(),
    };
    db.put_manifest(&index_put).await.unwrap();
    let wrong_child_size = ManifestPut {
        sizes: vec![(m.digest.clone(), m.content.len() as u64 + 1)],
        manifest: manifest("{\"index\":3}", None),
        ..index_put.clone()
    };
    assert!(matches!(
        db.put_manifest(&wrong_child_size).await,
        Err(StorageError::SizeMismatch { .. })
    ));
    let unknown_child = ManifestPut {
        children: vec![Digest::sha256_of(b"nope")],
        manifest: manifest("{\"index\":2}", None),
        ..index_put.clone()
    };
    assert!(matches!(
        db.put_manifest(&unknown_child).await,
        Err(StorageError::MissingReferences(_))
    ));
    let moved = ManifestPut {
        tags: vec![tag("v1")],
        ..index_put.clone()
    };
    db.put_manifest(&moved).await.unwrap();
    let now_v1 = db
        .get_manifest(&r, &Reference::Tag(tag("v1")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now_v1.digest, index.digest);
    assert_eq!(
        db.list_tags(&r, Page::default()).await.unwrap().unwrap(),
        vec!["multi", "v1"]
    );

    assert!(db.delete_tag(&r, &tag("multi")).await.unwrap());
    assert!(!db.delete_tag(&r, &tag("multi")).await.unwrap());
    assert!(
        db.get_manifest(&r, &Reference::Digest(index.digest.clone()))
            .await
            .unwrap()
            .is_some(),
        "deleting a tag keeps the manifest"
    );
    assert_eq!(
        db.delete_manifest(&r, &index.digest, true, &|_| false)
            .await
            .unwrap(),
        vec![index.digest.clone()]
    );
    assert!(db
        .delete_manifest(&r, &index.digest, true, &|_| false)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.list_tags(&r, Page::default()).await.unwrap().unwrap(),
        Vec::<String>::new(),
        "deleting a manifest deletes its tags"
    );
    assert!(db
        .get_manifest(&r, &Reference::Tag(tag("v1")))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        db.list_tags(&repo("suite/none"), Page::default())
            .await
            .unwrap(),
        None
    );
}

/// A manifest of more references than one statement checks or records at once (a
/// cosign `.sig` with a thousand signatures): the missing ones are all named, in the
/// manifest's order, and every edge is recorded once.
async fn many_references(db: &dyn MetadataStore) {
    let r = repo("suite/many");
    let layers: Vec<Digest> = (0..1000)
        .map(|i| Digest::sha256_of(format!("layer {i}").as_bytes()))
        .collect();
    let absent = [layers[7].clone(), layers[998].clone()];
    for d in layers.iter().filter(|d| !absent.contains(d)) {
        db.link_blob(&r, d, 1).await.unwrap();
    }
    // One layer listed twice, as a manifest may.
    let mut listed = layers.clone();
    listed.push(layers[500].clone());
    let put = ManifestPut {
        repo: r.clone(),
        manifest: manifest("{\"many\":1}", None),
        blobs: listed,
        children: vec![],
        sizes: Vec::new(),
        tags: vec![tag("many")],
        condition: None,
        immutable: Vec::new(),
    };
    match db.put_manifest(&put).await {
        Err(StorageError::MissingReferences(missing)) => assert_eq!(missing, absent),
        other => panic!("expected MissingReferences, got {other:?}"),
    }
    for d in &absent {
        db.link_blob(&r, d, 1).await.unwrap();
    }
    db.put_manifest(&put).await.unwrap();
    db.put_manifest(&put).await.unwrap(); // idempotent
                                          // Their sizes in one call, across the statement's chunks; an unknown digest is left out.
    let mut asked = layers.clone();
    asked.push(Digest::sha256_of(b"never pushed"));
    let sizes = db.blob_sizes(&asked).await.unwrap();
    assert_eq!(sizes.len(), 1000);
    assert!(layers.iter().all(|d| sizes.get(d) == Some(&1)));
    let export = db
        .export_repository(r.as_str(), None, ExportRows::All)
        .await
        .unwrap()
        .unwrap();
    let edges = export
        .tables
        .iter()
        .find(|t| t.table == "manifest_blobs")
        .unwrap();
    assert_eq!(edges.rows.len(), 1000);
}

/// An export of a window of manifests, of named manifests, or of rows that belong to no
/// manifest holds each selected manifest's own rows (its row, tags, edges), never the
/// blob links.
async fn export_selections(db: &dyn MetadataStore) {
    let r = repo("suite/export");
    let layer = Digest::sha256_of(b"export layer");
    db.link_blob(&r, &layer, 1).await.unwrap();
    let mut digests = Vec::new();
    for i in 0..3 {
        let m = manifest(&format!("{{\"export\":{i}}}"), None);
        let mut p = put(&r, &m, &[], Some(&format!("t{i}")));
        p.blobs = vec![layer.clone()];
        db.put_manifest(&p).await.unwrap();
        digests.push(m.digest);
    }
    digests.sort_by_key(|d| d.to_string());
    let names = |ds: &[Digest]| ds.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    assert_eq!(
        selected(db, &r, ExportRows::All).await,
        (names(&digests), 3, 3, 1)
    );
    let first = ExportRows::Window {
        after: None,
        limit: 2,
    };
    assert_eq!(
        selected(db, &r, first).await,
        (names(&digests[..2]), 2, 2, 0)
    );
    let after = digests[1].to_string();
    let rest = ExportRows::Window {
        after: Some(&after),
        limit: 2,
    };
    assert_eq!(
        selected(db, &r, rest).await,
        (names(&digests[2..]), 1, 1, 0)
    );
    let last = digests[2].to_string();
    let past = ExportRows::Window {
        after: Some(&last),
        limit: 2,
    };
    assert_eq!(selected(db, &r, past).await, (Vec::new(), 0, 0, 0));
    let asked = [
        digests[2].clone(),
        Digest::sha256_of(b"not a manifest here"),
    ];
    assert_eq!(
        selected(db, &r, ExportRows::Of(&asked)).await,
        (names(&digests[2..]), 1, 1, 0)
    );
    // The store's keys keep every row with its manifest: nothing is unowned.
    assert_eq!(
        selected(db, &r, ExportRows::Unowned).await,
        (Vec::new(), 0, 0, 0)
    );
}

/// What an export selects: the manifests' digests, and the counts of tags, edges to
/// blobs and blob links.
async fn selected(
    db: &dyn MetadataStore,
    r: &RepoName,
    rows: ExportRows<'_>,
) -> (Vec<String>, usize, usize, usize) {
    let export = db
        .export_repository(r.as_str(), None, rows)
        .await
        .unwrap()
        .unwrap();
    let rows_in = |table: &str| -> Vec<String> {
        let t = export.tables.iter().find(|t| t.table == table).unwrap();
        t.rows
            .iter()
            .map(|row| match &row[0] {
                super::ExportValue::Text(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    };
    (
        rows_in("manifests"),
        rows_in("tags").len(),
        rows_in("manifest_blobs").len(),
        rows_in("repository_blobs").len(),
    )
}

async fn referrers(db: &dyn MetadataStore) {
    let r = repo("suite/referrers");
    let subject = Digest::sha256_of(b"subject not pushed yet");
    assert!(db
        .list_referrers(&r, &subject, true)
        .await
        .unwrap()
        .is_empty());
    let sig = manifest("{\"sig\":1}", Some(&subject));
    let sbom = manifest("{\"sbom\":1}", Some(&subject));
    for m in [&sig, &sbom] {
        db.put_manifest(&ManifestPut {
            repo: r.clone(),
            manifest: m.clone(),
            blobs: vec![],
            children: vec![],
            sizes: Vec::new(),
            tags: Vec::new(),
            condition: None,
            immutable: Vec::new(),
        })
        .await
        .unwrap();
    }
    let listed = db.list_referrers(&r, &subject, true).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|x| x.digest == sig.digest));
    let one = listed.iter().find(|x| x.digest == sbom.digest).unwrap();
    assert_eq!(one.size, sbom.content.len() as u64);
    assert_eq!(one.artifact_type.as_deref(), Some("application/x-test"));
    assert_eq!(one.annotations.get("k").map(String::as_str), Some("v"));
    db.delete_manifest(&r, &sig.digest, true, &|_| false)
        .await
        .unwrap();
    assert_eq!(
        db.list_referrers(&r, &subject, true).await.unwrap().len(),
        1
    );
}

async fn pagination(db: &dyn MetadataStore) {
    let r = repo("suite/pages");
    let m = manifest("{\"pages\":1}", None);
    for t in ["b", "a", "c", "B", "a1"] {
        db.put_manifest(&ManifestPut {
            repo: r.clone(),
            manifest: m.clone(),
            blobs: vec![],
            children: vec![],
            sizes: Vec::new(),
            tags: vec![tag(t)],
            condition: None,
            immutable: Vec::new(),
        })
        .await
        .unwrap();
    }
    let page = |last, limit| Page { last, limit };
    assert_eq!(
        db.list_tags(&r, page(None, Some(2)))
            .await
            .unwrap()
            .unwrap(),
        vec!["B", "a"]
    );
    assert_eq!(
        db.list_tags(&r, page(Some("a"), Some(2)))
            .await
            .unwrap()
            .unwrap(),
        vec!["a1", "b"]
    );
    assert_eq!(
        db.list_tags(&r, page(Some("c"), None))
            .await
            .unwrap()
            .unwrap(),
        Vec::<String>::new()
    );
    // The detailed listing pages the same way, each tag with its manifest.
    let details = db
        .list_tag_details(&r, page(Some("a"), Some(2)))
        .await
        .unwrap()
        .unwrap();
    let names: Vec<&str> = details.iter().map(|d| d.tag.as_str()).collect();
    assert_eq!(names, vec!["a1", "b"]);
    assert!(details.iter().all(|d| d.digest == m.digest
        && d.media_type == m.media_type
        && d.size == m.content.len() as u64
        && d.content == m.content
        && d.pushed_at > 0));
    assert!(db
        .list_tag_details(&repo("suite/none"), Page::default())
        .await
        .unwrap()
        .is_none());
    let repos = db
        .list_repositories(page(Some("suite/"), None))
        .await
        .unwrap();
    assert!(repos.windows(2).all(|w| w[0] < w[1]));
    assert!(repos.contains(&"suite/pages".to_string()));
    let first = db.list_repositories(page(None, Some(1))).await.unwrap();
    assert_eq!(first.len(), 1);
}

async fn uploads(db: &dyn MetadataStore) {
    let session = UploadSession {
        id: "suite-upload-1".into(),
        repo: repo("suite/uploads"),
        size: 0,
        parts: vec![],
        progress: None,
        created_at: 100,
        updated_at: 100,
    };
    db.create_upload(&session).await.unwrap();
    assert_eq!(db.get_upload(&session.id).await.unwrap().unwrap(), session);
    let part = StagedPart {
        key: "uploads/suite-upload-1/000000-1".into(),
        size: 10,
        sha256: "00".repeat(32),
    };
    let after = db.append_upload_part(&session.id, 0, &part).await.unwrap();
    assert_eq!(after.size, 10);
    assert_eq!(after.parts, vec![part.clone()]);
    assert!(matches!(
        db.append_upload_part(&session.id, 0, &part).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        db.append_upload_part("suite-missing", 0, &part).await,
        Err(StorageError::NotFound)
    ));
    let idle = db.uploads_idle_since(after.updated_at + 1).await.unwrap();
    assert!(idle.iter().any(|s| s.id == session.id));
    assert!(db.uploads_idle_since(0).await.unwrap().is_empty());
    assert!(db.delete_upload(&session.id).await.unwrap());
    assert!(db.get_upload(&session.id).await.unwrap().is_none());
    upload_progress(db).await;
}

/// A session's size and progress move together, only from the size the writer saw.
async fn upload_progress(db: &dyn MetadataStore) {
    use crate::blobs::{MultipartState, Staging, UploadProgress};
    let progress = |etags: &[&str], hash: &str| UploadProgress {
        staging: Staging::Multipart(MultipartState {
            upload_id: Some("mp-1".into()),
            etags: etags.iter().map(|e| e.to_string()).collect(),
            uploaded: 8,
            tail: Some("uploads/suite-upload-2/tail-8-1".into()),
        }),
        hashes: [("sha256".to_string(), hash.to_string())].into(),
    };
    let session = UploadSession {
        id: "suite-upload-2".into(),
        repo: repo("suite/uploads"),
        size: 0,
        parts: vec![],
        progress: Some(UploadProgress::default()),
        created_at: 100,
        updated_at: 100,
    };
    db.create_upload(&session).await.unwrap();
    assert_eq!(db.get_upload(&session.id).await.unwrap().unwrap(), session);
    let first = progress(&["e1"], "aa");
    let after = db.advance_upload(&session.id, 0, 10, &first).await.unwrap();
    assert_eq!((after.size, after.progress.as_ref()), (10, Some(&first)));
    assert_eq!(db.get_upload(&session.id).await.unwrap().unwrap(), after);
    // A writer that saw the old size changes nothing.
    assert!(matches!(
        db.advance_upload(&session.id, 0, 20, &progress(&["x"], "bb"))
            .await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(db.get_upload(&session.id).await.unwrap().unwrap(), after);
    assert!(matches!(
        db.advance_upload("suite-missing", 0, 1, &first).await,
        Err(StorageError::NotFound)
    ));
    assert!(db.delete_upload(&session.id).await.unwrap());
}

async fn atomic_signatures(db: &dyn MetadataStore) {
    let r = repo("suite/atomic");
    let m = manifest("{\"atomic\":1}", None);
    let sig = |id: &str, content: &'static [u8]| AtomicSignature {
        id: id.to_string(),
        content: Bytes::from_static(content),
    };
    let first = sig(&"a".repeat(32), b"first");
    assert!(matches!(
        db.put_atomic_signature(&r, &m.digest, &first).await,
        Err(StorageError::NotFound)
    ));
    db.put_manifest(&ManifestPut {
        repo: r.clone(),
        manifest: m.clone(),
        blobs: vec![],
        children: vec![],
        sizes: Vec::new(),
        tags: vec![tag("signed")],
        condition: None,
        immutable: Vec::new(),
    })
    .await
    .unwrap();
    assert!(db
        .list_atomic_signatures(&r, &m.digest)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.put_atomic_signature(&r, &m.digest, &first)
            .await
            .unwrap(),
        SignatureStored::Created
    );
    assert_eq!(
        db.put_atomic_signature(&r, &m.digest, &first)
            .await
            .unwrap(),
        SignatureStored::AlreadyPresent
    );
    assert!(matches!(
        db.put_atomic_signature(&r, &m.digest, &sig(&"a".repeat(32), b"other"))
            .await,
        Err(StorageError::Conflict(_))
    ));
    let second = sig(&"0".repeat(32), b"second");
    db.put_atomic_signature(&r, &m.digest, &second)
        .await
        .unwrap();
    assert_eq!(
        db.list_atomic_signatures(&r, &m.digest).await.unwrap(),
        vec![first.clone(), second.clone()],
        "in the order they were added"
    );
    assert!(db
        .delete_atomic_signature(&r, &m.digest, &first.id)
        .await
        .unwrap());
    assert!(!db
        .delete_atomic_signature(&r, &m.digest, &first.id)
        .await
        .unwrap());
    assert_eq!(
        db.list_atomic_signatures(&r, &m.digest).await.unwrap(),
        vec![second]
    );
    db.delete_manifest(&r, &m.digest, true, &|_| false)
        .await
        .unwrap();
    assert!(
        db.list_atomic_signatures(&r, &m.digest)
            .await
            .unwrap()
            .is_empty(),
        "signatures go with their manifest"
    );
}

fn put(r: &RepoName, m: &ManifestRecord, children: &[&Digest], t: Option<&str>) -> ManifestPut {
    ManifestPut {
        repo: r.clone(),
        manifest: m.clone(),
        blobs: vec![],
        children: children.iter().map(|d| (*d).clone()).collect(),
        sizes: Vec::new(),
        tags: t.map(tag).into_iter().collect(),
        condition: None,
        immutable: Vec::new(),
    }
}

fn cosign_tag(subject: &Digest, suffix: &str) -> String {
    format!("{}-{}.{suffix}", subject.algorithm().name(), subject.hex())
}

async fn attachment_index(db: &dyn MetadataStore) {
    let r = repo("suite/attachments");
    let image = manifest("{\"image\":1}", None);
    let index = manifest("{\"index\":1}", None);
    db.put_manifest(&put(&r, &image, &[], None)).await.unwrap();
    db.put_manifest(&put(&r, &index, &[&image.digest], Some("v1")))
        .await
        .unwrap();
    assert_eq!(
        db.parents_of(&r, &image.digest).await.unwrap(),
        vec![index.digest.clone()]
    );
    assert!(db.parents_of(&r, &index.digest).await.unwrap().is_empty());

    // A cosign .sig tag on the index, then appended (the tag moves).
    let sig1 = manifest("{\"sig\":\"one\"}", None);
    let sig_tag = cosign_tag(&index.digest, "sig");
    db.put_manifest(&put(&r, &sig1, &[], Some(&sig_tag)))
        .await
        .unwrap();
    let listed = db.list_attachments(&r, &index.digest).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attachment, sig1.digest);
    assert_eq!(listed[0].kind, AttachmentKind::Signature);
    assert_eq!(listed[0].source, AttachmentSource::Tag);
    assert_eq!(listed[0].tag.as_deref(), Some(sig_tag.as_str()));
    let referrers = db.list_referrers(&r, &index.digest, true).await.unwrap();
    assert_eq!(referrers.len(), 1);
    assert_eq!(
        referrers[0].artifact_type.as_deref(),
        Some(COSIGN_SIG_ARTIFACT)
    );
    assert!(db
        .list_referrers(&r, &index.digest, false)
        .await
        .unwrap()
        .is_empty());
    let sig2 = manifest("{\"sig\":\"two\"}", None);
    db.put_manifest(&put(&r, &sig2, &[], Some(&sig_tag)))
        .await
        .unwrap();
    let listed = db.list_attachments(&r, &index.digest).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the tag moved: only its new target is attached"
    );
    assert_eq!(listed[0].attachment, sig2.digest);

    // An SBOM by subject on the platform manifest, and an attestation on the SBOM.
    let sbom = ManifestRecord {
        artifact_type: Some("application/spdx+json".into()),
        ..manifest("{\"sbom\":1}", Some(&image.digest))
    };
    db.put_manifest(&put(&r, &sbom, &[], None)).await.unwrap();
    let att = ManifestRecord {
        artifact_type: Some("application/vnd.in-toto+json".into()),
        ..manifest("{\"att-on-sbom\":1}", Some(&sbom.digest))
    };
    db.put_manifest(&put(&r, &att, &[], None)).await.unwrap();
    let on_image = db.list_attachments(&r, &image.digest).await.unwrap();
    assert_eq!(on_image.len(), 1);
    assert_eq!(on_image[0].kind, AttachmentKind::Sbom);
    assert_eq!(on_image[0].source, AttachmentSource::Subject);
    assert_eq!(
        db.list_attachments(&r, &sbom.digest).await.unwrap()[0].kind,
        AttachmentKind::Attestation
    );

    // The referrers fallback tag: an index whose entries become referrers.
    let subject = image.digest.clone();
    let bundle = ManifestRecord {
        artifact_type: Some(crate::attachments::SIGSTORE_BUNDLE.into()),
        ..manifest("{\"bundle\":1}", None)
    };
    db.put_manifest(&put(&r, &bundle, &[], None)).await.unwrap();
    let fallback = manifest("{\"fallback\":1}", None);
    let fallback_tag = format!("{}-{}", subject.algorithm().name(), subject.hex());
    db.put_manifest(&put(&r, &fallback, &[&bundle.digest], Some(&fallback_tag)))
        .await
        .unwrap();
    let on_image = db.list_attachments(&r, &image.digest).await.unwrap();
    let via_fallback: Vec<_> = on_image
        .iter()
        .filter(|a| a.source == AttachmentSource::FallbackTag)
        .collect();
    assert_eq!(via_fallback.len(), 1);
    assert_eq!(via_fallback[0].attachment, bundle.digest);
    assert_eq!(via_fallback[0].kind, AttachmentKind::Signature);

    // What each manifest is an attachment of: the .sig by its tag, the SBOM by its
    // subject field, the fallback index and its entry by the fallback tag; the image
    // and the index are attachments of nothing.
    assert_eq!(
        db.attached_to(&r, &sig2.digest).await.unwrap(),
        vec![index.digest.clone()]
    );
    assert_eq!(
        db.attached_to(&r, &sbom.digest).await.unwrap(),
        vec![image.digest.clone()]
    );
    assert_eq!(
        db.attached_to(&r, &att.digest).await.unwrap(),
        vec![sbom.digest.clone()]
    );
    assert_eq!(
        db.attached_to(&r, &fallback.digest).await.unwrap(),
        vec![image.digest.clone()]
    );
    assert_eq!(
        db.attached_to(&r, &bundle.digest).await.unwrap(),
        vec![image.digest.clone()]
    );
    assert!(db.attached_to(&r, &image.digest).await.unwrap().is_empty());
    assert!(db.attached_to(&r, &index.digest).await.unwrap().is_empty());
    // A subject the repository does not hold makes nothing an attachment.
    let elsewhere = Digest::sha256_of(b"a subject in no repository");
    let dangling = manifest("{\"dangling\":1}", Some(&elsewhere));
    db.put_manifest(&put(&r, &dangling, &[], None))
        .await
        .unwrap();
    assert!(db
        .attached_to(&r, &dangling.digest)
        .await
        .unwrap()
        .is_empty());
    // Nor does one held by another repository.
    let other = repo("suite/attachments-other");
    db.put_manifest(&put(&other, &image, &[], None))
        .await
        .unwrap();
    let across = manifest("{\"across\":1}", Some(&image.digest));
    db.put_manifest(&put(&other, &across, &[], None))
        .await
        .unwrap();
    assert_eq!(
        db.attached_to(&other, &across.digest).await.unwrap(),
        vec![image.digest.clone()]
    );
    assert!(db
        .attached_to(&repo("suite/attachments-third"), &across.digest)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        db.list_referrers(&r, &image.digest, false)
            .await
            .unwrap()
            .len(),
        2
    );
    // Deleting the fallback tag forgets those entries.
    db.delete_tag(&r, &tag(&fallback_tag)).await.unwrap();
    assert_eq!(
        db.list_attachments(&r, &image.digest).await.unwrap().len(),
        1
    );

    // An atomic signature is an attachment too.
    db.put_atomic_signature(
        &r,
        &image.digest,
        &AtomicSignature {
            id: "b".repeat(32),
            content: Bytes::from_static(b"gpg"),
        },
    )
    .await
    .unwrap();
    let atomic: Vec<_> = db
        .list_attachments(&r, &image.digest)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.source == AttachmentSource::Extension)
        .collect();
    assert_eq!(atomic.len(), 1);
    assert_eq!(
        atomic[0].format,
        crate::attachments::AttachmentFormat::Atomic
    );
    assert_eq!(atomic[0].attachment, Digest::sha256_of(b"gpg"));
    assert_eq!(
        db.list_referrers(&r, &image.digest, true)
            .await
            .unwrap()
            .len(),
        1,
        "atomic signatures are not manifests: not referrers"
    );

    // Deleting the image deletes its attachments, and theirs.
    let deleted = db
        .delete_manifest(&r, &image.digest, true, &|_| false)
        .await
        .unwrap();
    assert!(deleted.contains(&image.digest));
    assert!(deleted.contains(&sbom.digest));
    assert!(deleted.contains(&att.digest));
    assert!(db
        .list_attachments(&r, &image.digest)
        .await
        .unwrap()
        .is_empty());
    // Deleting an attachment never touches its subject; keeping attachments is possible.
    assert_eq!(
        db.delete_manifest(&r, &sig2.digest, true, &|_| false)
            .await
            .unwrap(),
        vec![sig2.digest.clone()]
    );
    assert!(db
        .get_manifest(&r, &Reference::Digest(index.digest.clone()))
        .await
        .unwrap()
        .is_some());
    let sig3 = manifest("{\"sig\":\"three\"}", None);
    db.put_manifest(&put(&r, &sig3, &[], Some(&sig_tag)))
        .await
        .unwrap();
    assert_eq!(
        db.delete_manifest(&r, &index.digest, false, &|_| false)
            .await
            .unwrap(),
        vec![index.digest.clone()]
    );
    assert!(db
        .get_manifest(&r, &Reference::Tag(tag(&sig_tag)))
        .await
        .unwrap()
        .is_some());
}

async fn tag_conditions(db: &dyn MetadataStore) {
    let r = repo("suite/conditions");
    let a = manifest("{\"cond\":\"a\"}", None);
    let b = manifest("{\"cond\":\"b\"}", None);
    let conditional = |m: &ManifestRecord, c: TagCondition| ManifestPut {
        condition: Some(c),
        ..put(&r, m, &[], Some("t"))
    };
    // If-Match on a tag that does not exist fails; If-None-Match: * succeeds once.
    assert!(matches!(
        db.put_manifest(&conditional(&a, TagCondition::PointsAt(vec![])))
            .await,
        Err(StorageError::PreconditionFailed(_))
    ));
    db.put_manifest(&conditional(&a, TagCondition::NotAt(vec![])))
        .await
        .unwrap();
    assert!(matches!(
        db.put_manifest(&conditional(&b, TagCondition::NotAt(vec![])))
            .await,
        Err(StorageError::PreconditionFailed(_))
    ));
    // A signer who read `b` as current loses against one who read `a`.
    assert!(matches!(
        db.put_manifest(&conditional(
            &b,
            TagCondition::PointsAt(vec![b.digest.clone()])
        ))
        .await,
        Err(StorageError::PreconditionFailed(_))
    ));
    let current = db
        .get_manifest(&r, &Reference::Tag(tag("t")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.digest, a.digest, "a failed condition moves nothing");
    db.put_manifest(&conditional(
        &b,
        TagCondition::PointsAt(vec![a.digest.clone()]),
    ))
    .await
    .unwrap();
    let current = db
        .get_manifest(&r, &Reference::Tag(tag("t")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.digest, b.digest);

    // Several tags move in one transaction, or none does: `t` no longer points at `a`,
    // so `u` stays absent too.
    let both = ManifestPut {
        sizes: Vec::new(),
        tags: vec![tag("u"), tag("t")],
        condition: Some(TagCondition::PointsAt(vec![a.digest.clone()])),
        immutable: Vec::new(),
        ..put(&r, &a, &[], None)
    };
    assert!(matches!(
        db.put_manifest(&both).await,
        Err(StorageError::PreconditionFailed(_))
    ));
    assert!(db
        .get_manifest(&r, &Reference::Tag(tag("u")))
        .await
        .unwrap()
        .is_none());
    db.put_manifest(&ManifestPut {
        condition: None,
        immutable: Vec::new(),
        ..both
    })
    .await
    .unwrap();
    for t in ["t", "u"] {
        let current = db
            .get_manifest(&r, &Reference::Tag(tag(t)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(current.digest, a.digest, "{t}");
    }
}

/// A tag the push marks immutable is created, pushed again at the same manifest, never
/// moved; a delete that would remove a protected tag removes nothing.
async fn immutable_tags(db: &dyn MetadataStore) {
    let r = repo("suite/immutable");
    let a = manifest("{\"immutable\":\"a\"}", None);
    let b = manifest("{\"immutable\":\"b\"}", None);
    let protected = |m: &ManifestRecord, tags: &[&str]| ManifestPut {
        tags: tags.iter().map(|t| tag(t)).collect(),
        immutable: vec![tag("v1")],
        ..put(&r, m, &[], None)
    };
    db.put_manifest(&protected(&a, &["v1", "latest"]))
        .await
        .unwrap();
    db.put_manifest(&protected(&a, &["v1"])).await.unwrap();
    let refused = db.put_manifest(&protected(&b, &["latest", "v1"])).await;
    assert!(
        matches!(&refused, Err(StorageError::TagImmutable { tag, .. }) if tag == "v1"),
        "{refused:?}"
    );
    for t in ["v1", "latest"] {
        let current = db
            .get_manifest(&r, &Reference::Tag(tag(t)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            current.digest, a.digest,
            "a refused push moves no tag ({t})"
        );
    }
    assert!(
        db.get_manifest(&r, &Reference::Digest(b.digest.clone()))
            .await
            .unwrap()
            .is_none(),
        "nor stores the manifest"
    );
    // Unprotected tags move as ever.
    db.put_manifest(&protected(&b, &["latest"])).await.unwrap();

    let refused = db
        .delete_manifest(&r, &a.digest, true, &|t| t == "v1")
        .await;
    assert!(
        matches!(&refused, Err(StorageError::TagImmutable { tag, .. }) if tag == "v1"),
        "{refused:?}"
    );
    assert!(db
        .get_manifest(&r, &Reference::Tag(tag("v1")))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        db.delete_manifest(&r, &b.digest, true, &|t| t == "v1")
            .await
            .unwrap(),
        vec![b.digest.clone()]
    );

    // Two pushes creating one protected tag at once: one creates it, the other moves
    // nothing.
    let c = manifest("{\"immutable\":\"c\"}", None);
    let d = manifest("{\"immutable\":\"d\"}", None);
    let racing = |m: &ManifestRecord| ManifestPut {
        immutable: vec![tag("v2")],
        ..put(&r, m, &[], Some("v2"))
    };
    let (put_c, put_d) = (racing(&c), racing(&d));
    let (first, second) = tokio::join!(db.put_manifest(&put_c), db.put_manifest(&put_d));
    let won = match (first, second) {
        (Ok(()), Err(StorageError::TagImmutable { .. })) => &c,
        (Err(StorageError::TagImmutable { .. }), Ok(())) => &d,
        other => panic!("exactly one creation must win: {other:?}"),
    };
    let current = db
        .get_manifest(&r, &Reference::Tag(tag("v2")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.digest, won.digest);
}

/// What retention reads, and its delete that refuses whatever changed since it was read.
async fn retention(db: &dyn MetadataStore) {
    use super::Retired;
    let r = repo("suite/retention");
    let image = manifest("{\"retention\":\"image\"}", None);
    let index = manifest("{\"retention\":\"index\"}", None);
    let old = manifest("{\"retention\":\"old\"}", None);
    let sig = manifest("{\"retention\":\"sig\"}", None);
    db.put_manifest(&put(&r, &image, &[], None)).await.unwrap();
    db.put_manifest(&put(&r, &index, &[&image.digest], Some("v1")))
        .await
        .unwrap();
    db.put_manifest(&put(&r, &old, &[], Some("old")))
        .await
        .unwrap();
    db.put_manifest(&put(&r, &sig, &[], Some(&cosign_tag(&old.digest, "sig"))))
        .await
        .unwrap();
    assert!(db.inventory(&repo("suite/absent")).await.unwrap().is_none());

    let at = super::now();
    db.record_pulls(&[
        (r.to_string(), old.digest.clone(), at - 10),
        (r.to_string(), old.digest.clone(), at - 20),
        (r.to_string(), Digest::sha256_of(b"absent"), at),
        ("suite/absent".into(), old.digest.clone(), at),
    ])
    .await
    .unwrap();
    db.record_pulls(&[(r.to_string(), old.digest.clone(), at - 30)])
        .await
        .unwrap();

    let inventory = db.inventory(&r).await.unwrap().unwrap();
    let of = |d: &Digest| {
        inventory
            .manifests
            .iter()
            .find(|m| &m.digest == d)
            .unwrap()
            .clone()
    };
    assert_eq!(inventory.manifests.len(), 4);
    assert_eq!(of(&index.digest).children, vec![image.digest.clone()]);
    assert_eq!(of(&index.digest).tags[0].name, "v1");
    assert!(of(&image.digest).tags.is_empty());
    assert_eq!(
        of(&old.digest).pulled_at,
        Some(at - 10),
        "the latest pull counts"
    );
    assert_eq!(of(&image.digest).pulled_at, None);
    assert!(of(&sig.digest).is_attachment);
    assert!(!of(&old.digest).is_attachment);
    assert_eq!(of(&old.digest).attachments, vec![sig.digest.to_string()]);

    // A child of an index is not deleted while the index lists it.
    let refused = db
        .retire_manifest(&r, &image.digest, &of(&image.digest).seen(), &|_| false)
        .await
        .unwrap();
    assert!(matches!(refused, Retired::Changed(_)), "{refused:?}");

    // Tagged again since it was seen: left alone.
    let seen = of(&old.digest).seen();
    let mut moved = seen.clone();
    moved.tags[0].updated_at -= 1;
    let refused = db
        .retire_manifest(&r, &old.digest, &moved, &|_| false)
        .await
        .unwrap();
    assert!(matches!(refused, Retired::Changed(_)), "{refused:?}");
    let mut signed = seen.clone();
    signed.attachments.clear();
    let refused = db
        .retire_manifest(&r, &old.digest, &signed, &|_| false)
        .await
        .unwrap();
    assert!(matches!(refused, Retired::Changed(_)), "{refused:?}");
    let refused = db
        .retire_manifest(&r, &old.digest, &seen, &|t| t == "old")
        .await;
    assert!(
        matches!(&refused, Err(StorageError::TagImmutable { tag, .. }) if tag == "old"),
        "{refused:?}"
    );

    // As seen: deleted, with its signature.
    let retired = db
        .retire_manifest(&r, &old.digest, &seen, &|_| false)
        .await
        .unwrap();
    assert_eq!(
        retired,
        Retired::Deleted(vec![old.digest.clone(), sig.digest.clone()])
    );
    let again = db
        .retire_manifest(&r, &old.digest, &seen, &|_| false)
        .await
        .unwrap();
    assert!(matches!(again, Retired::Changed(_)), "{again:?}");

    // The index first, then its child.
    let retired = db
        .retire_manifest(&r, &index.digest, &of(&index.digest).seen(), &|_| false)
        .await
        .unwrap();
    assert_eq!(retired, Retired::Deleted(vec![index.digest.clone()]));
    let retired = db
        .retire_manifest(&r, &image.digest, &of(&image.digest).seen(), &|_| false)
        .await
        .unwrap();
    assert_eq!(retired, Retired::Deleted(vec![image.digest.clone()]));
    assert!(db
        .inventory(&r)
        .await
        .unwrap()
        .unwrap()
        .manifests
        .is_empty());
}

/// The outbox: appended events numbered without gaps (concurrent appenders too),
/// cursors that never move back, dead letters requeued and removed, pruning that keeps
/// what a dead letter names.
async fn events(db: Arc<dyn MetadataStore>) {
    use crate::events::{EventData, EventType, NewEvent};

    let start = db.latest_event_id().await.unwrap();
    let event = |n: usize| {
        NewEvent::new(
            EventType::SyncFinished,
            EventData {
                repository: format!("suite/events-{n}"),
                ..EventData::default()
            },
        )
    };
    db.append_events(&[event(0), event(1)]).await.unwrap();
    db.append_events(&[]).await.unwrap();
    let writers: Vec<_> = (2..12)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move { db.append_events(&[event(n)]).await.unwrap() })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let all = db.events_after(start, 100).await.unwrap();
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, ((start + 1)..=(start + 12)).collect::<Vec<_>>());
    assert_eq!(db.latest_event_id().await.unwrap(), start + 12);
    assert_eq!(all[1].data.repository, "suite/events-1");
    assert_eq!(db.events_after(start, 3).await.unwrap().len(), 3);

    assert_eq!(db.event_cursor("hook").await.unwrap(), None);
    db.set_event_cursor("hook", start + 5).await.unwrap();
    db.set_event_cursor("hook", start + 2).await.unwrap();
    assert_eq!(db.event_cursor("hook").await.unwrap(), Some(start + 5));

    db.put_dead_letter("hook", start + 3, 5, "HTTP 500")
        .await
        .unwrap();
    db.put_dead_letter("other", start + 4, 2, "timed out")
        .await
        .unwrap();
    let dead = db.dead_letters(Some("hook")).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].event.id,
            dead[0].attempts,
            dead[0].error.as_str(),
            dead[0].requeued
        ),
        (start + 3, 5, "HTTP 500", false)
    );
    assert_eq!(db.dead_letters(None).await.unwrap().len(), 2);
    assert_eq!(db.requeue_dead_letters(Some("hook"), &[]).await.unwrap(), 1);
    assert_eq!(db.requeue_dead_letters(Some("hook"), &[]).await.unwrap(), 0);
    assert_eq!(
        db.requeue_dead_letters(None, &[start + 4, start + 99])
            .await
            .unwrap(),
        1
    );
    assert!(db
        .dead_letters(None)
        .await
        .unwrap()
        .iter()
        .all(|d| d.requeued));

    // Pruning keeps what a dead letter names, and what is newer than asked.
    let future = super::now() + 10;
    let pruned = db.prune_events(start + 6, future).await.unwrap();
    assert_eq!(pruned, 4, "events 1, 2, 5, 6 of this run");
    let left: Vec<i64> = db
        .events_after(start, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left[..2], [start + 3, start + 4]);
    db.remove_dead_letter("hook", start + 3).await.unwrap();
    db.remove_dead_letter("other", start + 4).await.unwrap();
    assert!(db.dead_letters(None).await.unwrap().is_empty());
    db.prune_events(start + 12, future).await.unwrap();
    assert!(db.events_after(start, 100).await.unwrap().is_empty());
    // Numbers are never reused after a prune.
    db.append_events(&[event(12)]).await.unwrap();
    assert_eq!(db.latest_event_id().await.unwrap(), start + 13);
}
