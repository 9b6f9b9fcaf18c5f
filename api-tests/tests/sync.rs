//! Sync: `signet sync run` mirrors a real upstream — Debian's `docker-registry`
//! (distribution 2.8, no referrers API) and a second Signet (referrers API, atomic
//! signatures through the signatures extension) — byte for byte, with every platform's
//! and the index's signatures, attestations, SBOMs and referrers; filters by platform
//! and tag; and a rerun downloads nothing (asserted from the summary and from the
//! upstream's access log).

use std::process::Command;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{cosign_sign, cosign_verify_with, Key, DSSE};
use signet_api_tests::distribution::Distribution;
use signet_api_tests::oci::{OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};
use signet_api_tests::{client, random_bytes, require_tool, run, sha256, signet_binary, Registry};
const SPDX: &str = "text/spdx+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

// ---------------------------------------------------------------------------------
// HTTP helpers on any registry (by base URL)
// ---------------------------------------------------------------------------------

async fn push_blob(c: &Client, base: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let resp = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "start upload");
    let location = resp.headers()["Location"].to_str().unwrap().to_string();
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = c
        .put(format!("{location}{sep}digest={digest}"))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "push blob {digest}");
    digest
}

async fn put_manifest(
    c: &Client,
    base: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let resp = c
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "put {repo}:{reference}: {}",
        resp.text().await.unwrap()
    );
    sha256(body)
}

/// `(digest, bytes)` of a manifest; `None` on 404.
async fn manifest(
    c: &Client,
    base: &str,
    repo: &str,
    reference: &str,
) -> Option<(String, Vec<u8>)> {
    let resp = c
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header(
            "Accept",
            format!("{OCI_MANIFEST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"),
        )
        .send()
        .await
        .unwrap();
    match resp.status() {
        StatusCode::OK => {
            let body = resp.bytes().await.unwrap().to_vec();
            Some((sha256(&body), body))
        }
        StatusCode::NOT_FOUND => None,
        s => panic!("GET {repo}:{reference}: {s}"),
    }
}

async fn tags(c: &Client, base: &str, repo: &str) -> Vec<String> {
    let resp = c
        .get(format!("{base}/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap();
    if resp.status() == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    let v: Value = resp.json().await.unwrap();
    let mut out: Vec<String> = v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(bytes), "size": bytes.len() })
}

/// Pushes a config and one layer and an image manifest (by digest); returns it.
async fn push_image(
    c: &Client,
    base: &str,
    repo: &str,
    arch: &str,
    extra: Value,
) -> (String, Vec<u8>) {
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "n": hex::encode(random_bytes(8)),
    }))
    .unwrap();
    let layer = random_bytes(64 * 1024 + 17);
    push_blob(c, base, repo, &config).await;
    push_blob(c, base, repo, &layer).await;
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    });
    m.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let body = serde_json::to_vec(&m).unwrap();
    let digest = sha256(&body);
    put_manifest(c, base, repo, &digest, OCI_MANIFEST, &body).await;
    (digest, body)
}

/// An artifact manifest whose one layer is `payload` (empty config), pushed at `reference`.
async fn push_artifact(
    c: &Client,
    base: &str,
    repo: &str,
    reference: &str,
    layer_type: &str,
    payload: &[u8],
    extra: Value,
) -> String {
    let config = b"{}";
    push_blob(c, base, repo, config).await;
    push_blob(c, base, repo, payload).await;
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.empty.v1+json", config),
        "layers": [descriptor(layer_type, payload)],
    });
    m.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let body = serde_json::to_vec(&m).unwrap();
    let at = if reference.is_empty() {
        sha256(&body)
    } else {
        reference.to_string()
    };
    put_manifest(c, base, repo, &at, OCI_MANIFEST, &body).await;
    sha256(&body)
}

fn attachment_tag(subject: &str, suffix: &str) -> String {
    let stem = subject.replace(':', "-");
    if suffix.is_empty() {
        stem
    } else {
        format!("{stem}.{suffix}")
    }
}

/// `cosign verify --key` with the crate: the number of trusted layers, or why not.
async fn cosign_verify(
    host: &str,
    repo: &str,
    reference: &str,
    key: &Key,
) -> Result<usize, String> {
    cosign_verify_with(host, repo, reference, key.verifier()).await
}

// ---------------------------------------------------------------------------------
// The mirror and `signet sync run`
// ---------------------------------------------------------------------------------

struct Mirror {
    registry: Registry,
}

