//! Manifests over real HTTP: HEAD/GET/PUT/DELETE by tag and by digest, OCI and Docker
//! types, validation (missing blobs and children, schema 1, media type mismatches, size
//! limit, invalid tags, digests), exact bytes, and `OCI-Subject`. After every refused
//! request, nothing stored has changed.

use reqwest::StatusCode;
use serde_json::json;
use signet_api_tests::oci::{
    descriptor, expect_error, get, header, image_manifest, push_blob, push_image, put_manifest,
    send_manifest, snapshot, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, sha256, Registry};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// GET and HEAD of `repo:reference` answer `body` with `media_type`.
async fn assert_manifest(
    c: &reqwest::Client,
    r: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let url = r.v2(&format!("{repo}/manifests/{reference}"));
    let digest = sha256(body);
    let resp = c
        .get(&url)
        .header("Accept", media_type)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {repo}:{reference}");
    let h = resp.headers().clone();
    assert_eq!(
        header(&h, "content-type"),
        media_type,
        "GET {repo}:{reference}"
    );
    assert_eq!(header(&h, "docker-content-digest"), digest);
    assert_eq!(header(&h, "content-length"), body.len().to_string());
    assert_eq!(
        resp.bytes().await.unwrap(),
        body,
        "bytes of {repo}:{reference}"
    );

    let resp = c
        .head(&url)
        .header("Accept", media_type)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "HEAD {repo}:{reference}");
    let h = resp.headers().clone();
    assert_eq!(header(&h, "content-type"), media_type);
    assert_eq!(header(&h, "docker-content-digest"), digest);
    assert_eq!(header(&h, "content-length"), body.len().to_string());
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

/// Pushes a config and one layer to `repo`; returns their bytes.
async fn push_parts(c: &reqwest::Client, r: &Registry, repo: &str) -> (Vec<u8>, Vec<u8>) {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","n":"{}"}}"#,
        hex::encode(random_bytes(8))
    )
    .into_bytes();
    let layer = random_bytes(200).to_vec();
    push_blob(c, r, repo, &config).await;
    push_blob(c, r, repo, &layer).await;
    (config, layer)
}

