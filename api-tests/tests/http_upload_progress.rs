//! Chunked uploads over real HTTP on the local filesystem: every chunk is appended to one
//! staged file (no part objects to read back and concatenate), the final `PUT` verifies
//! the running hash, and `digest-algorithm` on the `POST` announces a sha512 digest.

use reqwest::StatusCode;
use sha2::{Digest as _, Sha512};
use signet_api_tests::oci::{absolute, expect_error, header, staged_upload_files, with_query};
use signet_api_tests::{client, random_bytes, sha256, Registry};

async fn patch(c: &reqwest::Client, url: &str, bytes: &[u8], start: usize) -> String {
    let resp = c
        .patch(url)
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            format!("{}-{}", start, start + bytes.len() - 1),
        )
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "PATCH at {start}");
    header(resp.headers(), "location").to_string()
}

async fn chunked_push(r: &Registry, post_query: &str, bytes: &[u8], digest: &str) {
    let c = client();
    let resp = c
        .post(r.v2(&format!("app/blobs/uploads/{post_query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let mut url = absolute(r, header(resp.headers(), "location"));
    let chunk = bytes.len() / 3 + 1;
    for (i, piece) in bytes.chunks(chunk).enumerate() {
        url = absolute(r, &patch(&c, &url, piece, i * chunk).await);
        // One staged file per session, as long as what was received.
        let staged = staged_upload_files(r);
        let received = ((i + 1) * chunk).min(bytes.len()) as u64;
        assert_eq!(staged.len(), 1, "{staged:?}");
        let (name, size) = staged.iter().next().unwrap();
        assert!(name.ends_with("/data"), "{name}");
        assert_eq!(*size, received, "{name}");
    }
    let resp = c
        .put(with_query(&url, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(staged_upload_files(r).is_empty());
    let resp = c
        .get(r.v2(&format!("app/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap() == bytes);
}

#[tokio::test]
async fn chunks_append_to_one_staged_file() {
    let r = Registry::start();
    let bytes = random_bytes(3 * 1024 * 1024 + 11);
    chunked_push(&r, "", &bytes, &sha256(&bytes)).await;
}

#[tokio::test]
async fn digest_algorithm_announces_sha512() {
    let r = Registry::start();
    let bytes = random_bytes(1024 * 1024 + 5);
    let digest = format!("sha512:{}", hex::encode(Sha512::digest(&bytes)));
    chunked_push(&r, "?digest-algorithm=sha512", &bytes, &digest).await;
    // Announced sha256 is the default; a sha512 digest without the announcement is
    // still verified (by reading the staged bytes once).
    let bytes = random_bytes(70_000);
    chunked_push(&r, "?digest-algorithm=sha256", &bytes, &sha256(&bytes)).await;
    let digest = format!("sha512:{}", hex::encode(Sha512::digest(&bytes)));
    chunked_push(&r, "", &bytes, &digest).await;
}

#[tokio::test]
async fn unknown_digest_algorithm_is_refused() {
    let r = Registry::start();
    let c = client();
    let resp = c
        .post(r.v2("app/blobs/uploads/?digest-algorithm=md5"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    assert!(staged_upload_files(&r).is_empty());
}
