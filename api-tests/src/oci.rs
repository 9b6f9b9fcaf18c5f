//! Pushing and reading OCI content over plain HTTP, for tests.

use bytes::Bytes;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::{sha256, Registry};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Pushes a blob with a single `POST ?digest=`; returns its digest.
pub async fn push_blob(c: &Client, r: &Registry, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let resp = c
        .post(r.v2(&format!("{repo}/blobs/uploads/?digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(Bytes::copy_from_slice(bytes))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "push blob {digest}");
    digest
}

pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(bytes), "size": bytes.len() })
}

/// An image manifest over the given config and layers (their bytes).
pub fn image_manifest(config: &[u8], layers: &[&[u8]], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(extra.clone());
    }
    serde_json::to_vec(&m).unwrap()
}

/// Pushes config, layers and the manifest (by `reference`); returns the manifest bytes.
pub async fn push_image(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: &str,
    layers: &[&[u8]],
) -> Vec<u8> {
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"n\":\"{}\"}}",
        hex::encode(crate::random_bytes(8))
    );
    push_blob(c, r, repo, config.as_bytes()).await;
    for layer in layers {
        push_blob(c, r, repo, layer).await;
    }
    let manifest = image_manifest(config.as_bytes(), layers, json!({}));
    put_manifest(c, r, repo, reference, OCI_MANIFEST, &manifest).await;
    manifest
}

pub async fn put_manifest(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> reqwest::Response {
    let resp = c
        .put(r.v2(&format!("{repo}/manifests/{reference}")))
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "put manifest {repo}:{reference}");
    resp
}

/// GET a URL and return status and body.
pub async fn get(c: &Client, url: &str) -> (StatusCode, Bytes) {
    let resp = c.get(url).send().await.unwrap();
    let status = resp.status();
    (status, resp.bytes().await.unwrap())
}

/// The OCI error code of an error response body.
pub fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not an OCI error body: {}", String::from_utf8_lossy(body)));
    v["errors"][0]["code"].as_str().unwrap_or_default().to_string()
}