#[tokio::test]
async fn oci_manifest_by_tag_and_by_digest() {
    let r = Registry::start();
    let c = client();
    let (config, layer) = push_parts(&c, &r, "img").await;
    let manifest = image_manifest(&config, &[&layer], json!({}));
    let digest = sha256(&manifest);
    let resp = send_manifest(&c, &r, "img", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    assert_eq!(
        header(resp.headers(), "location"),
        format!("/v2/img/manifests/{digest}")
    );
    assert_manifest(&c, &r, "img", "v1", OCI_MANIFEST, &manifest).await;
    assert_manifest(&c, &r, "img", &digest, OCI_MANIFEST, &manifest).await;

    // By digest: the digest is checked, no tag is made.
    let (config2, layer2) = push_parts(&c, &r, "img").await;
    let other = image_manifest(&config2, &[&layer2], json!({}));
    let other_digest = sha256(&other);
    let resp = send_manifest(&c, &r, "img", &other_digest, OCI_MANIFEST, &other).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        header(resp.headers(), "docker-content-digest"),
        other_digest
    );
    assert_manifest(&c, &r, "img", &other_digest, OCI_MANIFEST, &other).await;
    let (_, tags) = get(&c, &r.v2("img/tags/list")).await;
    let tags: serde_json::Value = serde_json::from_slice(&tags).unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));

    // Moving the tag.
    put_manifest(&c, &r, "img", "v1", OCI_MANIFEST, &other).await;
    assert_manifest(&c, &r, "img", "v1", OCI_MANIFEST, &other).await;
    // The old manifest stays reachable by digest.
    assert_manifest(&c, &r, "img", &digest, OCI_MANIFEST, &manifest).await;
    // Pushing the same manifest again is fine.
    let resp = send_manifest(&c, &r, "img", "v1", OCI_MANIFEST, &other).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn bytes_are_served_exactly_as_pushed() {
    let r = Registry::start();
    let c = client();
    let (config, layer) = push_parts(&c, &r, "exact").await;
    let cfg = descriptor(OCI_CONFIG, &config);
    let lay = descriptor(OCI_LAYER, &layer);
    // Unusual key order, whitespace, escapes and a trailing newline.
    let manifest = format!(
        "{{\n\t\"layers\" : [ {{ \"size\":{}, \"digest\":\"{}\",\"mediaType\":\"{}\" }} ],\r\n  \"config\":{{\"size\" :{},\"mediaType\":\"{}\",   \"digest\":\"{}\"}},\n\"annotations\":{{\"z\":\"\\u00e9\\/\",\"a\":\"1\"}},\"mediaType\":\"{}\",  \"schemaVersion\" :2\n}}\n\n",
        lay["size"], lay["digest"].as_str().unwrap(), OCI_LAYER,
        cfg["size"], OCI_CONFIG, cfg["digest"].as_str().unwrap(),
        OCI_MANIFEST
    )
    .into_bytes();
    let digest = sha256(&manifest);
    let resp = send_manifest(&c, &r, "exact", "odd", OCI_MANIFEST, &manifest).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    assert_manifest(&c, &r, "exact", "odd", OCI_MANIFEST, &manifest).await;
    assert_manifest(&c, &r, "exact", &digest, OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn put_by_digest_checks_the_digest() {
    let r = Registry::start();
    let c = client();
    let (config, layer) = push_parts(&c, &r, "dig").await;
    let manifest = image_manifest(&config, &[&layer], json!({}));
    let before = snapshot(&c, &r, &["dig"]).await;
    let wrong = sha256(b"not the manifest");
    let resp = send_manifest(&c, &r, "dig", &wrong, OCI_MANIFEST, &manifest).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    for bad in [
        "sha256:abc",
        "sha256:",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
    ] {
        let resp = send_manifest(&c, &r, "dig", bad, OCI_MANIFEST, &manifest).await;
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        signet_api_tests::oci::assert_error_body(&body, "DIGEST_INVALID");
    }
    assert_eq!(snapshot(&c, &r, &["dig"]).await, before);
    let resp = c
        .get(r.v2(&format!("dig/manifests/{}", sha256(&manifest))))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;

    // sha512 names the same manifest under another digest.
    use sha2::Digest as _;
    let d512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&manifest)));
    let resp = send_manifest(&c, &r, "dig", &d512, OCI_MANIFEST, &manifest).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "docker-content-digest"), d512);
    let (status, body) = get(&c, &r.v2(&format!("dig/manifests/{d512}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, manifest);
}

#[tokio::test]
async fn manifest_with_missing_blobs_is_refused() {
    let r = Registry::start();
    let c = client();
    let (config, layer) = push_parts(&c, &r, "partial").await;
    let missing_layer = random_bytes(50);
    let repos = ["partial", "brand/new"];
    let before = snapshot(&c, &r, &repos).await;

    let manifest = image_manifest(&config, &[&layer, &missing_layer], json!({}));
    let resp = send_manifest(&c, &r, "partial", "v1", OCI_MANIFEST, &manifest).await;
    let body = {
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        signet_api_tests::oci::assert_error_body(&body, "MANIFEST_BLOB_UNKNOWN");
        body
    };
    assert!(
        String::from_utf8_lossy(&body).contains(&sha256(&missing_layer)),
        "the error names the missing blob"
    );
    // Missing config.
    let manifest2 = image_manifest(b"{\"missing\":1}", &[&layer], json!({}));
    let resp = send_manifest(&c, &r, "partial", "v2", OCI_MANIFEST, &manifest2).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    // Blobs that exist, but in another repository: a new repository is not created.
    let manifest3 = image_manifest(&config, &[&layer], json!({}));
    let resp = send_manifest(&c, &r, "brand/new", "v1", OCI_MANIFEST, &manifest3).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    let resp = send_manifest(
        &c,
        &r,
        "brand/new",
        &sha256(&manifest3),
        OCI_MANIFEST,
        &manifest3,
    )
    .await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    assert_eq!(snapshot(&c, &r, &repos).await, before);
    for (repo, m) in [("partial", &manifest), ("partial", &manifest2)] {
        let resp = c
            .get(r.v2(&format!("{repo}/manifests/{}", sha256(m))))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
}

#[tokio::test]
async fn oci_index_children_must_exist() {
    let r = Registry::start();
    let c = client();
    let (config, layer) = push_parts(&c, &r, "multi").await;
    let amd64 = image_manifest(&config, &[&layer], json!({}));
    let (config2, layer2) = push_parts(&c, &r, "multi").await;
    let arm64 = image_manifest(&config2, &[&layer2], json!({}));
    let child = |m: &[u8], arch: &str| {
        let mut d = descriptor(OCI_MANIFEST, m);
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child(&amd64, "amd64"), child(&arm64, "arm64")],
    }))
    .unwrap();

    // No child pushed yet, then only one.
    let before = snapshot(&c, &r, &["multi"]).await;
    let resp = send_manifest(&c, &r, "multi", "latest", OCI_INDEX, &index).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    put_manifest(&c, &r, "multi", &sha256(&amd64), OCI_MANIFEST, &amd64).await;
    let before_one = snapshot(&c, &r, &["multi"]).await;
    assert_eq!(before, before_one, "a push by digest moves no tag");
    let resp = send_manifest(&c, &r, "multi", "latest", OCI_INDEX, &index).await;
    let h = expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    drop(h);
    assert_eq!(snapshot(&c, &r, &["multi"]).await, before_one);

    put_manifest(&c, &r, "multi", &sha256(&arm64), OCI_MANIFEST, &arm64).await;
    let resp = send_manifest(&c, &r, "multi", "latest", OCI_INDEX, &index).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_manifest(&c, &r, "multi", "latest", OCI_INDEX, &index).await;
    assert_manifest(&c, &r, "multi", &sha256(&index), OCI_INDEX, &index).await;
    assert_manifest(&c, &r, "multi", &sha256(&arm64), OCI_MANIFEST, &arm64).await;
}

