//! `signet migrate`: an embedded installation (SQLite + filesystem) filled over HTTP
//! with images, an index, a cosign `.sig` tag, an OCI referrer and an atomic signature
//! is stopped, copied into PostgreSQL + a new blob folder, and Signet started on the
//! target serves every manifest, tag, blob, referrer, attachment coverage and signature
//! byte for byte as before. A second run copies nothing.

use std::process::Command;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use signet_api_tests::oci::{
    descriptor, get, image_manifest, push_blob, push_image, put_manifest, OCI_INDEX, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, sha256, signet_binary, Registry};
use signet_storage::testing::TestDatabase;

/// Every GET whose answer must survive the migration, by path.
async fn observe(
    c: &reqwest::Client,
    r: &Registry,
    paths: &[String],
) -> Vec<(String, u16, String)> {
    let mut out = Vec::new();
    for path in paths {
        let (status, body) = get(c, &format!("{}{path}", r.url)).await;
        let text = if path.contains("/blobs/") {
            sha256(&body)
        } else if path.contains("/_signet/attachments/") {
            // Verdicts are derived data: the target verifies again (`checkedAt` moves).
            let mut report: Value = serde_json::from_slice(&body).unwrap();
            forget_check_times(&mut report);
            report.to_string()
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        out.push((path.clone(), status.as_u16(), text));
    }
    out
}

fn forget_check_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("checkedAt");
            map.values_mut().for_each(forget_check_times);
        }
        Value::Array(items) => items.iter_mut().for_each(forget_check_times),
        _ => {}
    }
}

fn migrate(args: &[&str]) -> Value {
    let out = Command::new(signet_binary())
        .arg("migrate")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "signet migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn an_embedded_installation_migrates_to_postgres_unchanged() {
    let c = client();
    let mut source = Registry::start();
    let repo = "mig/app";

    // Two images, an index over them, tags.
    let (l1, l2) = (random_bytes(3000), random_bytes(70_000));
    let amd = push_image(&c, &source, repo, "amd64", &[&l1]).await;
    let arm = push_image(&c, &source, repo, "arm64", &[&l2]).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, &amd), descriptor(OCI_MANIFEST, &arm)],
    }))
    .unwrap();
    put_manifest(&c, &source, repo, "v1", OCI_INDEX, &index).await;
    let index_digest = sha256(&index);
    let amd_digest = sha256(&amd);

    // A cosign signature by tag, on the index.
    let payload = br#"{"critical":{"type":"cosign container image signature"}}"#;
    push_blob(&c, &source, repo, payload).await;
    let empty_config = b"{}";
    push_blob(&c, &source, repo, empty_config).await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(empty_config), "size": 2},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": sha256(payload), "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}
        }]
    }))
    .unwrap();
    let sig_tag = format!("{}.sig", index_digest.replace(':', "-"));
    put_manifest(&c, &source, repo, &sig_tag, OCI_MANIFEST, &sig).await;

    // An OCI referrer (an SBOM) of the amd64 image.
    let sbom = image_manifest(
        empty_config,
        &[payload],
        json!({
            "artifactType": "application/spdx+json",
            "subject": descriptor(OCI_MANIFEST, &amd),
        }),
    );
    put_manifest(&c, &source, repo, &sha256(&sbom), OCI_MANIFEST, &sbom).await;

    // An atomic (simple signing) signature of the amd64 image.
    let atomic = json!({
        "schemaVersion": 2,
        "name": format!("{amd_digest}@0123456789abcdef0123456789abcdef"),
        "type": "atomic",
        "content": base64::engine::general_purpose::STANDARD.encode(random_bytes(300)),
    });
    let resp = c
        .put(format!(
            "{}/extensions/v2/{repo}/signatures/{amd_digest}",
            source.url
        ))
        .json(&atomic)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Another repository sharing a blob.
    push_image(&c, &source, "mig/other", "latest", &[&l1]).await;

    let mut paths = vec![
        "/v2/_catalog".to_string(),
        format!("/v2/{repo}/tags/list"),
        "/v2/mig/other/tags/list".to_string(),
        "/v2/mig/other/manifests/latest".to_string(),
        format!("/extensions/v2/{repo}/signatures/{amd_digest}"),
        format!("/extensions/v2/{repo}/signatures/{index_digest}"),
    ];
    for m in [&amd, &arm, &index, &sig, &sbom] {
        let d = sha256(m);
        paths.push(format!("/v2/{repo}/manifests/{d}"));
        paths.push(format!("/v2/{repo}/referrers/{d}"));
        paths.push(format!("/v2/{repo}/_signet/attachments/{d}"));
        paths.push(format!("/v2/{repo}/_signet/attachments/{d}?recursive=true"));
    }
    for t in ["amd64", "arm64", "v1", sig_tag.as_str()] {
        paths.push(format!("/v2/{repo}/manifests/{t}"));
    }
    for b in [&l1[..], &l2[..], payload, empty_config] {
        paths.push(format!("/v2/{repo}/blobs/{}", sha256(b)));
    }
    let before = observe(&c, &source, &paths).await;
    // The fixture is what it claims: a referrer, a cosign tag attachment, a signature.
    let by_path = |p: &str| before.iter().find(|(q, _, _)| q == p).unwrap().clone();
    assert!(by_path(&format!("/v2/{repo}/referrers/{amd_digest}"))
        .2
        .contains("application/spdx+json"));
    assert!(by_path(&format!("/v2/{repo}/referrers/{index_digest}"))
        .2
        .contains(&sha256(&sig)));
    assert!(
        by_path(&format!("/extensions/v2/{repo}/signatures/{amd_digest}"))
            .2
            .contains("atomic")
    );
    assert!(before.iter().all(|(_, s, _)| *s == 200), "{before:#?}");

    let source_dir = source.data_dir.clone();
    assert!(source.terminate().success());

    let db = TestDatabase::create().await;
    let target = tempfile::tempdir().unwrap();
    let toml = format!(
        "[storage]\nmetadata_url = \"{}\"\nblob_dir = \"{}\"\n",
        db.url,
        target.path().join("blobs").display()
    );
    let target_config = target.path().join("signet.toml");
    std::fs::write(&target_config, &toml).unwrap();
    let args = [
        "--from-data-dir",
        source_dir.to_str().unwrap(),
        "--to-config",
        target_config.to_str().unwrap(),
    ];
    let first = migrate(&args);
    assert_eq!(first["repositories"], 2, "{first}");
    assert_eq!(first["blobs_present"], 0, "{first}");
    assert!(first["blobs_copied"].as_u64().unwrap() >= 6, "{first}");
    let again = migrate(&args);
    assert_eq!(again["blobs_copied"], 0, "{again}");
    assert_eq!(again["rows_inserted"], 0, "{again}");
    assert_eq!(again["blob_rows_inserted"], 0, "{again}");

    let migrated = Registry::start_with_config(&toml);
    let after = observe(&c, &migrated, &paths).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "differs after migration");
    }
    // The target is a working registry: it takes pushes next to the migrated content.
    push_image(&c, &migrated, repo, "v2", &[&random_bytes(100)]).await;
}
