//! Pushing and reading OCI content over plain HTTP, for tests.

use bytes::Bytes;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::{sha256, Registry};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

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

/// An image config no other call makes (a random `n`), so each image is a new digest.
pub fn unique_config() -> Vec<u8> {
    format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}},\"n\":\"{}\"}}",
        hex::encode(crate::random_bytes(8))
    )
    .into_bytes()
}

/// Pushes config, layers and the manifest (by `reference`); returns the manifest bytes.
pub async fn push_image(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: &str,
    layers: &[&[u8]],
) -> Vec<u8> {
    let config = unique_config();
    push_blob(c, r, repo, &config).await;
    for layer in layers {
        push_blob(c, r, repo, layer).await;
    }
    let manifest = image_manifest(&config, layers, json!({}));
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
    let resp = send_manifest(c, r, repo, reference, media_type, body).await;
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "put manifest {repo}:{reference}"
    );
    resp
}

/// `PUT`s a manifest and gives back whatever the registry answered.
pub async fn send_manifest(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> reqwest::Response {
    c.put(r.v2(&format!("{repo}/manifests/{reference}")))
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// The digest `r` answers for `repo:reference` (a `HEAD` accepting an OCI manifest);
/// `None` for any status but 200.
pub async fn manifest_digest(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: &str,
) -> Option<String> {
    let resp = c
        .head(r.v2(&format!("{repo}/manifests/{reference}")))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    (resp.status() == StatusCode::OK)
        .then(|| header(resp.headers(), "docker-content-digest").to_string())
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
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What a client can observe of the stored state: the catalog, the tags of some
/// repositories (status and body of `tags/list`), and the files of the
/// content-addressed store (`<data_dir>/blobs/blobs/`, relative path and size).
/// Compare two snapshots to show that a refused request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub catalog: String,
    pub tags: std::collections::BTreeMap<String, (u16, String)>,
    pub blob_files: std::collections::BTreeMap<String, u64>,
}

/// Takes a [`Snapshot`] of `r`, listing the tags of `repos`.
pub async fn snapshot(c: &Client, r: &Registry, repos: &[&str]) -> Snapshot {
    let (status, catalog) = get(c, &r.v2("_catalog")).await;
    assert_eq!(status, StatusCode::OK, "catalog for a snapshot");
    let mut tags = std::collections::BTreeMap::new();
    for repo in repos {
        let (status, body) = get(c, &r.v2(&format!("{repo}/tags/list"))).await;
        tags.insert(
            repo.to_string(),
            (status.as_u16(), String::from_utf8_lossy(&body).into_owned()),
        );
    }
    Snapshot {
        catalog: String::from_utf8_lossy(&catalog).into_owned(),
        tags,
        blob_files: stored_blob_files(r),
    }
}

/// Every file of the content-addressed store (relative path → size).
pub fn stored_blob_files(r: &Registry) -> std::collections::BTreeMap<String, u64> {
    files_under(&r.data_dir.join("blobs").join("blobs"))
}

/// Every file staged for uploads (relative path → size).
pub fn staged_upload_files(r: &Registry) -> std::collections::BTreeMap<String, u64> {
    files_under(&r.data_dir.join("blobs").join("uploads"))
}

fn files_under(root: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.insert(rel.to_string_lossy().into_owned(), meta.len());
            }
        }
    }
    out
}

/// Asserts an OCI error response: the status, and a body of the form
/// `{"errors":[{"code":...,"message":...}]}` whose first code is `code`. Returns the
/// response's headers for further checks.
pub async fn expect_error(
    resp: reqwest::Response,
    status: StatusCode,
    code: &str,
) -> reqwest::header::HeaderMap {
    let headers = resp.headers().clone();
    let got = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        got,
        status,
        "expected {status} {code}, body: {}",
        String::from_utf8_lossy(&body)
    );
    assert_error_body(&body, code);
    headers
}

/// Asserts that `body` is an OCI error body whose first code is `code`, every entry
/// having a string `code` and a string `message`.
pub fn assert_error_body(body: &[u8], code: &str) {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not an OCI error body: {}", String::from_utf8_lossy(body)));
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"errors\" array: {v}"));
    assert!(!errors.is_empty(), "empty \"errors\": {v}");
    for e in errors {
        assert!(e["code"].is_string(), "error without a string code: {v}");
        assert!(
            e["message"].is_string(),
            "error without a string message: {v}"
        );
    }
    assert_eq!(errors[0]["code"], code, "error code in {v}");
}

/// A header's value as a string ("" when absent).
pub fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Resolves an upload `Location` (absolute or relative) to a URL.
pub fn absolute(r: &Registry, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else {
        format!("{}{}", r.url, location)
    }
}

/// Opens an upload session; returns its absolute URL.
pub async fn start_upload(c: &Client, r: &Registry, repo: &str) -> String {
    let resp = c
        .post(r.v2(&format!("{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "open upload in {repo}");
    let location = header(resp.headers(), "location").to_string();
    assert!(!location.is_empty(), "upload session without Location");
    absolute(r, &location)
}

/// Appends URL query parameters to an upload URL (which may already have a query).
pub fn with_query(url: &str, query: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Pushes an OCI 1.1 artifact manifest (empty config, `payload` as its one layer),
/// with a `subject` (digest, size) when given, under `reference` (a tag) or its own
/// digest; returns that digest.
pub async fn push_artifact(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: Option<&str>,
    artifact_type: &str,
    subject: Option<(&str, usize)>,
    payload: &[u8],
) -> String {
    push_blob(c, r, repo, b"{}").await;
    push_blob(c, r, repo, payload).await;
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor("application/octet-stream", payload)],
    });
    if let Some((digest, size)) = subject {
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size});
    }
    let body = serde_json::to_vec(&m).unwrap();
    let digest = sha256(&body);
    put_manifest(
        c,
        r,
        repo,
        reference.unwrap_or(&digest),
        OCI_MANIFEST,
        &body,
    )
    .await;
    digest
}

/// A two-platform (linux/amd64, linux/arm64) OCI index tagged `tag` in `repo`, its
/// children pushed by digest first; the index's bytes.
pub async fn push_two_platform_index(c: &Client, r: &Registry, repo: &str, tag: &str) -> Vec<u8> {
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!("{{\"architecture\":\"{arch}\",\"os\":\"linux\"}}");
        let layer = crate::random_bytes(2048);
        push_blob(c, r, repo, config.as_bytes()).await;
        push_blob(c, r, repo, &layer).await;
        let child = image_manifest(config.as_bytes(), &[&layer], json!({}));
        put_manifest(c, r, repo, &crate::sha256(&child), OCI_MANIFEST, &child).await;
        let mut d = descriptor(OCI_MANIFEST, &child);
        d["platform"] = json!({"os": "linux", "architecture": arch});
        children.push(d);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children,
    }))
    .unwrap();
    put_manifest(c, r, repo, tag, OCI_INDEX, &index).await;
    index
}