#[tokio::test]
async fn docker_schema2_manifest_and_manifest_list() {
    let r = Registry::start();
    let c = client();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = random_bytes(120);
    push_blob(&c, &r, "docker", config).await;
    push_blob(&c, &r, "docker", &layer).await;
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }))
    .unwrap();
    let resp = send_manifest(&c, &r, "docker", "amd64", DOCKER_MANIFEST, &manifest).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_manifest(&c, &r, "docker", "amd64", DOCKER_MANIFEST, &manifest).await;

    let mut child = descriptor(DOCKER_MANIFEST, &manifest);
    child["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let list = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [child],
    }))
    .unwrap();
    let resp = send_manifest(&c, &r, "docker", "latest", DOCKER_LIST, &list).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_manifest(&c, &r, "docker", "latest", DOCKER_LIST, &list).await;

    // A list naming a manifest the repository lacks.
    let mut missing = descriptor(DOCKER_MANIFEST, b"{}");
    missing["platform"] = json!({"architecture": "arm64", "os": "linux"});
    let bad_list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [missing],
    }))
    .unwrap();
    let before = snapshot(&c, &r, &["docker"]).await;
    let resp = send_manifest(&c, &r, "docker", "broken", DOCKER_LIST, &bad_list).await;
    expect_error(resp, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
    assert_eq!(snapshot(&c, &r, &["docker"]).await, before);
}

