//! Blob uploads over real HTTP: sessions, monolithic and chunked uploads, streamed
//! chunks without a length, out-of-order chunks, digest checks, cancellation, mounts and
//! sha512. After every refused request, nothing stored has changed.

use bytes::Bytes;
use reqwest::{Body, StatusCode};
use sha2::{Digest as _, Sha512};
use signet_api_tests::oci::{
    absolute, expect_error, get, header, push_blob, snapshot, staged_upload_files, start_upload,
    stored_blob_files, with_query,
};
use signet_api_tests::{client, random_bytes, sha256, Registry};

fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
}

/// A body sent with `Transfer-Encoding: chunked`: no length announced.
fn streamed(pieces: Vec<Bytes>) -> Body {
    Body::wrap_stream(futures::stream::iter(
        pieces.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

async fn assert_blob(c: &reqwest::Client, r: &Registry, repo: &str, digest: &str, bytes: &[u8]) {
    let resp = c
        .get(r.v2(&format!("{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {repo}@{digest}");
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    assert_eq!(
        resp.bytes().await.unwrap(),
        bytes,
        "content of {repo}@{digest}"
    );
}

async fn patch(c: &reqwest::Client, url: &str, bytes: &[u8], start: usize) -> reqwest::Response {
    c.patch(url)
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            format!("{}-{}", start, start + bytes.len() - 1),
        )
        .header("Content-Length", bytes.len().to_string())
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn post_opens_a_session() {
    let r = Registry::start();
    let c = client();
    let resp = c.post(r.v2("app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let h = resp.headers();
    let location = header(h, "location");
    assert!(
        location.contains("/v2/app/blobs/uploads/"),
        "Location {location:?}"
    );
    let uuid = header(h, "docker-upload-uuid");
    assert!(!uuid.is_empty(), "Docker-Upload-UUID");
    assert!(
        location.contains(uuid),
        "Location {location:?} names the session {uuid}"
    );
    assert_eq!(header(h, "range"), "0-0");
    let min: u64 = header(h, "oci-chunk-min-length")
        .parse()
        .expect("OCI-Chunk-Min-Length is a number");
    assert!(min > 0);

    // The session reports its (empty) progress.
    let url = absolute(&r, location);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(resp.headers(), "range"), "0-0");
    assert_eq!(header(resp.headers(), "docker-upload-uuid"), uuid);
    assert!(!header(resp.headers(), "location").is_empty());

    // Without the trailing slash too.
    let resp = c.post(r.v2("app/blobs/uploads")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn monolithic_post_with_digest() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(5000);
    let digest = sha256(&bytes);
    let resp = c
        .post(r.v2(&format!("mono/blobs/uploads/?digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    assert_eq!(
        header(resp.headers(), "location"),
        format!("/v2/mono/blobs/{digest}")
    );
    assert_blob(&c, &r, "mono", &digest, &bytes).await;
    assert!(staged_upload_files(&r).is_empty(), "nothing left staged");
}

#[tokio::test]
async fn post_then_put_with_whole_body() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(3000);
    let digest = sha256(&bytes);
    let url = start_upload(&c, &r, "two/step").await;
    let resp = c
        .put(with_query(&url, &format!("digest={digest}")))
        .header("Content-Type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    assert!(header(resp.headers(), "location").ends_with(&format!("/blobs/{digest}")));
    assert_blob(&c, &r, "two/step", &digest, &bytes).await;
    // The session is closed.
    let resp = c.get(&url).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert!(staged_upload_files(&r).is_empty(), "nothing left staged");
}

#[tokio::test]
async fn chunked_patch_with_content_range() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(1000);
    let digest = sha256(&bytes);
    let mut url = start_upload(&c, &r, "chunked").await;
    let mut at = 0;
    for len in [100, 150, 1, 349, 400] {
        let resp = patch(&c, &url, &bytes[at..at + len], at).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "chunk at {at}");
        at += len;
        assert_eq!(header(resp.headers(), "range"), format!("0-{}", at - 1));
        assert!(!header(resp.headers(), "docker-upload-uuid").is_empty());
        url = absolute(&r, header(resp.headers(), "location"));

        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(resp.headers(), "range"), format!("0-{}", at - 1));
    }
    // Nothing is stored before the final PUT.
    assert!(stored_blob_files(&r).is_empty());
    let resp = c
        .put(with_query(&url, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    assert_blob(&c, &r, "chunked", &digest, &bytes).await;
    assert!(staged_upload_files(&r).is_empty(), "nothing left staged");
}

#[tokio::test]
async fn streamed_patch_without_length() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(300_000);
    let digest = sha256(&bytes);
    let url = start_upload(&c, &r, "stream").await;

    let pieces: Vec<Bytes> = bytes[..200_000]
        .chunks(7_000)
        .map(Bytes::copy_from_slice)
        .collect();
    let resp = c.patch(&url).body(streamed(pieces)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(resp.headers(), "range"), "0-199999");
    let url = absolute(&r, header(resp.headers(), "location"));

    // The final chunk rides on the PUT, streamed as well.
    let pieces: Vec<Bytes> = bytes[200_000..]
        .chunks(33_333)
        .map(Bytes::copy_from_slice)
        .collect();
    let resp = c
        .put(with_query(&url, &format!("digest={digest}")))
        .body(streamed(pieces))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&c, &r, "stream", &digest, &bytes).await;
}

#[tokio::test]
async fn put_with_final_chunk_with_and_without_content_range() {
    let r = Registry::start();
    let c = client();
    for with_range in [true, false] {
        let bytes = random_bytes(777);
        let digest = sha256(&bytes);
        let url = start_upload(&c, &r, "final").await;
        let resp = patch(&c, &url, &bytes[..500], 0).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let url = absolute(&r, header(resp.headers(), "location"));
        let mut put = c
            .put(with_query(&url, &format!("digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(bytes[500..].to_vec());
        if with_range {
            put = put.header("Content-Range", "500-776");
        }
        let resp = put.send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "with_range={with_range}"
        );
        assert_blob(&c, &r, "final", &digest, &bytes).await;
    }
}

/// A final PUT sent again after its body was appended (a balancer resends a PUT to
/// another replica when the first died before answering) stores the blob once, instead
/// of appending the chunk twice and refusing the digest.
#[tokio::test]
async fn a_final_put_resent_after_its_body_was_appended_stores_the_blob() {
    let r = Registry::start();
    let c = client();
    for with_range in [true, false] {
        let bytes = random_bytes(777);
        let digest = sha256(&bytes);
        let url = start_upload(&c, &r, "resent").await;
        // What the first attempt left: every byte appended, the blob not yet stored.
        let resp = patch(&c, &url, &bytes, 0).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let url = absolute(&r, header(resp.headers(), "location"));
        let mut put = c
            .put(with_query(&url, &format!("digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(bytes[500..].to_vec());
        if with_range {
            put = put.header("Content-Range", "500-776");
        }
        let resp = put.send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "with_range={with_range}"
        );
        assert_blob(&c, &r, "resent", &digest, &bytes).await;
    }
    // Bytes that hash to another digest are still refused.
    let bytes = random_bytes(100);
    let url = start_upload(&c, &r, "resent").await;
    let resp = patch(&c, &url, &bytes, 0).await;
    let url = absolute(&r, header(resp.headers(), "location"));
    let resp = c
        .put(with_query(&url, &format!("digest={}", sha256(b"other"))))
        .body(bytes[50..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn out_of_order_chunks_are_refused_with_416() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(300);
    let digest = sha256(&bytes);
    let url = start_upload(&c, &r, "order").await;
    let resp = patch(&c, &url, &bytes[..100], 0).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let url = absolute(&r, header(resp.headers(), "location"));

    let before = snapshot(&c, &r, &["order"]).await;
    let staged = staged_upload_files(&r);
    // A gap, a repeat, and an overlap.
    for start in [200usize, 0, 50] {
        let resp = patch(&c, &url, &bytes[start..start + 100], start).await;
        let h = expect_error(
            resp,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
        )
        .await;
        assert_eq!(header(&h, "range"), "0-99", "chunk at {start}");
        assert!(
            header(&h, "location").contains("/blobs/uploads/"),
            "Location on 416: {:?}",
            header(&h, "location")
        );
    }
    // A final chunk out of order on the PUT is refused the same way.
    let resp = c
        .put(with_query(&url, &format!("digest={digest}")))
        .header("Content-Range", "150-299")
        .body(bytes[150..].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(
        resp,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UPLOAD_INVALID",
    )
    .await;
    assert_eq!(snapshot(&c, &r, &["order"]).await, before);
    assert_eq!(
        staged_upload_files(&r),
        staged,
        "refused chunks left nothing staged"
    );

    // Content-Range and Content-Length that disagree; a malformed Content-Range.
    let resp = c
        .patch(&url)
        .header("Content-Range", "100-299")
        .body(bytes[100..150].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID").await;
    let resp = c
        .patch(&url)
        .header("Content-Range", "bogus")
        .body(bytes[100..150].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID").await;

    // The session is where it was, and continues.
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(resp.headers(), "range"), "0-99");
    let resp = patch(&c, &url, &bytes[100..], 100).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(resp.headers(), "range"), "0-299");
    let resp = c
        .put(with_query(&url, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&c, &r, "order", &digest, &bytes).await;
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let r = Registry::start();
    let c = client();
    let keep = push_blob(&c, &r, "existing", b"keep me").await;
    let repos = ["existing", "fresh"];
    let before = snapshot(&c, &r, &repos).await;
    let bytes = random_bytes(2000);
    let wrong = sha256(b"something else");

    // Monolithic, to a repository that does not exist yet and to one that does.
    for repo in repos {
        let resp = c
            .post(r.v2(&format!("{repo}/blobs/uploads/?digest={wrong}")))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
    // sha512 named, other bytes.
    let resp = c
        .post(r.v2(&format!(
            "existing/blobs/uploads/?digest={}",
            sha512(b"other")
        )))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // Malformed digests.
    for bad in ["sha256:1234", "sha256", "foo:bar"] {
        let resp = c
            .post(r.v2(&format!("existing/blobs/uploads/?digest={bad}")))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
    assert_eq!(snapshot(&c, &r, &repos).await, before);

    // Chunked, wrong digest at the end: single part and several parts.
    for parts in [1, 3] {
        let url = start_upload(&c, &r, "existing").await;
        let before = snapshot(&c, &r, &repos).await;
        let size = bytes.len() / parts;
        let mut url = url;
        for i in 0..parts {
            let resp = patch(&c, &url, &bytes[i * size..(i + 1) * size], i * size).await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            url = absolute(&r, header(resp.headers(), "location"));
        }
        let resp = c
            .put(with_query(&url, &format!("digest={wrong}")))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
        assert_eq!(snapshot(&c, &r, &repos).await, before, "{parts} part(s)");
        // Neither digest is served.
        for d in [&wrong, &sha256(&bytes[..size * parts])] {
            let resp = c
                .get(r.v2(&format!("existing/blobs/{d}")))
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
        }
    }

    // PUT without a digest, or with a malformed one.
    let url = start_upload(&c, &r, "existing").await;
    let before = snapshot(&c, &r, &repos).await;
    for put_url in [url.clone(), with_query(&url, "digest=sha256:zz")] {
        let resp = c.put(&put_url).body(bytes.clone()).send().await.unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
    assert_eq!(snapshot(&c, &r, &repos).await, before);
    assert_blob(&c, &r, "existing", &keep, b"keep me").await;
}

#[tokio::test]
async fn cancelled_upload_leaves_nothing() {
    let r = Registry::start();
    let c = client();
    let before = snapshot(&c, &r, &["cancel"]).await;
    let url = start_upload(&c, &r, "cancel").await;
    let bytes = random_bytes(500);
    let resp = patch(&c, &url, &bytes, 0).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let url = absolute(&r, header(resp.headers(), "location"));

    let resp = c.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = c.get(&url).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = patch(&c, &url, &bytes, 500).await;
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = c
        .put(with_query(&url, &format!("digest={}", sha256(&bytes))))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = c.delete(&url).send().await.unwrap();
    expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;

    assert_eq!(snapshot(&c, &r, &["cancel"]).await, before);
    assert!(staged_upload_files(&r).is_empty(), "staged bytes removed");
}

#[tokio::test]
async fn unknown_sessions() {
    let r = Registry::start();
    let c = client();
    let url = start_upload(&c, &r, "mine").await;
    let id = url.rsplit('/').next().unwrap().to_string();
    let digest = sha256(b"x");
    for session_url in [
        r.v2("mine/blobs/uploads/00000000-0000-0000-0000-000000000000"),
        r.v2("mine/blobs/uploads/not-a-session"),
        // A session belongs to its repository.
        r.v2(&format!("theirs/blobs/uploads/{id}")),
    ] {
        let resp = c.get(&session_url).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        let resp = patch(&c, &session_url, b"abc", 0).await;
        expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        let resp = c
            .put(with_query(&session_url, &format!("digest={digest}")))
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
        let resp = c.delete(&session_url).send().await.unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    }
    // The real session is untouched.
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn cross_repository_mount() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(4096);
    let digest = push_blob(&c, &r, "source/repo", &bytes).await;

    // With `from`.
    let resp = c
        .post(r.v2(&format!(
            "target/one/blobs/uploads/?mount={digest}&from=source/repo"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    assert_eq!(
        header(resp.headers(), "location"),
        format!("/v2/target/one/blobs/{digest}")
    );
    assert_blob(&c, &r, "target/one", &digest, &bytes).await;

    // Without `from`: the blob exists somewhere, so it is mounted.
    let resp = c
        .post(r.v2(&format!("target/two/blobs/uploads/?mount={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&c, &r, "target/two", &digest, &bytes).await;

    // An unknown blob, or a `from` that does not hold it: a session to upload into.
    let unknown_bytes = random_bytes(100);
    let unknown = sha256(&unknown_bytes);
    let files = stored_blob_files(&r);
    for query in [
        format!("mount={unknown}&from=source/repo"),
        format!("mount={unknown}"),
        format!("mount={digest}&from=nowhere"),
    ] {
        let before = snapshot(&c, &r, &["target/three"]).await;
        let resp = c
            .post(r.v2(&format!("target/three/blobs/uploads/?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{query}");
        let location = header(resp.headers(), "location").to_string();
        assert!(location.contains("/blobs/uploads/"), "{query}: {location}");
        assert_eq!(header(resp.headers(), "range"), "0-0");
        let resp = c
            .get(r.v2(&format!("target/three/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "{query}: nothing mounted"
        );
        assert_eq!(
            snapshot(&c, &r, &["target/three"]).await.blob_files,
            before.blob_files
        );
        if query == format!("mount={unknown}") {
            // The fallback session takes the upload.
            let resp = c
                .put(with_query(
                    &absolute(&r, &location),
                    &format!("digest={unknown}"),
                ))
                .body(unknown_bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
        }
    }
    assert_blob(&c, &r, "target/three", &unknown, &unknown_bytes).await;
    assert_eq!(stored_blob_files(&r).len(), files.len() + 1);

    // A malformed mount digest.
    let resp = c
        .post(r.v2("target/four/blobs/uploads/?mount=sha256:nope&from=source/repo"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn sha512_blobs() {
    let r = Registry::start();
    let c = client();
    // Monolithic.
    let bytes = random_bytes(10_000);
    let digest = sha512(&bytes);
    let resp = c
        .post(r.v2(&format!("sha512/blobs/uploads/?digest={digest}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    assert_blob(&c, &r, "sha512", &digest, &bytes).await;
    let resp = c
        .get(r.v2(&format!("sha512/blobs/{digest}")))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.bytes().await.unwrap(), bytes[100..200]);

    // Chunked, single part and several parts.
    for parts in [1usize, 4] {
        let bytes = random_bytes(8000);
        let digest = sha512(&bytes);
        let mut url = start_upload(&c, &r, "sha512").await;
        let size = bytes.len() / parts;
        for i in 0..parts {
            let resp = patch(&c, &url, &bytes[i * size..(i + 1) * size], i * size).await;
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            url = absolute(&r, header(resp.headers(), "location"));
        }
        let resp = c
            .put(with_query(&url, &format!("digest={digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{parts} part(s)");
        assert_blob(&c, &r, "sha512", &digest, &bytes).await;
    }
    // The same bytes under sha256 are a different blob, stored separately.
    let digest256 = push_blob(&c, &r, "sha512", &bytes).await;
    let (status, body) = get(&c, &r.v2(&format!("sha512/blobs/{digest256}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, bytes);
}

#[tokio::test]
async fn empty_blob_through_a_session() {
    let r = Registry::start();
    let c = client();
    let digest = sha256(b"");
    let url = start_upload(&c, &r, "empty").await;
    let resp = c
        .put(with_query(&url, &format!("digest={digest}")))
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&c, &r, "empty", &digest, b"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_chunks_for_the_same_offset() {
    let r = Registry::start();
    let c = client();
    let bytes = random_bytes(200_000);
    let digest = sha256(&bytes);
    let url = start_upload(&c, &r, "race").await;
    let resp = patch(&c, &url, &bytes[..50_000], 0).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // Several clients send the same next chunk at once (a retry storm): exactly the
    // accepted ones move the session, the others are told where it stands.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, url, chunk) = (c.clone(), url.clone(), bytes[50_000..100_000].to_vec());
        tasks.push(tokio::spawn(async move {
            let resp = c
                .patch(&url)
                .header("Content-Range", "50000-99999")
                .header("Content-Length", "50000")
                .body(chunk)
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let range = header(resp.headers(), "range").to_string();
            (status, range)
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let (status, range) = t.await.unwrap();
        match status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::RANGE_NOT_SATISFIABLE => {}
            other => panic!("racing chunk answered {other}"),
        }
        assert_eq!(range, "0-99999", "{status}");
    }
    assert_eq!(accepted, 1, "exactly one racing chunk is appended");
    let resp = patch(&c, &url, &bytes[100_000..], 100_000).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = c
        .put(with_query(&url, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&c, &r, "race", &digest, &bytes).await;
}

#[tokio::test]
async fn empty_patch_changes_nothing() {
    let r = Registry::start();
    let c = client();
    let url = start_upload(&c, &r, "nop").await;
    let resp = patch(&c, &url, b"abc", 0).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = c
        .patch(&url)
        .header("Content-Length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(resp.headers(), "range"), "0-2");
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(header(resp.headers(), "range"), "0-2");
}
