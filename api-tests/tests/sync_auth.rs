//! Sync from an upstream that requires bearer tokens: a second Signet with `[auth]` on.
//! The job's Basic credentials are exchanged for tokens (oci-client for the
//! distribution API, Signet's upstream client for the signatures extension); the mirror
//! gets the image, its cosign `.sig` and its atomic signature byte for byte. With wrong
//! credentials the run fails with a clear error and stores nothing.

use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::oci::{self, OCI_MANIFEST};
use signet_api_tests::pki::auth_users;
use signet_api_tests::{client, random_bytes, run, sha256, Registry};

const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

fn basic_client(user: &str, password: &str) -> Client {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        format!("Basic {}", B64.encode(format!("{user}:{password}")))
            .parse()
            .unwrap(),
    );
    Client::builder().default_headers(headers).build().unwrap()
}

fn upstream() -> Registry {
    Registry::start_with_config(&format!(
        r#"
[auth]
enabled = true
admins = ["root"]
{users}
[[auth.rules]]
repositories = ["apps/**"]
pull = ["mirror"]
"#,
        users = auth_users(&[("root", "root-pw"), ("mirror", "mirror-pw")]),
    ))
}

struct Mirror {
    registry: Registry,
}

impl Mirror {
    fn start(upstream: &str, password: &str) -> Mirror {
        Mirror {
            registry: Registry::start_with_config(&format!(
                "[[sync.jobs]]\nname = \"up\"\nupstream = \"{upstream}\"\nrepositories = [\"apps/web\"]\nusername = \"mirror\"\npassword = \"{password}\"\nretries = 0\n"
            )),
        }
    }

    fn command(&self) -> Command {
        self.registry.cli(&["sync", "run", "up", "--json"])
    }
}

fn n(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {summary}"))
}

/// Pushes `apps/web:1.0`, a cosign `.sig` for it and an atomic signature; returns
/// (manifest digest, manifest bytes, `.sig` bytes, atomic signature id and content).
async fn populate(root: &Client, r: &Registry) -> (String, Vec<u8>, Vec<u8>, String, Vec<u8>) {
    let repo = "apps/web";
    let manifest = oci::push_image(root, r, repo, "1.0", &[&random_bytes(200)]).await;
    let digest = sha256(&manifest);
    let payload = serde_json::to_vec(&json!({
        "critical": {"identity": {"docker-reference": "x/apps/web"}, "image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"},
        "optional": null
    }))
    .unwrap();
    let config = b"{}".to_vec();
    let config_digest = oci::push_blob(root, r, repo, &config).await;
    let layer_digest = oci::push_blob(root, r, repo, &payload).await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": COSIGN_SIMPLESIGNING,
            "digest": layer_digest,
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": B64.encode(random_bytes(64))}
        }]
    }))
    .unwrap();
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    oci::put_manifest(root, r, repo, &sig_tag, OCI_MANIFEST, &sig).await;
    let id = hex::encode(random_bytes(16));
    let content = random_bytes(300).to_vec();
    let resp = root
        .put(format!("{}/extensions/v2/{repo}/signatures/{digest}", r.url))
        .json(&json!({"schemaVersion": 2, "type": "atomic", "name": format!("{digest}@{id}"), "content": B64.encode(&content)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    (digest, manifest, sig, id, content)
}

#[tokio::test]
async fn mirrors_from_an_upstream_that_requires_bearer_tokens() {
    let up = upstream();
    let root = basic_client("root", "root-pw");
    let (digest, manifest, sig, id, content) = populate(&root, &up).await;
    // Anonymous callers are challenged: the mirror has to go through the token flow.
    let resp = client()
        .get(up.v2("apps/web/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let mirror = Mirror::start(&up.url, "mirror-pw");
    let summary: Value = serde_json::from_str(&run(&mut mirror.command())).unwrap();
    assert!(
        summary["errors"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    assert_eq!(n(&summary, "atomic_signatures_copied"), 1, "{summary}");

    let c = client();
    let m = &mirror.registry;
    let (status, body) = oci::get(&c, &m.v2("apps/web/manifests/1.0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), manifest.as_slice());
    let sig_tag = format!("{}.sig", digest.replace(':', "-"));
    let (status, body) = oci::get(&c, &m.v2(&format!("apps/web/manifests/{sig_tag}"))).await;
    assert_eq!(status, StatusCode::OK, "the .sig is mirrored");
    assert_eq!(body.as_ref(), sig.as_slice());
    // Every blob of both manifests, byte for byte.
    for bytes in [&manifest, &sig] {
        let parsed: Value = serde_json::from_slice(bytes).unwrap();
        let mut digests = vec![parsed["config"]["digest"].as_str().unwrap().to_string()];
        for l in parsed["layers"].as_array().unwrap() {
            digests.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in digests {
            let (status, blob) = oci::get(&c, &m.v2(&format!("apps/web/blobs/{d}"))).await;
            assert_eq!(status, StatusCode::OK, "{d}");
            let (_, original) = oci::get(&root, &up.v2(&format!("apps/web/blobs/{d}"))).await;
            assert_eq!(blob, original, "{d}");
            assert_eq!(sha256(&blob), d);
        }
    }
    let sigs: Value = c
        .get(format!(
            "{}/extensions/v2/apps/web/signatures/{digest}",
            m.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sigs = sigs["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 1, "{sigs:?}");
    assert_eq!(sigs[0]["name"], format!("{digest}@{id}"));
    assert_eq!(
        B64.decode(sigs[0]["content"].as_str().unwrap()).unwrap(),
        content
    );

    // A rerun finds everything in place.
    let again: Value = serde_json::from_str(&run(&mut mirror.command())).unwrap();
    assert_eq!(n(&again, "manifests_copied"), 0, "{again}");
    assert_eq!(n(&again, "blobs_copied"), 0, "{again}");
    assert_eq!(n(&again, "atomic_signatures_present"), 1, "{again}");
}

#[tokio::test]
async fn wrong_credentials_fail_clearly_and_store_nothing() {
    let up = upstream();
    let root = basic_client("root", "root-pw");
    populate(&root, &up).await;

    let mirror = Mirror::start(&up.url, "wrong-pw");
    let out = mirror.command().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("status {}\nstdout {stdout}\nstderr {stderr}", out.status);
    let failed = !out.status.success()
        || serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|s| s["errors"].as_array().map(|e| !e.is_empty()))
            .unwrap_or(false);
    assert!(failed, "the run must fail: {stdout} {stderr}");
    assert!(
        stderr.contains("upstream refused the job's credentials (username \"mirror\")"),
        "a clear error: {stderr}"
    );
    assert!(!stderr.contains("wrong-pw") && !stdout.contains("wrong-pw"));

    let c = client();
    let m = &mirror.registry;
    let (status, _) = oci::get(&c, &m.v2("apps/web/manifests/1.0")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, catalog) = oci::get(&c, &m.v2("_catalog")).await;
    let catalog: Value = serde_json::from_slice(&catalog).unwrap();
    assert_eq!(catalog["repositories"], json!([]), "{catalog}");
    assert!(oci::stored_blob_files(m).is_empty());
}