#[tokio::test]
async fn invalid_manifests_are_refused() {
    let r = Registry::start();
    let c = client();
    let (config, layer) = push_parts(&c, &r, "val").await;
    let good = image_manifest(&config, &[&layer], json!({}));
    let schema1 = serde_json::to_vec(&json!({
        "schemaVersion": 1,
        "name": "val",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": sha256(&layer)}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [],
    }))
    .unwrap();
    let schema1_type = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("schema 1 signed", schema1_type, schema1.clone()),
        (
            "schema 1 unsigned",
            "application/vnd.docker.distribution.manifest.v1+json",
            schema1.clone(),
        ),
        ("schema 1 body as json", "application/json", schema1),
        ("Content-Type index, body image", OCI_INDEX, good.clone()),
        (
            "Content-Type docker, body OCI",
            DOCKER_MANIFEST,
            good.clone(),
        ),
        ("not JSON", OCI_MANIFEST, b"this is not json".to_vec()),
        (
            "truncated JSON",
            OCI_MANIFEST,
            good[..good.len() / 2].to_vec(),
        ),
        ("empty body", OCI_MANIFEST, Vec::new()),
        (
            "schemaVersion 3",
            OCI_MANIFEST,
            image_manifest(&config, &[&layer], json!({"schemaVersion": 3})),
        ),
        (
            "no config",
            OCI_MANIFEST,
            serde_json::to_vec(
                &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}),
            )
            .unwrap(),
        ),
        (
            "malformed layer digest",
            OCI_MANIFEST,
            serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": descriptor(OCI_CONFIG, &config),
                "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:nothex", "size": 1}],
            }))
            .unwrap(),
        ),
        (
            "unknown media type",
            "application/vnd.example.thing+json",
            good.clone(),
        ),
    ];
    let before = snapshot(&c, &r, &["val"]).await;
    for (what, content_type, body) in &cases {
        for reference in ["v1".to_string(), sha256(body)] {
            let resp = send_manifest(&c, &r, "val", &reference, content_type, body).await;
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap();
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{what} ({reference}): {bytes:?}"
            );
            signet_api_tests::oci::assert_error_body(&bytes, "MANIFEST_INVALID");
        }
    }
    assert_eq!(snapshot(&c, &r, &["val"]).await, before);
}

#[tokio::test]
async fn invalid_tags() {
    let r = Registry::start();
    let c = client();
    let (config, layer) = push_parts(&c, &r, "tags").await;
    let manifest = image_manifest(&config, &[&layer], json!({}));
    let before = snapshot(&c, &r, &["tags"]).await;
    let long = "a".repeat(129);
    for tag in [
        "-dash",
        ".dot",
        "has%20space",
        "t@g",
        "ümlaut",
        long.as_str(),
    ] {
        let resp = send_manifest(&c, &r, "tags", tag, OCI_MANIFEST, &manifest).await;
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "PUT tag {tag:?}: {body:?}");
        signet_api_tests::oci::assert_error_body(&body, "MANIFEST_INVALID");
    }
    assert_eq!(snapshot(&c, &r, &["tags"]).await, before);
    // The longest valid tag works.
    let longest = "b".repeat(128);
    put_manifest(&c, &r, "tags", &longest, OCI_MANIFEST, &manifest).await;
    put_manifest(&c, &r, "tags", "_under.score-Dash", OCI_MANIFEST, &manifest).await;
}

