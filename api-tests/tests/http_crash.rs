//! Crash safety: the server is killed with SIGKILL in the middle of uploads and manifest
//! pushes, restarted on the same data, and must then hold either the whole of what was
//! acknowledged or nothing of what was not: an upload session resumes at its committed
//! range (a half-received chunk does not count), a manifest is there entirely (bytes and
//! tag) or not at all, and every stored blob hashes to its address.

use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use reqwest::{Body, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha256, Sha512};
use signet_api_tests::oci::{
    expect_error, header, image_manifest, push_blob, put_manifest, staged_upload_files,
    stored_blob_files, with_query, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, sha256, Registry};

type Sender = futures::channel::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A request body the test feeds piece by piece, sent with `Transfer-Encoding: chunked`.
fn slow_body() -> (Sender, Body) {
    let (tx, rx) = futures::channel::mpsc::channel(1);
    (tx, Body::wrap_stream(rx))
}

/// Time for bytes already written to the socket to reach the server's handler.
const SETTLE: Duration = Duration::from_millis(400);

/// Checks every file of the content-addressed store against the digest its path names,
/// and GETs every `(repo, digest)` given, hashing what is served.
async fn verify_all_blobs(c: &reqwest::Client, r: &Registry, served: &[(String, String)]) {
    for (rel, _) in stored_blob_files(r) {
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 3, "unexpected file {rel} in the blob store");
        let (alg, hex_name) = (parts[0], parts[2]);
        assert_eq!(&hex_name[..2], parts[1], "{rel}");
        let bytes = std::fs::read(r.data_dir.join("blobs").join("blobs").join(&rel)).unwrap();
        let actual = match alg {
            "sha256" => hex::encode(Sha256::digest(&bytes)),
            "sha512" => hex::encode(Sha512::digest(&bytes)),
            other => panic!("unknown algorithm folder {other}"),
        };
        assert_eq!(
            actual, hex_name,
            "stored blob {rel} does not hash to its address"
        );
    }
    for (repo, digest) in served {
        let resp = c
            .get(r.v2(&format!("{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::NOT_FOUND {
            continue;
        }
        assert_eq!(resp.status(), StatusCode::OK, "{repo}@{digest}");
        let bytes = resp.bytes().await.unwrap();
        let (alg, _) = digest.split_once(':').unwrap();
        let actual = match alg {
            "sha256" => format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            _ => format!("sha512:{}", hex::encode(Sha512::digest(&bytes))),
        };
        assert_eq!(&actual, digest, "{repo}@{digest} served other bytes");
    }
}

/// Opens a session; returns its path (`/v2/...`), stable across restarts.
async fn open_session(c: &reqwest::Client, r: &Registry, repo: &str) -> String {
    let resp = c
        .post(r.v2(&format!("{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = header(resp.headers(), "location").to_string();
    location
        .strip_prefix(&r.url)
        .map(str::to_string)
        .unwrap_or(location)
}

async fn patch_at(c: &reqwest::Client, r: &Registry, path: &str, bytes: &[u8], start: usize) {
    let resp = c
        .patch(format!("{}{path}", r.url))
        .header(
            "Content-Range",
            format!("{}-{}", start, start + bytes.len() - 1),
        )
        .header("Content-Length", bytes.len().to_string())
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "PATCH at {start}");
    assert_eq!(
        header(resp.headers(), "range"),
        format!("0-{}", start + bytes.len() - 1)
    );
}

/// The committed size a session reports (its `Range` end + 1; an empty session says
/// `0-0`, which we read as 0 only when nothing was sent).
async fn session_range(c: &reqwest::Client, r: &Registry, path: &str) -> String {
    let resp = c.get(format!("{}{path}", r.url)).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NO_CONTENT,
        "the session survives the restart"
    );
    header(resp.headers(), "range").to_string()
}

/// Files still staged for the session at `path`.
fn staged_for(r: &Registry, path: &str) -> Vec<String> {
    let id = path.rsplit('/').next().unwrap();
    staged_upload_files(r)
        .into_keys()
        .filter(|k| k.starts_with(&format!("{id}/")))
        .collect()
}

async fn finish(c: &reqwest::Client, r: &Registry, path: &str, digest: &str) {
    let resp = c
        .put(with_query(
            &format!("{}{path}", r.url),
            &format!("digest={digest}"),
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "final PUT: {body:?}");
}

#[tokio::test]
async fn crash_between_patches_then_resume() {
    let mut r = Registry::start();
    let c = client();
    let repo = "crash/between";
    let bytes = random_bytes(400_000);
    let digest = sha256(&bytes);
    let path = open_session(&c, &r, repo).await;
    for i in 0..3 {
        patch_at(
            &c,
            &r,
            &path,
            &bytes[i * 100_000..(i + 1) * 100_000],
            i * 100_000,
        )
        .await;
    }
    r.crash_and_restart();

    assert_eq!(session_range(&c, &r, &path).await, "0-299999");
    // A chunk that does not continue from the committed range is still refused.
    let resp = c
        .patch(format!("{}{path}", r.url))
        .header("Content-Range", "0-99")
        .body(bytes[..100].to_vec())
        .send()
        .await
        .unwrap();
    let h = expect_error(
        resp,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UPLOAD_INVALID",
    )
    .await;
    assert_eq!(header(&h, "range"), "0-299999");

    patch_at(&c, &r, &path, &bytes[300_000..], 300_000).await;
    finish(&c, &r, &path, &digest).await;
    let resp = c
        .get(r.v2(&format!("{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), bytes);
    verify_all_blobs(&c, &r, &[(repo.to_string(), digest)]).await;
}

/// Kills the server while a PATCH body is still arriving (chunked, or with a declared
/// length), restarts, and continues the upload from what the session reports.
#[tokio::test]
async fn crash_mid_patch_body_is_not_counted() {
    let mut r = Registry::start();
    let c = client();
    for declared_length in [false, true] {
        let repo = format!("crash/mid{}", u8::from(declared_length));
        let bytes = random_bytes(300_000);
        let digest = sha256(&bytes);
        let path = open_session(&c, &r, &repo).await;
        patch_at(&c, &r, &path, &bytes[..100_000], 0).await;

        // The second chunk: half of it is sent, then the server dies.
        let (mut tx, body) = slow_body();
        let mut req = c.patch(format!("{}{path}", r.url)).body(body);
        if declared_length {
            req = req
                .header("Content-Range", "100000-199999")
                .header("Content-Length", "100000");
        }
        let pending = tokio::spawn(req.send());
        for piece in bytes[100_000..150_000].chunks(10_000) {
            tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
        }
        tokio::time::sleep(SETTLE).await;
        r.crash_and_restart();
        drop(tx);
        let outcome = tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("the interrupted request ends")
            .unwrap();
        assert!(
            outcome.is_err() || !outcome.unwrap().status().is_success(),
            "an interrupted PATCH cannot have succeeded"
        );

        // The half chunk is not counted: the session stands where the last
        // acknowledged PATCH left it.
        assert_eq!(session_range(&c, &r, &path).await, "0-99999");
        patch_at(&c, &r, &path, &bytes[100_000..], 100_000).await;
        finish(&c, &r, &path, &digest).await;
        let resp = c
            .get(r.v2(&format!("{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap(), bytes);
        verify_all_blobs(&c, &r, &[(repo.clone(), digest)]).await;
        // The interrupted chunk's leftovers went with the session.
        assert_eq!(
            staged_for(&r, &path),
            Vec::<String>::new(),
            "staged leftovers"
        );
    }
}

/// Kills the server while the final PUT's body is arriving: nothing is stored, the
/// session resumes.
#[tokio::test]
async fn crash_mid_final_put_stores_nothing() {
    let mut r = Registry::start();
    let c = client();
    let repo = "crash/final";
    let bytes = random_bytes(200_000);
    let digest = sha256(&bytes);
    let path = open_session(&c, &r, repo).await;
    patch_at(&c, &r, &path, &bytes[..50_000], 0).await;
    let files = stored_blob_files(&r);

    let (mut tx, body) = slow_body();
    let pending = tokio::spawn(
        c.put(with_query(
            &format!("{}{path}", r.url),
            &format!("digest={digest}"),
        ))
        .body(body)
        .send(),
    );
    tx.send(Ok(Bytes::copy_from_slice(&bytes[50_000..120_000])))
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    r.crash_and_restart();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), pending).await;

    let resp = c
        .get(r.v2(&format!("{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "an unfinished blob is not served"
    );
    assert_eq!(
        stored_blob_files(&r),
        files,
        "nothing reached the blob store"
    );
    assert_eq!(session_range(&c, &r, &path).await, "0-49999");
    let resp = c
        .put(with_query(
            &format!("{}{path}", r.url),
            &format!("digest={digest}"),
        ))
        .header("Content-Range", "50000-199999")
        .body(bytes[50_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = c
        .get(r.v2(&format!("{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap(), bytes);
    verify_all_blobs(&c, &r, &[(repo.to_string(), digest)]).await;
}

/// Kills the server during a monolithic upload: the blob is absent afterwards, and a
/// blob acknowledged with 201 just before the kill is present and intact.
#[tokio::test]
async fn crash_mid_monolithic_upload() {
    let mut r = Registry::start();
    let c = client();
    let done = random_bytes(100_000);
    let done_digest = push_blob(&c, &r, "crash/mono", &done).await;
    let bytes = random_bytes(300_000);
    let digest = sha256(&bytes);
    let (mut tx, body) = slow_body();
    let pending = tokio::spawn(
        c.post(r.v2(&format!("crash/mono/blobs/uploads/?digest={digest}")))
            .body(body)
            .send(),
    );
    tx.send(Ok(Bytes::copy_from_slice(&bytes[..150_000])))
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    r.crash_and_restart();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), pending).await;

    let resp = c
        .get(r.v2(&format!("crash/mono/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let resp = c
        .get(r.v2(&format!("crash/mono/blobs/{done_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), done);
    verify_all_blobs(
        &c,
        &r,
        &[
            ("crash/mono".to_string(), digest.clone()),
            ("crash/mono".to_string(), done_digest),
        ],
    )
    .await;
    // The upload can simply be retried.
    push_blob(&c, &r, "crash/mono", &bytes).await;
}

/// After a restart, a manifest is entirely there (exact bytes by digest, tag pointing at
/// it) or entirely absent.
async fn assert_all_or_nothing(
    c: &reqwest::Client,
    r: &Registry,
    repo: &str,
    tag: &str,
    manifest: &[u8],
) -> bool {
    let digest = sha256(manifest);
    let resp = c
        .get(r.v2(&format!("{repo}/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    let by_digest = resp.status();
    let body = resp.bytes().await.unwrap();
    let resp = c
        .get(r.v2(&format!("{repo}/manifests/{tag}")))
        .send()
        .await
        .unwrap();
    let by_tag = resp.status();
    let tag_body = resp.bytes().await.unwrap();
    match by_digest {
        StatusCode::OK => {
            assert_eq!(body, manifest, "{repo}@{digest}: exact bytes");
            assert_eq!(
                by_tag,
                StatusCode::OK,
                "{repo}:{tag} present with its manifest"
            );
            assert_eq!(tag_body, manifest, "{repo}:{tag} points at the manifest");
            true
        }
        StatusCode::NOT_FOUND => {
            assert_eq!(
                by_tag,
                StatusCode::NOT_FOUND,
                "{repo}:{tag} exists without its manifest"
            );
            false
        }
        other => panic!("{repo}@{digest}: unexpected {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_around_manifest_put() {
    let mut r = Registry::start();
    let c = client();
    let repo = "crash/manifest";
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = random_bytes(1000);
    let config_digest = push_blob(&c, &r, repo, config).await;
    let layer_digest = push_blob(&c, &r, repo, &layer).await;
    let manifest_for = |i: usize| {
        image_manifest(
            config,
            &[&layer],
            json!({"annotations": {"attempt": i.to_string()}}),
        )
    };

    // Acknowledged, then killed: it must be there.
    let acked = manifest_for(0);
    put_manifest(&c, &r, repo, "acked", OCI_MANIFEST, &acked).await;
    r.crash_and_restart();
    assert!(
        assert_all_or_nothing(&c, &r, repo, "acked", &acked).await,
        "an acknowledged manifest survives the crash"
    );

    // Killed while the body is still arriving: it must be absent.
    let partial = manifest_for(1);
    let (mut tx, body) = slow_body();
    let pending = tokio::spawn(
        c.put(r.v2(&format!("{repo}/manifests/partial")))
            .header("Content-Type", OCI_MANIFEST)
            .body(body)
            .send(),
    );
    tx.send(Ok(Bytes::copy_from_slice(&partial[..partial.len() / 2])))
        .await
        .unwrap();
    tokio::time::sleep(SETTLE).await;
    r.crash_and_restart();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), pending).await;
    assert!(
        !assert_all_or_nothing(&c, &r, repo, "partial", &partial).await,
        "a manifest whose body never arrived is absent"
    );

    // Killed at various moments after the whole body was sent: all or nothing, and
    // present whenever the 201 was seen. The kill runs on this thread while the request
    // proceeds on another worker.
    let mut outcomes = Vec::new();
    for (i, delay_us) in [0u64, 50, 200, 500, 1000, 2000, 5000, 20_000]
        .into_iter()
        .enumerate()
    {
        let manifest = manifest_for(i + 10);
        let tag = format!("race{i}");
        let (mut tx, body) = slow_body();
        let pending = tokio::spawn(
            c.put(r.v2(&format!("{repo}/manifests/{tag}")))
                .header("Content-Type", OCI_MANIFEST)
                .body(body)
                .send(),
        );
        tx.send(Ok(Bytes::copy_from_slice(&manifest)))
            .await
            .unwrap();
        tokio::time::sleep(SETTLE).await;
        // The end of the body goes out now; the server finishes the PUT while we wait.
        drop(tx);
        std::thread::sleep(Duration::from_micros(delay_us));
        r.crash_and_restart();
        let acknowledged = match tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("the request ends")
            .unwrap()
        {
            Ok(resp) => resp.status() == StatusCode::CREATED,
            Err(_) => false,
        };
        let present = assert_all_or_nothing(&c, &r, repo, &tag, &manifest).await;
        if acknowledged {
            assert!(present, "{tag}: acknowledged with 201, then lost");
        }
        outcomes.push((delay_us, acknowledged, present));
    }
    eprintln!("(delay µs, acknowledged, present): {outcomes:?}");
    // Earlier content is intact.
    assert!(assert_all_or_nothing(&c, &r, repo, "acked", &acked).await);
    verify_all_blobs(
        &c,
        &r,
        &[
            (repo.to_string(), config_digest),
            (repo.to_string(), layer_digest),
        ],
    )
    .await;
}

/// Many short-lived sessions and blobs, killed at random points, and the store stays
/// consistent: no blob file with the wrong bytes, no session that lies about its range.
#[tokio::test]
async fn repeated_crashes_keep_the_store_consistent() {
    let mut r = Registry::start();
    let c = client();
    let repo = "crash/many";
    let mut pushed: Vec<(String, String)> = Vec::new();
    for round in 0..4u64 {
        // A few uploads in flight when the server dies.
        let mut sessions = Vec::new();
        let mut pending = Vec::new();
        let mut senders = Vec::new();
        for k in 0..3 {
            let bytes = random_bytes(60_000 + k * 1000);
            let path = open_session(&c, &r, repo).await;
            patch_at(&c, &r, &path, &bytes[..20_000], 0).await;
            let (mut tx, body) = slow_body();
            pending.push(tokio::spawn(
                c.patch(format!("{}{path}", r.url)).body(body).send(),
            ));
            tx.send(Ok(Bytes::copy_from_slice(&bytes[20_000..35_000])))
                .await
                .unwrap();
            senders.push(tx);
            sessions.push((path, bytes));
        }
        // And a complete one, raced against the kill.
        let raced = random_bytes(50_000);
        let raced_digest = sha256(&raced);
        pending.push(tokio::spawn(
            c.post(r.v2(&format!("{repo}/blobs/uploads/?digest={raced_digest}")))
                .body(raced.clone())
                .send(),
        ));
        pushed.push((repo.to_string(), raced_digest));
        tokio::time::sleep(Duration::from_millis(100 + round * 50)).await;
        r.crash_and_restart();
        drop(senders);
        for p in pending {
            let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
        }
        for (path, bytes) in sessions {
            assert_eq!(
                session_range(&c, &r, &path).await,
                "0-19999",
                "round {round}"
            );
            patch_at(&c, &r, &path, &bytes[20_000..], 20_000).await;
            let digest = sha256(&bytes);
            finish(&c, &r, &path, &digest).await;
            assert_eq!(
                staged_for(&r, &path),
                Vec::<String>::new(),
                "staged leftovers"
            );
            pushed.push((repo.to_string(), digest));
        }
        verify_all_blobs(&c, &r, &pushed).await;
    }
}
