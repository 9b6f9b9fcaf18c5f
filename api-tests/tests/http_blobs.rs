//! `GET /v2/`, blob HEAD/GET/DELETE with ranges, digests and repository names, over real
//! HTTP against the real binary.

use reqwest::StatusCode;
use signet_api_tests::oci::{
    assert_error_body, expect_error, get, header, image_manifest, push_blob, put_manifest,
    snapshot, OCI_MANIFEST,
};
use signet_api_tests::{client, random_bytes, sha256, Registry};

#[tokio::test]
async fn version_check_and_api_version_header() {
    let r = Registry::start();
    let c = client();
    for url in [r.v2(""), format!("{}/v2", r.url)] {
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
        assert_eq!(
            header(resp.headers(), "docker-distribution-api-version"),
            "registry/2.0",
            "{url}"
        );
    }
    // Error responses carry it too, and the OCI error body.
    let resp = c.get(r.v2("no/such/endpoint")).send().await.unwrap();
    assert_eq!(
        header(resp.headers(), "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = resp.bytes().await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["errors"][0]["code"].is_string(), "{v}");
    assert!(v["errors"][0]["message"].is_string(), "{v}");
}

#[tokio::test]
async fn blob_head_and_get_headers() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(1000);
    let digest = push_blob(&c, &r, "app", &bytes).await;

    let resp = c
        .head(r.v2(&format!("app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(header(&h, "content-length"), "1000");
    assert_eq!(header(&h, "docker-content-digest"), digest);
    assert!(
        header(&h, "etag").contains(&digest),
        "ETag {:?}",
        header(&h, "etag")
    );
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");

    let resp = c
        .get(r.v2(&format!("app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(header(&h, "content-length"), "1000");
    assert_eq!(header(&h, "docker-content-digest"), digest);
    assert!(header(&h, "etag").contains(&digest));
    assert_eq!(resp.bytes().await.unwrap(), bytes);

    // The empty blob is a blob too.
    let empty = push_blob(&c, &r, "app", b"").await;
    let resp = c
        .get(r.v2(&format!("app/blobs/{empty}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(resp.headers(), "content-length"), "0");
    assert!(resp.bytes().await.unwrap().is_empty());
}

/// `GET url` with a `Range` header.
async fn get_range(c: &reqwest::Client, url: &str, range: &str) -> reqwest::Response {
    c.get(url).header("Range", range).send().await.unwrap()
}

#[tokio::test]
async fn blob_ranges() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(1000);
    let digest = push_blob(&c, &r, "ranges", &bytes).await;
    let url = r.v2(&format!("ranges/blobs/{digest}"));

    // (Range header, expected start, expected inclusive end)
    let cases: [(&str, usize, usize); 6] = [
        ("bytes=10-19", 10, 19),
        ("bytes=0-0", 0, 0),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=-5000", 0, 999),
        ("bytes=500-99999", 500, 999),
    ];
    for (range, start, end) in cases {
        let resp = get_range(&c, &url, range).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        let h = resp.headers().clone();
        assert_eq!(
            header(&h, "content-range"),
            format!("bytes {start}-{end}/1000"),
            "{range}"
        );
        assert_eq!(
            header(&h, "content-length"),
            (end - start + 1).to_string(),
            "{range}"
        );
        assert_eq!(header(&h, "docker-content-digest"), digest, "{range}");
        assert_eq!(resp.bytes().await.unwrap(), bytes[start..=end], "{range}");

        let resp = c.head(&url).header("Range", range).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "HEAD {range}");
        assert_eq!(
            header(resp.headers(), "content-range"),
            format!("bytes {start}-{end}/1000"),
            "HEAD {range}"
        );
        assert_eq!(
            header(resp.headers(), "content-length"),
            (end - start + 1).to_string(),
            "HEAD {range}"
        );
    }

    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let resp = get_range(&c, &url, range).await;
        let h = expect_error(resp, StatusCode::RANGE_NOT_SATISFIABLE, "SIZE_INVALID").await;
        assert_eq!(header(&h, "content-range"), "bytes */1000", "{range}");
    }

    // A range in a unit we do not know is ignored: the whole blob.
    let resp = get_range(&c, &url, "items=0-1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap(), bytes);
}

/// Blobs and ranges of many frames, around the sizes where reading changes its way
/// (frames read on the worker thread up to 4 MiB, read ahead on the blocking pool past
/// it), at offsets on no frame's edge: every byte in its place.
#[tokio::test]
async fn ranges_of_many_frames_at_any_offset() {
    let r = Registry::start();
    let c = client();
    for size in [
        700_001usize,
        4 * 1024 * 1024,
        4 * 1024 * 1024 + 3,
        6_000_000,
    ] {
        let bytes = random_bytes(size);
        let digest = push_blob(&c, &r, "frames", &bytes).await;
        let url = r.v2(&format!("frames/blobs/{digest}"));
        let (status, whole) = get(&c, &url).await;
        assert_eq!(status, StatusCode::OK, "{size}");
        assert!(whole == bytes[..], "whole blob of {size}");
        for (start, len) in [
            (1usize, 300_000usize),
            (262_143, 262_146),
            (99_999, size - 99_999),
        ] {
            let end = start + len - 1;
            let resp = get_range(&c, &url, &format!("bytes={start}-{end}")).await;
            assert_eq!(
                resp.status(),
                StatusCode::PARTIAL_CONTENT,
                "{size}: {start}+{len}"
            );
            assert!(
                resp.bytes().await.unwrap() == bytes[start..=end],
                "{size}: bytes {start}-{end}"
            );
        }
    }
}

/// The size a blob GET reads from a cache is forgotten with the blob: once deleted, the
/// next GET answers 404 at once.
#[tokio::test]
async fn a_deleted_blob_is_not_served_from_the_cache() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(5000);
    let digest = push_blob(&c, &r, "cached", &bytes).await;
    let url = r.v2(&format!("cached/blobs/{digest}"));
    for _ in 0..2 {
        let resp = get_range(&c, &url, "bytes=0-9").await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    }
    assert_eq!(
        c.delete(&url).send().await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let resp = get_range(&c, &url, "bytes=0-9").await;
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn blob_delete() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(300);
    let digest = push_blob(&c, &r, "del", &bytes).await;
    let other = push_blob(&c, &r, "keep", &bytes).await;
    assert_eq!(digest, other);
    let url = r.v2(&format!("del/blobs/{digest}"));

    let resp = c.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = c.get(&url).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let resp = c.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = c.delete(&url).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;

    // Another repository that holds the same blob still serves it.
    let (status, body) = get(&c, &r.v2(&format!("keep/blobs/{digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, bytes);
}

#[tokio::test]
async fn blob_bad_digests_and_unknown_blobs() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(64);
    let digest = push_blob(&c, &r, "owner", &bytes).await;
    let before = snapshot(&c, &r, &["owner", "other"]).await;

    let upper = digest.to_uppercase().replacen("SHA256", "sha256", 1);
    let malformed = [
        "sha256:abc".to_string(),
        "sha256:".to_string(),
        "nodigest".to_string(),
        upper,
        format!("{digest}00"),
        format!("md5:{}", "0".repeat(32)),
    ];
    for bad in &malformed {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let resp = c
                .request(method.clone(), r.v2(&format!("owner/blobs/{bad}")))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {bad}: {body:?}");
            assert_error_body(&body, "DIGEST_INVALID");
        }
        let resp = c
            .head(r.v2(&format!("owner/blobs/{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "HEAD {bad}");
    }

    // A well-formed digest nobody pushed, and a blob of another repository.
    let unknown = sha256(b"never pushed");
    for url in [
        r.v2(&format!("owner/blobs/{unknown}")),
        r.v2(&format!("other/blobs/{digest}")),
    ] {
        let resp = c.get(&url).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
        let resp = c.head(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "HEAD {url}");
        let resp = c.delete(&url).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    }

    assert_eq!(snapshot(&c, &r, &["owner", "other"]).await, before);
}

#[tokio::test]
async fn repository_names_of_any_depth() {
    let r = Registry::start();
    let c = client();
    let name = "a/b/c/d";
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = random_bytes(100);
    push_blob(&c, &r, name, config).await;
    let layer_digest = push_blob(&c, &r, name, &layer).await;
    let manifest = image_manifest(config, &[&layer], serde_json::json!({}));
    put_manifest(&c, &r, name, "v1", OCI_MANIFEST, &manifest).await;

    let (status, body) = get(&c, &r.v2(&format!("{name}/blobs/{layer_digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, layer);
    let (status, body) = get(&c, &r.v2(&format!("{name}/manifests/v1"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, manifest);
    let (status, body) = get(&c, &r.v2(&format!("{name}/tags/list"))).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["name"], name);
    assert_eq!(v["tags"], serde_json::json!(["v1"]));
    let (_, body) = get(&c, &r.v2("_catalog")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["repositories"], serde_json::json!([name]));

    // Deeper still, and separators of every allowed kind.
    for ok in ["x/y/z/w/v/u", "a.b_c__d-e---f/g", "0/1"] {
        push_blob(&c, &r, ok, b"x").await;
    }
}

#[tokio::test]
async fn invalid_repository_names() {
    let r = Registry::start();
    let c = client();
    push_blob(&c, &r, "good", b"seed").await;
    let before = snapshot(&c, &r, &["good"]).await;
    let long = "a".repeat(256);
    let invalid = [
        "UPPER",
        "a//b",
        "-a",
        "a-",
        "a..b",
        "a___b",
        "a/_b",
        "a/b/",
        "a%20b",
        long.as_str(),
    ];
    let digest = sha256(b"x");
    let manifest = image_manifest(b"{}", &[], serde_json::json!({}));
    for name in invalid {
        let requests = [
            c.post(r.v2(&format!("{name}/blobs/uploads/?digest={digest}")))
                .body("x"),
            c.post(r.v2(&format!("{name}/blobs/uploads/"))),
            c.get(r.v2(&format!("{name}/blobs/{digest}"))),
            c.get(r.v2(&format!("{name}/manifests/latest"))),
            c.put(r.v2(&format!("{name}/manifests/latest")))
                .header("Content-Type", OCI_MANIFEST)
                .body(manifest.clone()),
            c.delete(r.v2(&format!("{name}/manifests/latest"))),
            c.get(r.v2(&format!("{name}/tags/list"))),
            c.get(r.v2(&format!("{name}/referrers/{digest}"))),
        ];
        for req in requests {
            let req = req.build().unwrap();
            let what = format!("{} {}", req.method(), req.url());
            let resp = c.execute(req).await.unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body:?}");
            assert_error_body(&body, "NAME_INVALID");
        }
    }
    assert_eq!(snapshot(&c, &r, &["good"]).await, before);
}

#[tokio::test]
async fn unsupported_methods_answer_oci_errors() {
    let r = Registry::start();
    let c = client();
    let digest = push_blob(&c, &r, "m", b"abc").await;
    for (method, url, allow) in [
        (
            reqwest::Method::POST,
            r.v2(&format!("m/blobs/{digest}")),
            "GET, HEAD, DELETE",
        ),
        (
            reqwest::Method::PATCH,
            r.v2("m/manifests/latest"),
            "GET, HEAD, PUT, DELETE",
        ),
        (reqwest::Method::DELETE, r.v2("m/tags/list"), "GET"),
        (reqwest::Method::PUT, r.v2("_catalog"), "GET"),
    ] {
        let resp = c.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(
            header(resp.headers(), "docker-distribution-api-version"),
            "registry/2.0"
        );
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {url}"
        );
        // What the route does take.
        assert_eq!(header(resp.headers(), "allow"), allow, "{method} {url}");
        let body = resp.bytes().await.unwrap();
        assert_error_body(&body, "UNSUPPORTED");
    }
    // Still there.
    let (status, body) = get(&c, &r.v2(&format!("m/blobs/{digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"abc");
}

/// Reads one HTTP/1.1 response with a `content-length` off `conn`: its status and body.
fn read_response(conn: &mut std::io::BufReader<std::net::TcpStream>) -> (u16, Vec<u8>) {
    use std::io::{BufRead, Read};
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    let code: u16 = status.split(' ').nth(1).unwrap().parse().unwrap();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body).unwrap();
    (code, body)
}

/// Blob bytes go from the page cache to the socket after the response head: with
/// requests pipelined on one connection, a blob larger than the socket's buffers among
/// them, every response arrives whole and in order, nothing of one inside another.
#[tokio::test]
async fn pipelined_blob_reads_keep_their_order() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(3 * 1024 * 1024 + 17);
    let digest = push_blob(&c, &r, "piped", &bytes).await;
    let path = format!("/v2/piped/blobs/{digest}");
    let host = r.host.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let stream = std::net::TcpStream::connect(&host).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut requests = String::new();
        for (target, range) in [
            (&path[..], None),
            (&path[..], Some("100-299")),
            ("/v2/", None),
            (&path[..], Some("3145728-3145744")),
        ] {
            requests.push_str(&format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n"));
            if let Some(range) = range {
                requests.push_str(&format!("Range: bytes={range}\r\n"));
            }
            requests.push_str("\r\n");
        }
        (&stream).write_all(requests.as_bytes()).unwrap();
        let mut conn = std::io::BufReader::new(stream);
        let (status, body) = read_response(&mut conn);
        assert_eq!(status, 200);
        assert!(body == bytes, "the whole blob");
        let (status, body) = read_response(&mut conn);
        assert_eq!(status, 206);
        assert_eq!(body, bytes[100..300]);
        let (status, body) = read_response(&mut conn);
        assert_eq!((status, &body[..]), (200, &b"{}"[..]));
        let (status, body) = read_response(&mut conn);
        assert_eq!(status, 206);
        assert_eq!(body, bytes[3145728..3145745]);
    })
    .await
    .unwrap();
}
