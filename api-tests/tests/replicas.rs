//! Two Signet replicas sharing one PostgreSQL database and one SeaweedFS bucket (the
//! scale-out deployment), driven alternately: whatever one replica wrote, the other
//! serves and continues, and racing writes end in one consistent state.

use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};
use signet_api_tests::oci::{
    descriptor, get, header, image_manifest, manifest_digest, push_artifact, push_blob, push_image,
    put_manifest, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, run, sha256, signet_binary, skopeo, Registry};
use signet_storage::testing::{TestDatabase, TestS3};

/// The shared services and the configuration every replica (and `signet gc`) reads.
struct Deployment {
    _db: TestDatabase,
    _s3: TestS3,
    toml: String,
    a: Registry,
    b: Registry,
}

async fn deployment(extra: &str) -> Deployment {
    let db = TestDatabase::create().await;
    let s3 = TestS3::seaweedfs().await;
    let toml = format!(
        "{extra}\n[storage]\nmetadata_url = \"{}\"\n{}",
        db.url,
        s3.toml()
    );
    let a = Registry::start_with_config(&toml);
    let b = Registry::start_with_config(&toml);
    Deployment {
        _db: db,
        _s3: s3,
        toml,
        a,
        b,
    }
}

/// The same URL path on another replica (`Location` headers may be absolute).
fn on(r: &Registry, location: &str) -> String {
    let path = match location.strip_prefix("http://") {
        Some(rest) => &rest[rest.find('/').unwrap_or(rest.len())..],
        None => location,
    };
    format!("{}{path}", r.url)
}

async fn patch(c: &reqwest::Client, url: &str, start: usize, chunk: &[u8]) -> String {
    let resp = c
        .patch(url)
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            format!("{start}-{}", start + chunk.len() - 1),
        )
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "PATCH {url}");
    let range = header(resp.headers(), "range");
    assert_eq!(range, format!("0-{}", start + chunk.len() - 1));
    header(resp.headers(), "location").to_string()
}

