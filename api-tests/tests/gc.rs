//! Garbage collection with the real server and the real `signet gc` command, run
//! beside the server on its data folder: what it keeps (live manifests, attachments of
//! live subjects, children of live indexes, untagged manifests by default), what it
//! removes, dry runs, and pushes racing collections with no grace period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{attachment_tag, SIG_ANNOTATION, SIMPLESIGNING};
use signet_api_tests::oci::{
    descriptor, get, push_blob, put_manifest, send_manifest, stored_blob_files, OCI_CONFIG,
    OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, sha256, Registry};

/// Runs `signet gc --json [args]` on the registry's stores with its configuration;
/// the report, or the command's stderr when it failed.
fn gc(r: &Registry, args: &[&str], env: &[(&str, &str)]) -> Result<Value, String> {
    let mut all = vec!["gc", "--json"];
    all.extend_from_slice(args);
    let mut cmd = r.cli(&all);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run signet gc");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "gc output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    }))
}

fn must_gc(r: &Registry, args: &[&str], env: &[(&str, &str)]) -> Value {
    gc(r, args, env).unwrap_or_else(|e| panic!("signet gc failed: {e}"))
}

fn digests(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A grace period of 0 still protects what was written in the current second.
fn age() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// An image pushed over HTTP: its manifest and blobs, by bytes.
#[derive(Clone)]
struct Pushed {
    repo: String,
    reference: String,
    manifest: Vec<u8>,
    blobs: Vec<Bytes>,
}

impl Pushed {
    fn digest(&self) -> String {
        sha256(&self.manifest)
    }
    fn blob_digests(&self) -> Vec<String> {
        self.blobs.iter().map(|b| sha256(b)).collect()
    }
}

async fn push(c: &Client, r: &Registry, repo: &str, reference: &str, layers: Vec<Bytes>) -> Pushed {
    let config = Bytes::from(format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":\"{}\"}}",
        hex(&random_bytes(8))
    ));
    push_blob(c, r, repo, &config).await;
    for l in &layers {
        push_blob(c, r, repo, l).await;
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    put_manifest(c, r, repo, reference, OCI_MANIFEST, &manifest).await;
    let mut blobs = vec![config];
    blobs.extend(layers);
    Pushed {
        repo: repo.into(),
        reference: reference.into(),
        manifest,
        blobs,
    }
}

/// A cosign-style signature of `subject`: a `sha256-<hex>.sig` tag on a manifest whose
/// layer (the simple-signing payload) only it references.
async fn sign(c: &Client, r: &Registry, subject: &Pushed) -> Pushed {
    let payload = Bytes::from(format!(
        "{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":\"{}\"}},\"type\":\"cosign container image signature\"}},\"optional\":{{\"n\":\"{}\"}}}}",
        subject.digest(),
        hex(&random_bytes(8))
    ));
    let config = Bytes::from_static(b"{}");
    push_blob(c, r, &subject.repo, &config).await;
    push_blob(c, r, &subject.repo, &payload).await;
    let mut layer = descriptor(SIMPLESIGNING, &payload);
    layer["annotations"] = json!({ SIG_ANNOTATION: "MEUCIQ..." });
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [layer],
    }))
    .unwrap();
    let tag = attachment_tag(&subject.digest(), "sig");
    put_manifest(c, r, &subject.repo, &tag, OCI_MANIFEST, &manifest).await;
    Pushed {
        repo: subject.repo.clone(),
        reference: tag,
        manifest,
        blobs: vec![config, payload],
    }
}

async fn push_index(
    c: &Client,
    r: &Registry,
    repo: &str,
    tag: &str,
    children: &[&Pushed],
) -> Pushed {
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|ch| {
            let mut d = descriptor(OCI_MANIFEST, &ch.manifest);
            d["platform"] = json!({ "architecture": "amd64", "os": "linux" });
            d
        }).collect::<Vec<_>>(),
    }))
    .unwrap();
    put_manifest(c, r, repo, tag, OCI_INDEX, &manifest).await;
    Pushed {
        repo: repo.into(),
        reference: tag.into(),
        manifest,
        blobs: vec![],
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Everything of `p` pulls back, byte for byte (by digest, and by its reference).
async fn assert_pullable(c: &Client, r: &Registry, p: &Pushed) {
    for reference in [p.digest(), p.reference.clone()] {
        let (status, body) = get(c, &r.v2(&format!("{}/manifests/{reference}", p.repo))).await;
        assert_eq!(status, StatusCode::OK, "manifest {}:{reference}", p.repo);
        assert_eq!(sha256(&body), p.digest());
    }
    for d in p.blob_digests() {
        let (status, body) = get(c, &r.v2(&format!("{}/blobs/{d}", p.repo))).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "blob {d} of {}:{}",
            p.repo,
            p.reference
        );
        assert_eq!(sha256(&body), d, "blob bytes of {d}");
    }
}

