//! Pull-through (`[[sync.pull_through]]`): a pull of `<prefix>/<name>` that misses is
//! filled from the upstream — the multi-platform index byte-exact, its attachments in the
//! background, blobs on demand — concurrent pulls fetch once, tags are checked upstream
//! again after their TTL, and a cached image still pulls when upstream is down.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::oci::{
    descriptor, error_code, get, push_blob, push_two_platform_index as push_index, put_manifest,
    OCI_INDEX, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, require_tool, run, sha256, Registry};

/// A cosign-style `.sig` of `subject` in `repo`.
async fn push_signature(c: &Client, r: &Registry, repo: &str, subject: &str) -> String {
    let payload =
        format!("{{\"critical\":{{\"image\":{{\"docker-manifest-digest\":\"{subject}\"}}}}}}");
    push_blob(c, r, repo, b"{}").await;
    push_blob(c, r, repo, payload.as_bytes()).await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", b"{}"),
        "layers": [descriptor("application/vnd.dev.cosign.simplesigning.v1+json", payload.as_bytes())],
    }))
    .unwrap();
    let tag = format!("{}.sig", subject.replace(':', "-"));
    put_manifest(c, r, repo, &tag, OCI_MANIFEST, &sig).await;
    tag
}

async fn head_digest(c: &Client, url: &str) -> (StatusCode, String) {
    let resp = c
        .head(url)
        .header("Accept", format!("{OCI_INDEX}, {OCI_MANIFEST}"))
        .send()
        .await
        .unwrap();
    let digest = resp
        .headers()
        .get("Docker-Content-Digest")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (resp.status(), digest)
}