/// The digest a replica answers for `repo:reference`.
async fn digest_of(c: &reqwest::Client, r: &Registry, repo: &str, reference: &str) -> String {
    manifest_digest(c, r, repo, reference)
        .await
        .unwrap_or_else(|| panic!("{repo}:{reference} on {} is not 200", r.url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_continue_each_others_uploads_and_agree_on_races() {
    let d = deployment("").await;
    let (a, b) = (&d.a, &d.b);
    let c = client();

    // A chunked upload begun on A (POST + PATCH) and finished on B (PATCH + PUT).
    let blob = random_bytes(3 * 1024 * 1024 + 17);
    let digest = sha256(&blob);
    let (first, second) = blob.split_at(1024 * 1024);
    let resp = c
        .post(a.v2("replicas/chunked/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = on(a, header(resp.headers(), "location"));
    let location = patch(&c, &location, 0, first).await;
    let status = c.get(on(b, &location)).send().await.unwrap();
    assert_eq!(
        status.status(),
        StatusCode::NO_CONTENT,
        "B sees A's session"
    );
    assert_eq!(
        header(status.headers(), "range"),
        format!("0-{}", first.len() - 1)
    );
    let location = patch(&c, &on(b, &location), first.len(), second).await;
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = c
        .put(format!("{}{sep}digest={digest}", on(b, &location)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT on B");
    for r in [a, b] {
        let (status, bytes) = get(&c, &r.v2(&format!("replicas/chunked/blobs/{digest}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sha256(&bytes), digest, "the blob on {}", r.url);
    }

    // A manifest pushed on A is pulled on B, byte for byte.
    let manifest = push_image(&c, a, "replicas/app", "v1", &[&random_bytes(4096)]).await;
    let (status, body) = get(&c, &b.v2("replicas/app/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), manifest.as_slice());

    // The same blob pushed on both at once: both succeed, one blob.
    for _ in 0..5 {
        let same = random_bytes(256 * 1024);
        let (da, db) = tokio::join!(
            push_blob(&c, a, "replicas/race", &same),
            push_blob(&c, b, "replicas/race", &same)
        );
        assert_eq!(da, db);
        for r in [a, b] {
            let (status, bytes) = get(&c, &r.v2(&format!("replicas/race/blobs/{da}"))).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(bytes, same);
        }
    }

    // The same tag pushed on both at once, with different manifests: both are accepted
    // and both replicas then name the same one.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    push_blob(&c, a, "replicas/race", config).await;
    for round in 0..10 {
        let layer_a = random_bytes(64);
        let layer_b = random_bytes(64);
        push_blob(&c, a, "replicas/race", &layer_a).await;
        push_blob(&c, b, "replicas/race", &layer_b).await;
        let ma = image_manifest(config, &[&layer_a], json!({}));
        let mb = image_manifest(config, &[&layer_b], json!({}));
        tokio::join!(
            put_manifest(&c, a, "replicas/race", "latest", OCI_MANIFEST, &ma),
            put_manifest(&c, b, "replicas/race", "latest", OCI_MANIFEST, &mb)
        );
        let on_a = digest_of(&c, a, "replicas/race", "latest").await;
        let on_b = digest_of(&c, b, "replicas/race", "latest").await;
        assert_eq!(on_a, on_b, "round {round}: replicas disagree on the tag");
        assert!(on_a == sha256(&ma) || on_a == sha256(&mb), "round {round}");
        let (status, body) = get(&c, &b.v2(&format!("replicas/race/manifests/{on_a}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sha256(&body), on_a);
    }
    let (_, body) = get(&c, &b.v2("replicas/race/tags/list")).await;
    let tags: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], json!(["latest"]));
}

/// An OCI layout with one image (config + one layer) tagged `v1`; its manifest digest.
fn oci_layout(dir: &Path) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let write = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), bytes).unwrap();
        digest
    };
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = random_bytes(300 * 1024);
    write(config);
    write(&layer);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = write(&manifest);
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut desc = descriptor(OCI_MANIFEST, &manifest);
    desc["annotations"] = json!({ "org.opencontainers.image.ref.name": "v1" });
    let index = json!({ "schemaVersion": 2, "manifests": [desc] });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_copies_in_through_one_replica_and_out_through_the_other() {
    let d = deployment("").await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let digest = oci_layout(&src);
    run(skopeo(dir.path())
        .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{}/replicas/skopeo:v1", d.a.host)));
    let out = dir.path().join("out");
    run(skopeo(dir.path())
        .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{}/replicas/skopeo:v1", d.b.host))
        .arg(format!("oci:{}:v1", out.display())));
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], json!(digest));
    let inspected = run(skopeo(dir.path())
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/replicas/skopeo:v1", d.b.host)));
    assert_eq!(sha256(inspected.as_bytes()), digest);
    // Every blob came back identical.
    for entry in std::fs::read_dir(src.join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name();
        let copied = std::fs::read(out.join("blobs/sha256").join(&name)).unwrap();
        assert_eq!(copied, std::fs::read(entry.path()).unwrap(), "{name:?}");
    }
}

/// `signet gc --json` against the shared stores: the report, or stderr on failure.
fn gc(d: &Deployment, dir: &Path) -> Result<Value, String> {
    let config = dir.join(format!("gc-{:08x}.toml", rand::random::<u32>()));
    std::fs::write(&config, &d.toml).unwrap();
    let out = Command::new(signet_binary())
        .arg("--config")
        .arg(&config)
        .args(["gc", "--json", "--data-dir"])
        .arg(dir.join("gc-data"))
        .output()
        .expect("run signet gc");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("gc report"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_runs_beside_a_serving_replica_one_collector_at_a_time() {
    let d = deployment("[gc]\ninterval_secs = 0\ngrace_secs = 0\n").await;
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let kept = random_bytes(64 * 1024);
    let manifest = push_image(&c, &d.a, "replicas/gc", "v1", &[&kept]).await;
    let orphans: Vec<String> = futures::future::join_all(
        (0..20).map(|_| async { push_blob(&c, &d.b, "replicas/gc", &random_bytes(4096)).await }),
    )
    .await;
    // Ages are counted in whole seconds: let the pushes be older than `grace_secs = 0`.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // Two collectors at once (as two replicas' schedules might start them), while B
    // keeps serving the tagged image.
    let collectors = std::thread::scope(|s| {
        let one = s.spawn(|| gc(&d, dir.path()));
        let two = s.spawn(|| gc(&d, dir.path()));
        let serving = s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                for _ in 0..20 {
                    let (status, body) = get(&c, &d.b.v2("replicas/gc/manifests/v1")).await;
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(body.as_ref(), manifest.as_slice());
                    let (status, bytes) =
                        get(&c, &d.b.v2(&format!("replicas/gc/blobs/{}", sha256(&kept)))).await;
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(bytes, kept);
                }
            })
        });
        serving.join().expect("B served throughout");
        [one.join().unwrap(), two.join().unwrap()]
    });
    let mut reports = 0;
    for outcome in &collectors {
        match outcome {
            Ok(_) => reports += 1,
            Err(e) => assert!(
                e.contains("another garbage collection is running"),
                "a collector failed for another reason: {e}"
            ),
        }
    }
    assert!(reports >= 1, "no collector ran: {collectors:?}");
    // Whatever the two did, a last run finds nothing more, and the orphans are gone.
    let last = gc(&d, dir.path()).expect("a collector alone runs");
    assert_eq!(last["blobs"], json!([]), "{last}");
    for orphan in &orphans {
        let resp = c
            .head(d.a.v2(&format!("replicas/gc/blobs/{orphan}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "orphan {orphan}");
        let digest: signet_storage::Digest = orphan.parse().unwrap();
        let bytes = d._s3.blob_store().size(&digest).await.unwrap();
        assert_eq!(bytes, None, "the orphan's bytes are gone from the bucket");
    }
    let (status, body) = get(&c, &d.a.v2("replicas/gc/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), manifest.as_slice());
}

/// The tags `r` lists for `repo`, and the digests of the referrers of `subject`.
async fn listings(c: &reqwest::Client, r: &Registry, repo: &str, subject: &str) -> (Value, Value) {
    let (status, tags) = get(c, &r.v2(&format!("{repo}/tags/list"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, index) = get(c, &r.v2(&format!("{repo}/referrers/{subject}"))).await;
    assert_eq!(status, StatusCode::OK);
    let index: Value = serde_json::from_slice(&index).unwrap();
    let referrers = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].clone())
        .collect();
    (
        serde_json::from_slice::<Value>(&tags).unwrap()["tags"].clone(),
        referrers,
    )
}

/// Replica B caches its answers (the change feed vouches for them), yet once replica A
/// has acknowledged a write, B never serves what A replaced: the manifest a tag names,
/// the tags list, the referrers list; and the other way round for a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_serves_what_another_acknowledged_at_once() {
    let d = deployment("").await;
    let (a, b) = (&d.a, &d.b);
    let c = client();
    let repo = "feed/app";
    let m1 = push_image(&c, a, repo, "latest", &[b"one"]).await;
    let v1 = sha256(&m1);
    for _ in 0..3 {
        assert_eq!(digest_of(&c, b, repo, "latest").await, v1);
        assert_eq!(
            listings(&c, b, repo, &v1).await,
            (json!(["latest"]), json!([]))
        );
    }

    for round in 0..3 {
        let layer = format!("round {round}");
        let moved = sha256(&push_image(&c, a, repo, "latest", &[layer.as_bytes()]).await);
        let tag = format!("r{round}");
        push_image(&c, a, repo, &tag, &[layer.as_bytes()]).await;
        let referrer = push_artifact(
            &c,
            a,
            repo,
            None,
            "application/x.feed",
            Some((&v1, m1.len())),
            layer.as_bytes(),
        )
        .await;
        // Asked at once, B already serves every write A acknowledged.
        assert_eq!(
            digest_of(&c, b, repo, "latest").await,
            moved,
            "round {round}"
        );
        let (tags, referrers) = listings(&c, b, repo, &v1).await;
        assert!(
            tags.as_array().unwrap().contains(&json!(tag)),
            "round {round}: {tags}"
        );
        assert!(
            referrers.as_array().unwrap().contains(&json!(referrer)),
            "round {round}: {referrers}"
        );
        // And a delete on B is at once gone from A, which had cached the tag.
        for _ in 0..2 {
            digest_of(&c, a, repo, &tag).await;
        }
        let resp = c
            .delete(b.v2(&format!("{repo}/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let resp = c
            .head(a.v2(&format!("{repo}/manifests/{tag}")))
            .header("Accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "round {round}");
    }
}