impl Mirror {
    fn start(jobs_toml: &str) -> Mirror {
        Mirror {
            registry: Registry::start_with_config(jobs_toml),
        }
    }

    /// `signet sync run <job> --json` beside the running server; its summary.
    fn sync(&self, job: &str) -> Value {
        let out = run(&mut self.registry.cli(&["sync", "run", job, "--json"]));
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary {out:?}: {e}"))
    }

    fn base(&self) -> &str {
        &self.registry.url
    }
}

fn job_toml(name: &str, upstream: &str, extra: &str) -> String {
    format!("[[sync.jobs]]\nname = \"{name}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

/// Every attachment digest in a coverage report (all kinds).
fn coverage_digests(report: &Value) -> Vec<String> {
    let mut out: Vec<String> = ["signature", "attestation", "sbom", "other"]
        .iter()
        .flat_map(|k| {
            report["attachments"][k]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|a| a["digest"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

async fn coverage(c: &Client, base: &str, repo: &str, digest: &str) -> Value {
    let resp = c
        .get(format!("{base}/v2/{repo}/_signet/attachments/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "coverage of {repo}@{digest}");
    resp.json().await.unwrap()
}

/// What the upstream holds for the test image.
struct Upstream {
    index: String,
    amd64: String,
    arm64: String,
    /// Every attachment of the index: .sig, .att, .sbom, the fallback-tag referrer.
    index_attachments: Vec<String>,
}

/// A two-platform image `app:v1` with signatures on the index and on each platform,
/// an `.att` and an `.sbom` on the index, and a referrers fallback-tag index holding a
/// sigstore bundle; plus a single-platform `app:v2` and `app:dev`.
async fn populate(c: &Client, d: &Distribution, repo: &str, key: &Key) -> Upstream {
    let base = d.url.as_str();
    let (amd64, amd64_body) = push_image(c, base, repo, "amd64", json!({})).await;
    let (arm64, arm64_body) = push_image(c, base, repo, "arm64", json!({})).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64, "size": amd64_body.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64, "size": arm64_body.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .unwrap();
    let index_digest = put_manifest(c, base, repo, "v1", OCI_INDEX, &index).await;
    let (_, v2_body) = push_image(c, base, repo, "amd64", json!({})).await;
    put_manifest(c, base, repo, "v2", OCI_MANIFEST, &v2_body).await;
    let (_, dev_body) = push_image(c, base, repo, "amd64", json!({})).await;
    put_manifest(c, base, repo, "dev", OCI_MANIFEST, &dev_body).await;

    // Signatures: the index (by tag) and each platform (by digest).
    assert_eq!(cosign_sign(&d.host, repo, "v1", key).await, index_digest);
    for p in [&amd64, &arm64] {
        cosign_sign(&d.host, repo, p, key).await;
    }
    let (sig, _) = manifest(c, base, repo, &attachment_tag(&index_digest, "sig"))
        .await
        .expect(".sig of the index");
    // An attestation and an SBOM, as cosign tags them.
    let statement = json!({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2", "subject": [{"name": repo, "digest": {"sha256": index_digest.trim_start_matches("sha256:")}}], "predicate": {}});
    let envelope = serde_json::to_vec(&json!({"payloadType": "application/vnd.in-toto+json", "payload": B64.encode(serde_json::to_vec(&statement).unwrap()), "signatures": [{"sig": B64.encode(b"not checked here")}]})).unwrap();
    let att = push_artifact(
        c,
        base,
        repo,
        &attachment_tag(&index_digest, "att"),
        DSSE,
        &envelope,
        json!({}),
    )
    .await;
    let sbom = push_artifact(
        c,
        base,
        repo,
        &attachment_tag(&index_digest, "sbom"),
        SPDX,
        br#"{"spdxVersion":"SPDX-2.3"}"#,
        json!({}),
    )
    .await;
    // A sigstore bundle as a referrer, listed in the fallback tag (no referrers API).
    let bundle = push_artifact(
        c,
        base,
        repo,
        "",
        BUNDLE,
        br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#,
        json!({"artifactType": BUNDLE, "subject": {"mediaType": OCI_INDEX, "digest": index_digest, "size": index.len()}}),
    )
    .await;
    let (_, bundle_body) = manifest(c, base, repo, &bundle).await.unwrap();
    let fallback = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": bundle, "size": bundle_body.len(), "artifactType": BUNDLE}],
    }))
    .unwrap();
    put_manifest(
        c,
        base,
        repo,
        &attachment_tag(&index_digest, ""),
        OCI_INDEX,
        &fallback,
    )
    .await;
    let mut index_attachments = vec![sig, att, sbom, bundle];
    index_attachments.sort();
    Upstream {
        index: index_digest,
        amd64,
        arm64,
        index_attachments,
    }
}

fn n(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {summary}"))
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn mirrors_a_signed_multi_platform_image_from_the_reference_registry() {
    let started = Instant::now();
    let upstream = Distribution::start();
    let c = client();
    let key = Key::generate();
    let repo = "team/app";
    let up = populate(&c, &upstream, repo, &key).await;

    let jobs = [
        job_toml("all", &upstream.url, "repositories = [\"team/*\"]\ntags_exclude = [\"dev\"]"),
        job_toml(
            "amd64",
            &upstream.url,
            "repositories = [\"team/app\"]\nplatforms = [\"linux/amd64\"]\ntags_include = [\"v1\"]\ndestination_prefix = \"amd64\"",
        ),
    ]
    .join("\n");
    let mirror = Mirror::start(&jobs);
    let m = mirror.base();

    // --- everything, byte for byte ---
    let first = mirror.sync("all");
    assert!(first["errors"].as_array().unwrap().is_empty(), "{first}");
    assert_eq!(n(&first, "tags"), 2, "v1 and v2; dev excluded: {first}");
    assert!(n(&first, "blobs_copied") > 0);
    let upstream_tags: Vec<String> = tags(&c, &upstream.url, repo)
        .await
        .into_iter()
        .filter(|t| t != "dev")
        .collect();
    assert_eq!(
        tags(&c, m, repo).await,
        upstream_tags,
        "every tag but the excluded one"
    );
    for reference in upstream_tags.iter().chain([&up.amd64, &up.arm64]) {
        let (ud, ub) = manifest(&c, &upstream.url, repo, reference).await.unwrap();
        let (md, mb) = manifest(&c, m, repo, reference)
            .await
            .unwrap_or_else(|| panic!("{reference} not mirrored"));
        assert_eq!(md, ud, "{reference}: same digest");
        assert_eq!(mb, ub, "{reference}: same bytes");
    }
    assert!(
        manifest(&c, m, repo, "dev").await.is_none(),
        "the tag filter"
    );
    // Every signature verifies against the mirror.
    for reference in ["v1", up.amd64.as_str(), up.arm64.as_str()] {
        assert_eq!(
            cosign_verify(&mirror.registry.host, repo, reference, &key).await,
            Ok(1),
            "{reference}"
        );
    }
    // Coverage on the mirror: the index's four attachments; each platform's signature.
    let report = coverage(&c, m, repo, &up.index).await;
    assert_eq!(coverage_digests(&report), up.index_attachments, "{report}");
    for p in [&up.amd64, &up.arm64] {
        let report = coverage(&c, m, repo, p).await;
        let (sig, _) = manifest(&c, &upstream.url, repo, &attachment_tag(p, "sig"))
            .await
            .unwrap();
        assert_eq!(coverage_digests(&report), [sig], "{report}");
    }

    // --- a rerun copies nothing and fetches no blob ---
    let blob_requests = upstream.requests("/blobs/");
    assert!(blob_requests > 0, "the access log records blob requests");
    let manifest_requests = upstream.requests("/manifests/");
    let again = mirror.sync("all");
    eprintln!("first run: {first}\nrerun: {again}");
    assert!(again["errors"].as_array().unwrap().is_empty(), "{again}");
    assert_eq!(n(&again, "blobs_copied"), 0, "{again}");
    assert_eq!(n(&again, "manifests_copied"), 0, "{again}");
    assert_eq!(n(&again, "tags_unchanged"), 2, "{again}");
    assert!(n(&again, "manifests_present") >= 10, "{again}");
    assert_eq!(
        upstream.requests("/blobs/"),
        blob_requests,
        "no blob request upstream"
    );
    assert!(
        upstream.requests("/manifests/") > manifest_requests,
        "tags were checked"
    );

    // --- a platform filter: the index is whole, only amd64 is there ---
    let filtered = mirror.sync("amd64");
    assert!(
        filtered["errors"].as_array().unwrap().is_empty(),
        "{filtered}"
    );
    assert_eq!(n(&filtered, "tags"), 1, "{filtered}");
    assert_eq!(n(&filtered, "platforms_skipped"), 1, "{filtered}");
    assert_eq!(
        n(&filtered, "blobs_copied"),
        0,
        "all linked from team/app: {filtered}"
    );
    let dest = "amd64/team/app";
    let (digest, bytes) = manifest(&c, m, dest, "v1").await.unwrap();
    assert_eq!(digest, up.index, "the index digest is unchanged");
    assert_eq!(
        manifest(&c, &upstream.url, repo, "v1").await.unwrap().1,
        bytes
    );
    assert!(manifest(&c, m, dest, &up.amd64).await.is_some());
    assert!(
        manifest(&c, m, dest, &up.arm64).await.is_none(),
        "arm64 filtered out"
    );
    assert!(manifest(&c, m, dest, "v2").await.is_none(), "tag filter");
    for reference in ["v1", up.amd64.as_str()] {
        assert_eq!(
            cosign_verify(&mirror.registry.host, dest, reference, &key).await,
            Ok(1),
            "{reference}"
        );
    }
    assert_eq!(
        coverage_digests(&coverage(&c, m, dest, &up.index).await),
        up.index_attachments
    );

    // --- skopeo copies from the mirror with the sigstore attachments ---
    require_tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let registries_d = dir.path().join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let host = &mirror.registry.host;
    run(Command::new("skopeo")
        .arg("--registries.d")
        .arg(&registries_d)
        .arg("--policy")
        .arg(&policy)
        .args([
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{host}/{repo}:v1"))
        .arg(format!("docker://{host}/copied/app:v1")));
    assert_eq!(
        manifest(&c, m, "copied/app", "v1").await.unwrap().0,
        up.index
    );
    assert_eq!(cosign_verify(host, "copied/app", "v1", &key).await, Ok(1));
    assert_eq!(
        cosign_verify(host, "copied/app", &up.arm64, &key).await,
        Ok(1)
    );
    eprintln!(
        "sync test (reference registry) took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn mirrors_referrers_and_atomic_signatures_from_another_signet() {
    let started = Instant::now();
    let upstream = Registry::start();
    let c = client();
    let base = upstream.url.as_str();
    let repo = "apps/web";
    let (digest, body) = push_image(&c, base, repo, "amd64", json!({})).await;
    put_manifest(&c, base, repo, "1.0", OCI_MANIFEST, &body).await;
    // An OCI referrer (a sigstore bundle, as @sigstore/oci pushes it).
    let bundle = push_artifact(
        &c,
        base,
        repo,
        "",
        BUNDLE,
        br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","n":1}"#,
        json!({"artifactType": BUNDLE, "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": body.len()}}),
    )
    .await;
    // An atomic signature through the signatures extension.
    let id = hex::encode(random_bytes(16));
    let content = random_bytes(300);
    let resp = c
        .put(format!("{base}/extensions/v2/{repo}/signatures/{digest}"))
        .json(&json!({"schemaVersion": 2, "type": "atomic", "name": format!("{digest}@{id}"), "content": B64.encode(&content)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    let mirror = Mirror::start(&job_toml("signet", base, "repositories = [\"apps/web\"]"));
    let m = mirror.base();
    let first = mirror.sync("signet");
    assert!(first["errors"].as_array().unwrap().is_empty(), "{first}");
    assert_eq!(n(&first, "atomic_signatures_copied"), 1, "{first}");
    assert_eq!(manifest(&c, m, repo, "1.0").await.unwrap().0, digest);
    assert_eq!(manifest(&c, m, repo, &bundle).await.unwrap().0, bundle);
    let referrers: Value = c
        .get(format!("{m}/v2/{repo}/referrers/{digest}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = referrers["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [bundle.as_str()], "{referrers}");
    let sigs: Value = c
        .get(format!("{m}/extensions/v2/{repo}/signatures/{digest}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sigs = sigs["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 1);
    assert_eq!(sigs[0]["name"], format!("{digest}@{id}"));
    assert_eq!(
        B64.decode(sigs[0]["content"].as_str().unwrap()).unwrap(),
        content.to_vec()
    );

    let again = mirror.sync("signet");
    assert_eq!(n(&again, "blobs_copied"), 0, "{again}");
    assert_eq!(n(&again, "manifests_copied"), 0, "{again}");
    assert_eq!(n(&again, "atomic_signatures_copied"), 0, "{again}");
    assert_eq!(n(&again, "atomic_signatures_present"), 1, "{again}");
    eprintln!("sync test (Signet upstream) took {:?}", started.elapsed());
}

#[test]
fn an_unknown_job_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(signet_binary())
        .args(["sync", "run", "nope", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no sync job"));
}