async fn manifest_status(c: &Client, r: &Registry, p: &Pushed) -> StatusCode {
    get(c, &r.v2(&format!("{}/manifests/{}", p.repo, p.digest())))
        .await
        .0
}

async fn blob_status(c: &Client, r: &Registry, repo: &str, d: &str) -> StatusCode {
    get(c, &r.v2(&format!("{repo}/blobs/{d}"))).await.0
}

fn blob_file_exists(r: &Registry, d: &str) -> bool {
    let hex = d.trim_start_matches("sha256:");
    stored_blob_files(r).contains_key(&format!("sha256/{}/{hex}", &hex[..2]))
}

const GRACE_0: &str = "[gc]\ngrace_secs = 0\ninterval_secs = 0\n";

#[tokio::test]
async fn gc_keeps_live_content_and_collects_deleted_signed_images() {
    let r = &Registry::start_with_config(GRACE_0);
    let c = client();
    let image = push(&c, r, "gc/app", "v1", vec![random_bytes(3000)]).await;
    let sig = sign(&c, r, &image).await;
    let child = push(&c, r, "gc/app", "child", vec![random_bytes(2000)]).await;
    // The child is only reachable through the index once its own tag is gone.
    let resp = c
        .delete(r.v2(&format!("gc/app/manifests/{}", child.reference)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let child = Pushed {
        reference: child.digest(),
        ..child
    };
    let index = push_index(&c, r, "gc/app", "multi", &[&child]).await;
    let untagged = push(&c, r, "gc/app", "tmp", vec![random_bytes(1000)]).await;
    let resp = c.delete(r.v2("gc/app/manifests/tmp")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let untagged = Pushed {
        reference: untagged.digest(),
        ..untagged
    };
    let stray = random_bytes(500);
    let stray_digest = push_blob(&c, r, "gc/app", &stray).await;
    age();

    // Default: untagged manifests are kept; only the stray blob goes.
    let report = must_gc(r, &[], &[]);
    assert_eq!(report["dry_run"], false);
    assert!(digests(&report, "manifests").is_empty(), "{report}");
    assert_eq!(digests(&report, "links"), vec![stray_digest.clone()]);
    assert_eq!(digests(&report, "blobs"), vec![stray_digest.clone()]);
    assert_eq!(report["bytes_freed"], 500);
    assert_eq!(
        blob_status(&c, r, "gc/app", &stray_digest).await,
        StatusCode::NOT_FOUND
    );
    assert!(!blob_file_exists(r, &stray_digest));
    for p in [&image, &sig, &child, &index, &untagged] {
        assert_pullable(&c, r, p).await;
    }

    // delete_untagged: the untagged image goes, its blobs with it; live ones stay.
    let untagged_env = [("SIGNET__GC__DELETE_UNTAGGED", "true")];
    let report = must_gc(r, &[], &untagged_env);
    assert_eq!(
        digests(&report, "manifests"),
        vec![untagged.digest()],
        "{report}"
    );
    let mut freed = digests(&report, "blobs");
    freed.sort();
    let mut expected = untagged.blob_digests();
    expected.sort();
    assert_eq!(freed, expected);
    assert_eq!(
        manifest_status(&c, r, &untagged).await,
        StatusCode::NOT_FOUND
    );
    for d in untagged.blob_digests() {
        assert!(!blob_file_exists(r, &d), "{d} still on disk");
    }
    for p in [&image, &sig, &child, &index] {
        assert_pullable(&c, r, p).await;
    }

    // Deleting the signed image deletes its signature; GC then removes all their blobs.
    let resp = c
        .delete(r.v2(&format!("gc/app/manifests/{}", image.digest())))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(manifest_status(&c, r, &sig).await, StatusCode::NOT_FOUND);
    age();
    let report = must_gc(r, &[], &[]);
    let mut freed = digests(&report, "blobs");
    freed.sort();
    let mut expected: Vec<String> = image
        .blob_digests()
        .into_iter()
        .chain(sig.blob_digests())
        .collect();
    expected.sort();
    assert_eq!(freed, expected, "{report}");
    for d in &expected {
        assert_eq!(blob_status(&c, r, "gc/app", d).await, StatusCode::NOT_FOUND);
        assert!(!blob_file_exists(r, d), "{d} still on disk");
    }
    for p in [&child, &index] {
        assert_pullable(&c, r, p).await;
    }
    let again = must_gc(r, &[], &untagged_env);
    assert!(digests(&again, "blobs").is_empty(), "{again}");
    assert!(digests(&again, "manifests").is_empty(), "{again}");
}

#[tokio::test]
async fn gc_keeps_attachments_of_live_subjects_and_drops_those_of_collected_ones() {
    let r = &Registry::start_with_config(
        "[gc]\ngrace_secs = 0\ninterval_secs = 0\ndelete_untagged = true\n",
    );
    let c = client();
    let image = push(&c, r, "gc/signed", "v1", vec![random_bytes(1500)]).await;
    let sig = sign(&c, r, &image).await;
    // An untagged platform image signed by tag too: its signature follows it out.
    let old = push(&c, r, "gc/signed", "old", vec![random_bytes(1500)]).await;
    let old_sig = sign(&c, r, &old).await;
    let resp = c
        .delete(r.v2("gc/signed/manifests/old"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    age();
    let report = must_gc(r, &[], &[]);
    let mut gone = digests(&report, "manifests");
    gone.sort();
    let mut expected = vec![old.digest(), old_sig.digest()];
    expected.sort();
    assert_eq!(gone, expected, "{report}");
    assert_pullable(&c, r, &image).await;
    assert_pullable(&c, r, &sig).await;
    for d in old.blob_digests().into_iter().chain(old_sig.blob_digests()) {
        // The signature's `{}` config is shared with the live signature.
        if sig.blob_digests().contains(&d) {
            continue;
        }
        assert_eq!(
            blob_status(&c, r, "gc/signed", &d).await,
            StatusCode::NOT_FOUND
        );
    }
    let (status, _) = get(
        &c,
        &r.v2(&format!("gc/signed/manifests/{}", old_sig.reference)),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the signature tag of a collected subject goes"
    );
}

#[tokio::test]
async fn gc_dry_run_removes_nothing_and_grace_protects_recent_pushes() {
    let r = &Registry::start_with_config(
        "[gc]\ngrace_secs = 3600\ninterval_secs = 0\ndelete_untagged = true\n",
    );
    let c = client();
    let stray_digest = push_blob(&c, r, "gc/dry", &random_bytes(700)).await;
    let image = push(&c, r, "gc/dry", "v1", vec![random_bytes(700)]).await;
    let resp = c.delete(r.v2("gc/dry/manifests/v1")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    age();
    // Within the grace period nothing is collected.
    let report = must_gc(r, &[], &[]);
    assert!(
        digests(&report, "blobs").is_empty() && digests(&report, "manifests").is_empty(),
        "{report}"
    );

    let grace_0 = [("SIGNET__GC__GRACE_SECS", "0")];
    let before = stored_blob_files(r);
    let dry = must_gc(r, &["--dry-run"], &grace_0);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(digests(&dry, "manifests"), vec![image.digest()]);
    assert_eq!(digests(&dry, "blobs").len(), 3, "{dry}");
    assert_eq!(stored_blob_files(r), before, "a dry run removes no bytes");
    assert_eq!(manifest_status(&c, r, &image).await, StatusCode::OK);
    assert_eq!(
        blob_status(&c, r, "gc/dry", &stray_digest).await,
        StatusCode::OK
    );

    let real = must_gc(r, &[], &grace_0);
    assert_eq!(real["manifests"], dry["manifests"]);
    assert_eq!(real["links"], dry["links"]);
    assert_eq!(real["blobs"], dry["blobs"]);
    assert_eq!(real["bytes_freed"], dry["bytes_freed"]);
    assert_eq!(
        blob_status(&c, r, "gc/dry", &stray_digest).await,
        StatusCode::NOT_FOUND
    );
    assert!(stored_blob_files(r).is_empty());

    // The text report names counts and digests.
    let out = r.cli(&["gc", "--dry-run"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dry run") && text.contains("blobs would remove: 0"),
        "{text}"
    );
}

/// Pushers push images in a loop (re-pushing the same few layers, deleting some of
/// their images) while `signet gc` runs again and again with no grace period, and the
/// server's own scheduled collection runs too. A push may be refused (a blob collected
/// between its upload and the manifest PUT: MANIFEST_BLOB_UNKNOWN; a blob being deleted:
/// 429), and is then retried; no accepted image ever loses a blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_racing_pushes_never_loses_a_pushed_blob() {
    let s = Arc::new(Registry::start_with_config(
        "[gc]\ngrace_secs = 0\ninterval_secs = 1\ndelete_untagged = true\n",
    ));
    let shared: Arc<Vec<Bytes>> = Arc::new((0..4).map(|_| random_bytes(4096)).collect());
    let stop = Arc::new(AtomicBool::new(false));

    let collector = {
        let s = s.clone();
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let (mut runs, mut freed, mut busy) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                match gc(&s, &[], &[]) {
                    Ok(report) => {
                        runs += 1;
                        freed += report["blobs"].as_array().unwrap().len();
                    }
                    Err(e) if e.contains("another garbage collection is running") => busy += 1,
                    Err(e) => panic!("signet gc failed: {e}"),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (runs, freed, busy)
        })
    };

    let mut pushers = Vec::new();
    for p in 0..3 {
        let s = s.clone();
        let shared = shared.clone();
        pushers.push(tokio::spawn(async move {
            let r = &*s;
            let c = client();
            let repo = format!("gc/race{p}");
            let mut kept = Vec::new();
            let mut refused = 0;
            for i in 0..25 {
                let layers = vec![shared[i % shared.len()].clone(), random_bytes(256)];
                let tag = format!("t{i}");
                let pushed = match try_push(&c, r, &repo, &tag, layers.clone()).await {
                    Some(pushed) => pushed,
                    None => {
                        refused += 1;
                        // Retry once the collector has moved on.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        match try_push(&c, r, &repo, &tag, layers).await {
                            Some(pushed) => pushed,
                            None => {
                                refused += 1;
                                continue;
                            }
                        }
                    }
                };
                if i % 3 == 0 {
                    // Delete it again: its blobs become garbage while others re-push them.
                    let resp = c
                        .delete(r.v2(&format!("{repo}/manifests/{}", pushed.digest())))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::ACCEPTED);
                } else {
                    kept.push(pushed);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            (kept, refused)
        }));
    }
    let mut kept = Vec::new();
    let mut refused = 0;
    for p in pushers {
        let (k, n) = p.await.unwrap();
        kept.extend(k);
        refused += n;
    }
    stop.store(true, Ordering::Relaxed);
    let (runs, freed, busy) = collector.await.unwrap();
    eprintln!("gc runs {runs} (busy {busy}), blobs freed {freed}, pushes refused {refused}, images kept {}", kept.len());
    // `busy`: the server's own collection (every second) held the lease, so a
    // collection ran then too; under a loaded machine the CLI gets fewer turns.
    assert!(
        runs >= 1 && runs + busy >= 3,
        "signet gc ran {runs} times, found the server collecting {busy} times"
    );
    assert!(freed > 0, "collections removed blobs while pushes ran");
    assert!(kept.len() >= 20, "most pushes succeed: {}", kept.len());

    // One more collection, then every accepted image pulls back whole.
    age();
    loop {
        match gc(&s, &[], &[]) {
            Ok(_) => break,
            Err(e) if e.contains("another garbage collection is running") => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("signet gc failed: {e}"),
        }
    }
    let c = client();
    for p in &kept {
        assert_pullable(&c, &s, p).await;
    }
    let stderr = s.stderr();
    assert!(
        !stderr.contains("internal error"),
        "server errors:\n{stderr}"
    );
}

/// Pushes an image; `None` when the registry refused it because GC collected a blob
/// between its upload and the manifest PUT, or was deleting one (429).
async fn try_push(
    c: &Client,
    r: &Registry,
    repo: &str,
    tag: &str,
    layers: Vec<Bytes>,
) -> Option<Pushed> {
    let config = Bytes::from(format!(
        "{{\"os\":\"linux\",\"n\":\"{}\"}}",
        hex(&random_bytes(8))
    ));
    let mut blobs = vec![config];
    blobs.extend(layers);
    for b in &blobs {
        let resp = c
            .post(r.v2(&format!("{repo}/blobs/uploads/?digest={}", sha256(b))))
            .header("Content-Type", "application/octet-stream")
            .body(b.clone())
            .send()
            .await
            .unwrap();
        match resp.status() {
            StatusCode::CREATED => {}
            StatusCode::TOO_MANY_REQUESTS => return None,
            other => panic!(
                "blob upload answered {other}: {}",
                resp.text().await.unwrap()
            ),
        }
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &blobs[0]),
        "layers": blobs[1..].iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let resp = send_manifest(c, r, repo, tag, OCI_MANIFEST, &manifest).await;
    match resp.status() {
        StatusCode::CREATED => Some(Pushed {
            repo: repo.into(),
            reference: tag.into(),
            manifest,
            blobs,
        }),
        StatusCode::BAD_REQUEST => {
            let body = resp.text().await.unwrap();
            assert!(
                body.contains("MANIFEST_BLOB_UNKNOWN"),
                "manifest refused: {body}"
            );
            None
        }
        other => panic!(
            "manifest PUT answered {other}: {}",
            resp.text().await.unwrap()
        ),
    }
}
