//! OCI 1.1 referrers from real clients, seen through Signet's attachment index:
//! `@sigstore/oci` (sigstore-js) attaching Sigstore bundles, and the `oras` Python
//! library pushing SBOMs, each with a `subject`.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::oci::{error_code, get, push_image, OCI_INDEX, OCI_MANIFEST};
use signet_api_tests::{client, require_tool, run, sha256, Registry};

const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// `api-tests/js`, where `scripts/install-test-deps.sh` installs the npm clients.
fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

async fn coverage(c: &Client, r: &Registry, repo: &str, reference: &str) -> Value {
    let (status, body) = get(c, &r.v2(&format!("{repo}/_signet/attachments/{reference}"))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The entries of the referrers index of `subject`, optionally filtered.
async fn referrers(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &str,
    artifact_type: Option<&str>,
) -> Vec<Value> {
    let query = artifact_type
        .map(|t| format!("?artifactType={}", t.replace('+', "%2B")))
        .unwrap_or_default();
    let (status, body) = get(c, &r.v2(&format!("{repo}/referrers/{subject}{query}"))).await;
    assert_eq!(status, StatusCode::OK);
    let index: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    index["manifests"].as_array().unwrap().clone()
}

fn find<'a>(list: &'a [Value], digest: &str) -> &'a Value {
    list.iter()
        .find(|d| d["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} is not in {list:?}"))
}

