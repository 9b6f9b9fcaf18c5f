//! Storage faults: the blob store runs out of space, or its object store (S3, behind a
//! fault-injecting proxy) fails requests. Each time the client gets a 5xx OCI error, the server stays up, what was
//! acknowledged before stays readable byte for byte, and `signet fsck` finds nothing
//! inconsistent (at most staging that `--repair` removes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use reqwest::{Client, StatusCode};
use serde_json::Value;
use signet_api_tests::oci::{
    descriptor, image_manifest, send_manifest, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, sha256, Registry};
use signet_storage::testing::TestS3;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A size-limited tmpfs mounted on a temporary folder, unmounted when dropped.
struct SmallFilesystem {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFilesystem {
    /// `None` when this process may not mount (not root, or no `CAP_SYS_ADMIN`).
    fn mount(size: &str) -> Option<SmallFilesystem> {
        let dir = tempfile::tempdir().expect("mount point");
        let path = dir.path().join("blobs");
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status
            .success()
            .then_some(SmallFilesystem { path, _dir: dir })
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        // Lazy: a server killed a moment ago may still hold a file open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `signet fsck --json [args]` with staging treated as old at once: (success, report).
fn fsck(r: &Registry, args: &[&str]) -> (bool, Value) {
    let mut cmd = r.cli(&[&["fsck", "--json"], args].concat());
    let out = cmd
        .env("SIGNET__UPLOADS__EXPIRE_AFTER_SECS", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run signet fsck");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// The kinds of problems in an fsck report.
fn problem_kinds(report: &Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list in {report}"))
        .iter()
        .map(|p| p["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// fsck is clean, or finds only staging left by failed uploads, which `--repair`
/// removes; then it is clean.
fn assert_consistent(r: &Registry) {
    let (ok, report) = fsck(r, &[]);
    if ok {
        return;
    }
    let kinds = problem_kinds(&report);
    assert!(
        kinds.iter().all(|k| k.starts_with("staging")),
        "fsck found more than leftover staging: {report:#}"
    );
    let (ok, report) = fsck(r, &["--repair"]);
    assert!(ok, "fsck --repair did not make the store clean: {report:#}");
    let (ok, report) = fsck(r, &[]);
    assert!(ok, "fsck after repair: {report:#}");
}

/// A 5xx with an OCI error body.
fn assert_server_error(status: StatusCode, body: &[u8], what: &str) {
    assert!(
        status.is_server_error(),
        "{what}: expected a 5xx, got {status}: {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "{what}: {status} without an OCI error body: {}",
            String::from_utf8_lossy(body)
        )
    });
    let code = v["errors"][0]["code"].as_str().unwrap_or_default();
    assert!(!code.is_empty(), "{what}: error without a code: {v}");
}

/// A push refused for want of space: 507 with an OCI error that says so.
fn assert_storage_full(status: StatusCode, body: &[u8], what: &str) {
    assert_server_error(status, body, what);
    assert_eq!(
        status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{what}: {}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body).unwrap();
    let message = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("storage is full"), "{what}: {v}");
}

async fn post_blob(c: &Client, r: &Registry, repo: &str, bytes: &Bytes) -> (StatusCode, Bytes) {
    let digest = sha256(bytes);
    let resp = c
        .post(r.v2(&format!("{repo}/blobs/uploads/?digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.bytes().await.unwrap())
}

/// A chunked upload: POST, one PATCH with the whole body, PUT. The first failing
/// step's status and body, or the PUT's.
async fn chunked_blob(c: &Client, r: &Registry, repo: &str, bytes: &Bytes) -> (StatusCode, Bytes) {
    let resp = c
        .post(r.v2(&format!("{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    if resp.status() != StatusCode::ACCEPTED {
        let status = resp.status();
        return (status, resp.bytes().await.unwrap());
    }
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let location = signet_api_tests::oci::absolute(r, &location);
    let resp = c
        .patch(&location)
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    if resp.status() != StatusCode::ACCEPTED {
        let status = resp.status();
        return (status, resp.bytes().await.unwrap());
    }
    let location = signet_api_tests::oci::absolute(r, resp.headers()["location"].to_str().unwrap());
    let resp = c
        .put(signet_api_tests::oci::with_query(
            &location,
            &format!("digest={}", sha256(bytes)),
        ))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.bytes().await.unwrap())
}

async fn assert_blob(c: &Client, r: &Registry, repo: &str, bytes: &[u8]) {
    let digest = sha256(bytes);
    let resp = c
        .get(r.v2(&format!("{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{repo}@{digest}");
    let got = resp.bytes().await.unwrap();
    assert!(got == bytes, "{repo}@{digest} served other bytes");
}

async fn assert_manifest(c: &Client, r: &Registry, repo: &str, tag: &str, manifest: &[u8]) {
    let resp = c
        .get(r.v2(&format!("{repo}/manifests/{tag}")))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{repo}:{tag}");
    assert_eq!(resp.bytes().await.unwrap(), manifest, "{repo}:{tag} bytes");
}

async fn assert_alive(c: &Client, r: &Registry) {
    let resp = c.get(r.v2("")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the server still answers");
}

fn blob_dir_config(path: &Path, extra: &str) -> String {
    format!(
        "[storage]\nblob_dir = \"{}\"\n[gc]\ninterval_secs = 0\ngrace_secs = 0\n{extra}",
        path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_blob_store_answers_507_and_loses_nothing() {
    let Some(fs) = SmallFilesystem::mount("16m") else {
        eprintln!("skipped: mounting a tmpfs is not permitted here");
        return;
    };
    let r = Registry::start_with_config(&blob_dir_config(&fs.path, ""));
    let c = client();
    let repo = "full/app";

    // An image pushed while there is room.
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = random_bytes(1_000_000);
    let (s, b) = post_blob(&c, &r, repo, &Bytes::from(config.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{b:?}");
    let (s, b) = post_blob(&c, &r, repo, &layer).await;
    assert_eq!(s, StatusCode::CREATED, "{b:?}");
    let manifest = image_manifest(&config, &[&layer], serde_json::json!({}));
    let resp = c
        .put(r.v2(&format!("{repo}/manifests/v1")))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Fill it, alternating monolithic and chunked uploads, until a push fails.
    let mut acknowledged: Vec<Bytes> = Vec::new();
    let mut failures = Vec::new();
    for i in 0..40 {
        let bytes = random_bytes(1_500_000);
        let (status, body) = if i % 2 == 0 {
            post_blob(&c, &r, "full/filler", &bytes).await
        } else {
            chunked_blob(&c, &r, "full/filler", &bytes).await
        };
        if status == StatusCode::CREATED {
            acknowledged.push(bytes);
            continue;
        }
        assert_storage_full(status, &body, "a push into a full blob store");
        failures.push(status);
        if failures.len() == 4 {
            break;
        }
    }
    assert_eq!(failures.len(), 4, "16 MiB never filled up");
    assert!(
        acknowledged.len() >= 5,
        "only {} blobs fitted",
        acknowledged.len()
    );
    eprintln!(
        "{} blobs acknowledged, then {failures:?}",
        acknowledged.len()
    );

    // Still up; everything acknowledged reads back exactly.
    assert_alive(&c, &r).await;
    assert_manifest(&c, &r, repo, "v1", &manifest).await;
    assert_blob(&c, &r, repo, &layer).await;
    for bytes in &acknowledged {
        assert_blob(&c, &r, "full/filler", bytes).await;
    }
    // A blob that failed is not served.
    let failed = random_bytes(1_500_000);
    let (status, body) = post_blob(&c, &r, "full/filler", &failed).await;
    assert_storage_full(status, &body, "again, while full");
    let resp = c
        .head(r.v2(&format!("full/filler/blobs/{}", sha256(&failed))))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "a failed push is absent"
    );
    assert_consistent(&r);

    // Free space: the filler blobs belong to no manifest, and GC (grace 0) takes them
    // once they are older than the current second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let out = r
        .cli(&["gc", "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("signet gc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["blobs"].as_array().unwrap().len() >= acknowledged.len(),
        "gc freed too little: {report}"
    );

    // Pushes work again, and the first image is intact.
    let layer2 = random_bytes(2_000_000);
    let (s, b) = chunked_blob(&c, &r, repo, &layer2).await;
    assert_eq!(s, StatusCode::CREATED, "{b:?}");
    let manifest2 = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer), descriptor(OCI_LAYER, &layer2)],
    }))
    .unwrap();
    let resp = c
        .put(r.v2(&format!("{repo}/manifests/v2")))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest2.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_manifest(&c, &r, repo, "v1", &manifest).await;
    assert_manifest(&c, &r, repo, "v2", &manifest2).await;
    assert_blob(&c, &r, repo, &layer2).await;
    assert_consistent(&r);
}

/// A fault-injecting TCP proxy for the S3 API: each request runs on a fresh upstream
/// connection (the request bytes forwarded untouched, so SigV4 signatures still hold),
/// and every `fail_every`-th request is answered with a 500 S3 error or, every other
/// time, by dropping the connection without an answer.
struct S3Faults {
    endpoint: String,
    fail_every: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    injected: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Faults {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl S3Faults {
    async fn start(upstream: &str) -> S3Faults {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let fail_every = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let injected = Arc::new(AtomicU64::new(0));
        let (f, r, i) = (fail_every.clone(), requests.clone(), injected.clone());
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (f, r, i, up) = (f.clone(), r.clone(), i.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = relay(conn, &up, &f, &r, &i).await;
                });
            }
        });
        S3Faults {
            endpoint,
            fail_every,
            requests,
            injected,
            task,
        }
    }
}

/// Reads one request (head and `Content-Length` body) from `conn`: its bytes, or
/// `None` at the end of the connection.
async fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(
        !head.contains("transfer-encoding: chunked"),
        "the proxy expects request bodies with a Content-Length"
    );
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(buf))
}

async fn relay(
    mut conn: TcpStream,
    upstream: &str,
    fail_every: &AtomicU64,
    requests: &AtomicU64,
    injected: &AtomicU64,
) -> std::io::Result<()> {
    // One request per client connection: the answer says `Connection: close`.
    let Some(request) = read_request(&mut conn).await? else {
        return Ok(());
    };
    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
    let every = fail_every.load(Ordering::SeqCst);
    if every > 0 && n % every == 0 {
        let k = injected.fetch_add(1, Ordering::SeqCst);
        if k % 2 == 0 {
            let body =
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
                        <Message>injected</Message></Error>";
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).await?;
        }
        // Otherwise: the connection closes with no answer at all.
        return Ok(());
    }
    let mut up = TcpStream::connect(upstream).await?;
    // The upstream closes after answering, so its answer ends at EOF.
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    up.write_all(&request[..head_end]).await?;
    up.write_all(b"Connection: close\r\n").await?;
    up.write_all(&request[head_end..]).await?;
    tokio::io::copy(&mut up, &mut conn).await?;
    conn.shutdown().await
}

/// Pushes `blobs` (monolithic and chunked in turn) and a manifest over them tagged
/// `tag`: what was acknowledged. Every refusal must be a 5xx with an OCI error body.
async fn push_through_faults(
    c: &Client,
    r: &Registry,
    repo: &str,
    tag: &str,
    config: &[u8],
    layers: &[Bytes],
) -> (Vec<Bytes>, Option<Vec<u8>>) {
    let mut acked = Vec::new();
    let mut all_acked = true;
    for (i, blob) in std::iter::once(Bytes::copy_from_slice(config))
        .chain(layers.iter().cloned())
        .enumerate()
    {
        let (status, body) = if i % 2 == 0 {
            post_blob(c, r, repo, &blob).await
        } else {
            chunked_blob(c, r, repo, &blob).await
        };
        if status == StatusCode::CREATED {
            acked.push(blob);
        } else {
            assert_server_error(status, &body, "a blob push while S3 fails");
            all_acked = false;
        }
    }
    if !all_acked {
        return (acked, None);
    }
    let refs: Vec<&[u8]> = layers.iter().map(|l| &l[..]).collect();
    let manifest = image_manifest(config, &refs, serde_json::json!({}));
    let resp = send_manifest(c, r, repo, tag, OCI_MANIFEST, &manifest).await;
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    if status == StatusCode::CREATED {
        (acked, Some(manifest))
    } else {
        assert_server_error(status, &body, "a manifest push while S3 fails");
        (acked, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_object_store_gives_5xx_and_leaves_nothing_half_written() {
    let s3 = TestS3::seaweedfs().await;
    let faults = S3Faults::start(&s3.config.endpoint).await;
    let toml = s3.toml().replace(&s3.config.endpoint, &faults.endpoint);
    let r = Registry::start_with_config(&toml);
    let c = client();
    let repo = "s3faults/app";

    // Every k-th S3 request fails (a 500, or a dropped connection), for several k:
    // the failures land on uploads, staging, commits, reads and deletes.
    let mut images = Vec::new();
    let mut blobs_acked = Vec::new();
    let mut refused = 0;
    for (round, every) in [2u64, 3, 4, 5, 7, 11].into_iter().enumerate() {
        faults.fail_every.store(every, Ordering::SeqCst);
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"round\":{round}}}");
        let layers = [random_bytes(200_000), random_bytes(30_000)];
        let tag = format!("r{round}");
        let (acked, manifest) =
            push_through_faults(&c, &r, repo, &tag, config.as_bytes(), &layers).await;
        refused += 3 - acked.len() + usize::from(manifest.is_none());
        // Reads under faults: whole or an error, never other bytes.
        for blob in &acked {
            let resp = c
                .get(r.v2(&format!("{repo}/blobs/{}", sha256(blob))))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            if status == StatusCode::OK {
                if let Ok(bytes) = resp.bytes().await {
                    assert!(bytes == *blob, "a read under faults served other bytes");
                }
            } else {
                let body = resp.bytes().await.unwrap();
                assert_server_error(status, &body, "a blob read while S3 fails");
            }
        }
        blobs_acked.extend(acked);
        if let Some(m) = manifest {
            images.push((tag, m));
        }
        assert_alive(&c, &r).await;
    }
    faults.fail_every.store(0, Ordering::SeqCst);
    let injected = faults.injected.load(Ordering::SeqCst);
    eprintln!(
        "S3 requests {}, faults injected {injected}, pushes refused {refused}, images acknowledged {}",
        faults.requests.load(Ordering::SeqCst),
        images.len()
    );
    assert!(injected >= 10, "only {injected} faults injected");

    // Faults over: everything acknowledged reads back exactly; fsck finds nothing
    // but staging that --repair removes.
    for blob in &blobs_acked {
        assert_blob(&c, &r, repo, blob).await;
    }
    for (tag, manifest) in &images {
        assert_manifest(&c, &r, repo, tag, manifest).await;
    }
    assert_consistent(&r);
    // And the store works normally again.
    let layer = random_bytes(100_000);
    let (s, b) = chunked_blob(&c, &r, repo, &layer).await;
    assert_eq!(s, StatusCode::CREATED, "{b:?}");
    assert_blob(&c, &r, repo, &layer).await;
}