async fn tags(c: &Client, r: &Registry, repo: &str) -> Vec<String> {
    let (status, body) = get(c, &r.v2(&format!("{repo}/tags/list"))).await;
    if status != StatusCode::OK {
        return Vec::new();
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// Manifest fetches from upstream that succeeded, from `/metrics`.
async fn manifest_fetches(c: &Client, r: &Registry) -> u64 {
    let (_, body) = get(c, &format!("{}/metrics", r.url)).await;
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| {
            l.starts_with("signet_pull_through_fetches_total{")
                && l.contains("kind=\"manifest\"")
                && l.contains("outcome=\"ok\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulls_that_miss_are_filled_from_upstream() {
    require_tool("skopeo");
    let c = client();
    let mut upstream = Registry::start();
    let repo = "team/app";
    let index = push_index(&c, &upstream, repo, "v1").await;
    let index_digest = sha256(&index);
    let sig_tag = push_signature(&c, &upstream, repo, &index_digest).await;
    let lone = random_bytes(5000);
    let lone_digest = push_blob(&c, &upstream, repo, &lone).await;

    let mirror = Registry::start_with_config(&format!(
        "[[sync.pull_through]]\nprefix = \"hub\"\nupstream = \"{}\"\ntag_ttl_secs = 2\n",
        upstream.url
    ));
    let local = "hub/team/app";

    // Nothing is there until pulled; a repository outside the prefix is not filled.
    assert!(tags(&c, &mirror, local).await.is_empty());
    let (status, _) = head_digest(&c, &mirror.v2("team/app/manifests/v1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // skopeo pulls every platform through the mirror.
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{}/{local}:v1", mirror.host),
        &format!("oci:{}:v1", dir.path().join("layout").display()),
    ]));
    let (status, digest) = head_digest(&c, &mirror.v2(&format!("{local}/manifests/v1"))).await;
    assert_eq!(
        (status, digest.as_str()),
        (StatusCode::OK, index_digest.as_str())
    );
    let (_, bytes) = get(&c, &mirror.v2(&format!("{local}/manifests/{index_digest}"))).await;
    assert_eq!(bytes.as_ref(), index.as_slice(), "byte-exact");

    // The index's signature follows in the background.
    let started = Instant::now();
    while !tags(&c, &mirror, local).await.contains(&sig_tag) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the signature never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A blob no manifest of the mirror names is fetched when asked for.
    let (status, body) = get(&c, &mirror.v2(&format!("{local}/blobs/{lone_digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, lone);

    // Unknown upstream: the usual 404.
    let (status, body) = get(&c, &mirror.v2(&format!("{local}/manifests/nope"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");

    // Concurrent first pulls of a new tag fetch it once.
    let v2 = push_index(&c, &upstream, repo, "v2").await;
    let before = manifest_fetches(&c, &mirror).await;
    let url = mirror.v2(&format!("{local}/manifests/v2"));
    let pulls: Vec<_> = (0..8).map(|_| head_digest(&c, &url)).collect();
    for (status, digest) in futures::future::join_all(pulls).await {
        assert_eq!((status, digest), (StatusCode::OK, sha256(&v2)));
    }
    assert_eq!(manifest_fetches(&c, &mirror).await - before, 1);

    // A tag moved upstream is served from the cache until its TTL runs out.
    let moved = push_index(&c, &upstream, repo, "v1").await;
    let (_, digest) = head_digest(&c, &mirror.v2(&format!("{local}/manifests/v1"))).await;
    assert_eq!(digest, index_digest, "within the TTL the cache answers");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, digest) = head_digest(&c, &mirror.v2(&format!("{local}/manifests/v1"))).await;
    assert_eq!(digest, sha256(&moved));

    // Upstream down: what is cached still pulls; what is not is a clear 502.
    upstream.kill();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, digest) = head_digest(&c, &mirror.v2(&format!("{local}/manifests/v1"))).await;
    assert_eq!((status, digest), (StatusCode::OK, sha256(&moved)));
    let (status, body) = get(&c, &mirror.v2(&format!("{local}/manifests/v3"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(&body), "UNAVAILABLE");
}

#[test]
fn a_bad_pull_through_entry_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signet.toml");
    std::fs::write(
        &config,
        "[[sync.pull_through]]\nprefix = \"hub\"\nupstream = \"ftp://example\"\n",
    )
    .unwrap();
    let out = Command::new(signet_api_tests::signet_binary())
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must start with http:// or https://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sum of a metric's series (those whose line holds `label`) in `/metrics`.
async fn metric(c: &Client, r: &Registry, name: &str, label: &str) -> f64 {
    let (_, body) = get(c, &format!("{}/metrics", r.url)).await;
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn quotas_cap_what_a_prefix_holds_and_misses_are_remembered() {
    let c = client();
    let upstream = Registry::start();
    for repo in ["team/one", "team/two"] {
        push_index(&c, &upstream, repo, "v1").await;
    }
    let mirror = Registry::start_with_config(&format!(
        "[[sync.pull_through]]\nprefix = \"hub\"\nupstream = \"{}\"\nmax_repositories = 1\nnegative_ttl_secs = 600\n",
        upstream.url
    ));
    // The first repository fits; a second is refused with why, and nothing of it is kept.
    let (status, _) = get(&c, &mirror.v2("hub/team/one/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&c, &mirror.v2("hub/team/two/manifests/v1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "DENIED");
    assert!(
        String::from_utf8_lossy(&body).contains("quota"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (_, body) = get(&c, &mirror.v2("_catalog")).await;
    let catalog: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(catalog["repositories"], json!(["hub/team/one"]));
    // What is cached is still served.
    let (status, _) = get(&c, &mirror.v2("hub/team/one/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);

    // A name upstream lacks is asked for once, then answered from memory.
    let refused = "signet_pull_through_refused_total";
    let absent = "reason=\"absent-upstream\"";
    assert_eq!(metric(&c, &mirror, refused, absent).await, 0.0);
    for _ in 0..6 {
        let (status, _) = get(&c, &mirror.v2("hub/nothing/here/manifests/v1")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        metric(&c, &mirror, refused, absent).await,
        5.0,
        "five answered from memory"
    );
    assert_eq!(metric(&c, &mirror, refused, "reason=\"quota\"").await, 1.0);

    // A byte quota: reached once the first image is held.
    let small = Registry::start_with_config(&format!(
        "[[sync.pull_through]]\nprefix = \"hub\"\nupstream = \"{}\"\nmax_bytes = 1\n",
        upstream.url
    ));
    let (status, _) = get(&c, &small.v2("hub/team/one/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&c, &small.v2("hub/team/two/manifests/v1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