/// A syntactically valid Sigstore bundle v0.3 (a message signature with a public-key
/// hint). It need not verify: the registry stores, indexes and serves it.
fn fabricated_bundle(subject: &str, note: &str) -> Vec<u8> {
    let hex = subject.trim_start_matches("sha256:");
    let digest_bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::to_vec(&json!({
        "mediaType": SIGSTORE_BUNDLE,
        "verificationMaterial": {
            "publicKey": {"hint": b64.encode(note.as_bytes())},
            "tlogEntries": [],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64.encode(&digest_bytes)},
            "signature": b64.encode(format!("not a real signature: {note}")),
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn sigstore_js_attaches_bundles_as_referrers_without_a_fallback_tag() {
    require_tool("node");
    let js = js_dir();
    assert!(
        js.join("node_modules/@sigstore/oci/package.json").exists(),
        "@sigstore/oci is not installed in {}: run scripts/install-test-deps.sh",
        js.display()
    );
    let r = Registry::start();
    let c = client();
    let repo = "js/app";
    let image = push_image(&c, &r, repo, "v1", &[b"an image sigstore-js signs"]).await;
    let digest = sha256(&image);
    let dir = tempfile::tempdir().unwrap();

    // A signature bundle, then an attestation bundle (a provenance predicate).
    let mut attached = Vec::new();
    for (name, predicate) in [
        ("signature", None),
        ("attestation", Some("https://slsa.dev/provenance/v1")),
    ] {
        let bundle = fabricated_bundle(&digest, name);
        let file = dir.path().join(format!("{name}.sigstore.json"));
        std::fs::write(&file, &bundle).unwrap();
        let mut cmd = Command::new("node");
        cmd.current_dir(&js)
            .arg(js.join("attach-bundle.js"))
            .arg(&r.host)
            .arg(repo)
            .arg(&digest)
            .arg(&file);
        if let Some(p) = predicate {
            cmd.arg(p);
        }
        let out = run(&mut cmd);
        let descriptor: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("@sigstore/oci output {out:?}: {e}"));
        // Signet answered the manifest PUT with OCI-Subject: the library saw it.
        assert_eq!(descriptor["subjectDigest"], digest.as_str(), "{descriptor}");
        let referrer = descriptor["digest"].as_str().unwrap().to_string();
        attached.push((name, referrer, bundle));
    }

    // Signet has the referrers API, so no fallback tag was written.
    let fallback = digest.replace(':', "-");
    let (status, body) = get(&c, &r.v2(&format!("{repo}/manifests/{fallback}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "fallback tag {fallback}");
    assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
    let (_, body) = get(&c, &r.v2(&format!("{repo}/tags/list"))).await;
    let tags: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));

    // The referrers are what the library pushed: subject, artifact type, the bundle.
    let listed = referrers(&c, &r, repo, &digest, None).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (_, referrer, bundle) in &attached {
        let entry = find(&listed, referrer);
        assert_eq!(entry["artifactType"], SIGSTORE_BUNDLE);
        assert_eq!(entry["mediaType"], OCI_MANIFEST);
        let (status, body) = get(&c, &r.v2(&format!("{repo}/manifests/{referrer}"))).await;
        assert_eq!(status, StatusCode::OK);
        let manifest: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(manifest["subject"]["digest"], digest.as_str());
        assert_eq!(manifest["artifactType"], SIGSTORE_BUNDLE);
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(layer, sha256(bundle));
        let (status, body) = get(&c, &r.v2(&format!("{repo}/blobs/{layer}"))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], &bundle[..]);
    }
    assert_eq!(
        referrers(&c, &r, repo, &digest, Some(SIGSTORE_BUNDLE))
            .await
            .len(),
        2
    );

    // Coverage: the plain bundle is a signature, the one with a provenance predicate
    // an attestation; both sigstore bundles that arrived through their subject.
    let report = coverage(&c, &r, repo, &digest).await;
    for (kind, referrer, _) in &attached {
        let list = report["attachments"][kind]
            .as_array()
            .unwrap_or_else(|| panic!("no {kind} in {report}"));
        assert_eq!(list.len(), 1, "{report}");
        assert_eq!(list[0]["digest"], referrer.as_str());
        assert_eq!(list[0]["kind"], *kind);
        assert_eq!(list[0]["format"], "sigstore-bundle");
        assert_eq!(list[0]["source"], "subject");
        assert_eq!(list[0]["artifactType"], SIGSTORE_BUNDLE);
    }
}

const ORAS_SBOM_SCRIPT: &str = r#"
import json, sys
import oras.client, oras.oci

host, repo, subject_digest, subject_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = oras.client.OrasClient(hostname=host, insecure=True)
subject = oras.oci.Subject(
    mediaType="application/vnd.oci.image.manifest.v1+json",
    digest=subject_digest,
    size=subject_size,
)
out = {}

# `oras push` with a subject: the config media type names the artifact type.
r = c.push(target=f"{host}/{repo}:sbom-spdx", files=["sbom.spdx.json:application/spdx+json"],
           manifest_config="config.json:application/spdx+json", subject=subject, quiet=True)
assert r.status_code == 201, (r.status_code, r.text)
out["spdx"] = {"digest": r.headers.get("Docker-Content-Digest"), "subject": r.headers.get("OCI-Subject")}

# An OCI 1.1 artifact manifest: explicit artifactType over the empty config.
container = c.get_container(f"{host}/{repo}:sbom-cyclonedx")
layer = oras.oci.NewLayer("bom.cdx.json", "application/vnd.cyclonedx+json")
c.upload_blob("bom.cdx.json", container, layer)
config = oras.oci.NewLayer("empty.json", "application/vnd.oci.empty.v1+json")
config.pop("annotations", None)
c.upload_blob("empty.json", container, config)
manifest = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.cyclonedx+json",
    "config": config,
    "layers": [layer],
    "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
}
r = c.upload_manifest(manifest, container)
assert r.status_code == 201, (r.status_code, r.text)
out["cyclonedx"] = {"digest": r.headers.get("Docker-Content-Digest"), "subject": r.headers.get("OCI-Subject")}
print(json.dumps(out))
"#;

#[tokio::test]
async fn oras_sboms_with_a_subject_are_referrers_and_sboms_in_coverage() {
    signet_api_tests::require_python_module("oras.client");
    let r = Registry::start();
    let c = client();
    let repo = "oras/sbom";
    let image = push_image(&c, &r, repo, "v1", &[b"an image with SBOMs"]).await;
    let digest = sha256(&image);

    let dir = tempfile::tempdir().unwrap();
    let spdx = br#"{"spdxVersion":"SPDX-2.3","SPDXID":"SPDXRef-DOCUMENT","name":"app"}"#;
    let cdx = br#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[]}"#;
    std::fs::write(dir.path().join("sbom.spdx.json"), spdx).unwrap();
    std::fs::write(dir.path().join("bom.cdx.json"), cdx).unwrap();
    std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
    std::fs::write(dir.path().join("empty.json"), b"{}").unwrap();
    std::fs::write(dir.path().join("push.py"), ORAS_SBOM_SCRIPT).unwrap();
    let out = run(Command::new("python3")
        .current_dir(dir.path())
        .arg("push.py")
        .arg(&r.host)
        .arg(repo)
        .arg(&digest)
        .arg(image.len().to_string()));
    let out: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("oras script output {out:?}: {e}"));
    let pushed = [
        ("spdx", "application/spdx+json"),
        ("cyclonedx", "application/vnd.cyclonedx+json"),
    ]
    .map(|(name, artifact_type)| {
        assert_eq!(out[name]["subject"], digest.as_str(), "{out}");
        (
            out[name]["digest"].as_str().unwrap().to_string(),
            artifact_type,
        )
    });

    // Listed by the referrers API with their artifact types; the filter selects one.
    let listed = referrers(&c, &r, repo, &digest, None).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (referrer, artifact_type) in &pushed {
        assert_eq!(find(&listed, referrer)["artifactType"], *artifact_type);
        let filtered = referrers(&c, &r, repo, &digest, Some(artifact_type)).await;
        assert_eq!(filtered.len(), 1, "{filtered:?}");
        assert_eq!(filtered[0]["digest"], referrer.as_str());
    }

    // Coverage reports both as SBOMs attached through their subject.
    let report = coverage(&c, &r, repo, "v1").await;
    let sboms = report["attachments"]["sbom"]
        .as_array()
        .unwrap_or_else(|| panic!("no sbom in {report}"));
    assert_eq!(sboms.len(), 2, "{report}");
    for (referrer, artifact_type) in &pushed {
        let entry = find(sboms, referrer);
        assert_eq!(entry["kind"], "sbom");
        assert_eq!(entry["source"], "subject");
        assert_eq!(entry["artifactType"], *artifact_type);
    }
    assert!(report["attachments"]["signature"]
        .as_array()
        .is_none_or(|a| a.is_empty()));
}