#[tokio::test]
async fn unknown_repository_and_manifest() {
    let r = Registry::start();
    let c = client();
    push_image(&c, &r, "known", "v1", &[b"layer"]).await;
    let unknown = sha256(b"nothing");
    for (url, code) in [
        (r.v2("nowhere/manifests/v1"), "NAME_UNKNOWN"),
        (
            r.v2(&format!("nowhere/manifests/{unknown}")),
            "NAME_UNKNOWN",
        ),
        (r.v2("known/manifests/v2"), "MANIFEST_UNKNOWN"),
        (
            r.v2(&format!("known/manifests/{unknown}")),
            "MANIFEST_UNKNOWN",
        ),
    ] {
        let resp = c.get(&url).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, code).await;
        let resp = c.head(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "HEAD {url}");
        let before = snapshot(&c, &r, &["known", "nowhere"]).await;
        let resp = c.delete(&url).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, code).await;
        assert_eq!(snapshot(&c, &r, &["known", "nowhere"]).await, before);
    }
    let resp = c
        .get(r.v2("known/manifests/sha256:short"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn delete_by_tag_and_by_digest() {
    let r = Registry::start();
    let c = client();
    let manifest = push_image(&c, &r, "del", "v1", &[b"l1"]).await;
    let digest = sha256(&manifest);
    put_manifest(&c, &r, "del", "v2", OCI_MANIFEST, &manifest).await;

    // Deleting a tag leaves the manifest and the other tag.
    let resp = c.delete(r.v2("del/manifests/v1")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = c.get(r.v2("del/manifests/v1")).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_manifest(&c, &r, "del", "v2", OCI_MANIFEST, &manifest).await;
    assert_manifest(&c, &r, "del", &digest, OCI_MANIFEST, &manifest).await;

    // Deleting by digest removes it and every tag pointing at it.
    let resp = c
        .delete(r.v2(&format!("del/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    for reference in [digest.as_str(), "v2"] {
        let resp = c
            .get(r.v2(&format!("del/manifests/{reference}")))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    }
    let (_, tags) = get(&c, &r.v2("del/tags/list")).await;
    let tags: serde_json::Value = serde_json::from_slice(&tags).unwrap();
    assert_eq!(tags["tags"], json!([]));
    let resp = c
        .delete(r.v2(&format!("del/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn oversize_manifest_default_limit() {
    let r = Registry::start();
    let c = client();
    let (config, layer) = push_parts(&c, &r, "big").await;
    let before = snapshot(&c, &r, &["big"]).await;
    // A valid manifest padded with an annotation to just over 4 MiB.
    let pad = |target: usize| {
        let base = image_manifest(&config, &[&layer], json!({"annotations": {"pad": ""}}));
        image_manifest(
            &config,
            &[&layer],
            json!({"annotations": {"pad": "x".repeat(target - base.len())}}),
        )
    };
    let limit = 4 * 1024 * 1024;
    let over = pad(limit + 1);
    assert_eq!(over.len(), limit + 1);
    let resp = send_manifest(&c, &r, "big", "over", OCI_MANIFEST, &over).await;
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    signet_api_tests::oci::assert_error_body(&body, "MANIFEST_INVALID");
    // The same without a declared length.
    let resp = c
        .put(r.v2("big/manifests/over"))
        .header("Content-Type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(
            over.chunks(64 * 1024)
                .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(snapshot(&c, &r, &["big"]).await, before);

    // Exactly at the limit is accepted.
    let at = pad(limit);
    assert_eq!(at.len(), limit);
    let resp = send_manifest(&c, &r, "big", "at", OCI_MANIFEST, &at).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_manifest(&c, &r, "big", "at", OCI_MANIFEST, &at).await;
}

#[tokio::test]
async fn oversize_manifest_configured_limit() {
    let r = Registry::start_with_config("[limits]\nmax_manifest_bytes = 1000\n");
    let c = client();
    let (config, layer) = push_parts(&c, &r, "small").await;
    let fits = image_manifest(&config, &[&layer], json!({}));
    assert!(fits.len() < 1000);
    put_manifest(&c, &r, "small", "fits", OCI_MANIFEST, &fits).await;
    let before = snapshot(&c, &r, &["small"]).await;
    let over = image_manifest(
        &config,
        &[&layer],
        json!({"annotations": {"pad": "y".repeat(1000 - fits.len())}}),
    );
    assert!(over.len() > 1000);
    let resp = send_manifest(&c, &r, "small", "over", OCI_MANIFEST, &over).await;
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    signet_api_tests::oci::assert_error_body(&body, "MANIFEST_INVALID");
    assert_eq!(snapshot(&c, &r, &["small"]).await, before);
}

#[tokio::test]
async fn subject_header_and_missing_subject() {
    let r = Registry::start();
    let c = client();
    // The subject does not exist (yet): the referrer is accepted anyway.
    let subject = image_manifest(b"{\"s\":1}", &[], json!({}));
    let subject_digest = sha256(&subject);
    let empty = b"{}";
    push_blob(&c, &r, "subj", empty).await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
        "layers": [],
        "subject": descriptor(OCI_MANIFEST, &subject),
    }))
    .unwrap();
    let resp = send_manifest(&c, &r, "subj", &sha256(&referrer), OCI_MANIFEST, &referrer).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "oci-subject"), subject_digest);
    assert_manifest(&c, &r, "subj", &sha256(&referrer), OCI_MANIFEST, &referrer).await;

    // A manifest without a subject has no OCI-Subject header.
    push_blob(&c, &r, "subj", b"{\"s\":1}").await;
    let resp = send_manifest(&c, &r, "subj", "plain", OCI_MANIFEST, &subject).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.headers().get("oci-subject").is_none());
}
