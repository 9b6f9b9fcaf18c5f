//! Push: blob uploads (monolithic, single POST, chunked, streamed), upload
//! sessions, mounts, and manifests (by tag, by digest, indexes, validation).

use std::sync::Arc;

use anyhow::{bail, ensure, Result};
use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::check;
use crate::client::{
    sha256, sha512, with_digest, Resp, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use crate::context::{once, Area, Check, Ctx};
use crate::fixtures::{
    index_for, manifest_for, oci_image, random_bytes, unknown_digest, Blob, Image, Manifest,
};

#[derive(Default)]
pub struct State {
    base: OnceCell<Result<Arc<Base>, String>>,
}

/// An image whose blobs are in `repo`; manifests built on it only need a PUT.
struct Base {
    repo: String,
    image: Image,
}

async fn base(c: &Ctx) -> Result<Arc<Base>> {
    once(&c.push.base, || async {
        let repo = c.repo("push");
        let image = oci_image(1, 512);
        c.push_image(&repo, &image.manifest.digest, &image).await?;
        Ok(Base { repo, image })
    })
    .await
}

/// A fresh manifest over the base image's blobs (differs by an annotation).
fn variant(b: &Base, note: &str) -> Manifest {
    manifest_for(
        OCI_MANIFEST,
        &b.image.config,
        &b.image.layers,
        Some(
            json!({"annotations": {"org.signet.conformance.variant": format!("{note}-{}", crate::fixtures::random_hex(4))}}),
        ),
    )
}

pub fn checks() -> Vec<Check> {
    let a = Area::Push;
    vec![
        check!(
            a,
            "upload_post_202",
            "POST /blobs/uploads/ opens a session: 202 with Location",
            upload_post_202
        ),
        check!(
            a,
            "monolithic_post_put",
            "POST then PUT ?digest= with the body: 201, blob then readable",
            monolithic_post_put
        ),
        check!(
            a,
            "monolithic_put_location",
            "the 201 of a completed upload carries Location",
            monolithic_put_location
        ),
        check!(
            a,
            "monolithic_put_digest_header",
            "the 201 of a completed upload carries Docker-Content-Digest (SHOULD)",
            monolithic_put_digest_header
        ),
        check!(
            a,
            "single_post_digest",
            "POST ?digest= with the body: 201, or 202 and the POST-PUT fallback works",
            single_post_digest
        ),
        check!(
            a,
            "chunked_patch",
            "PATCH chunks with Content-Range, then PUT ?digest=: 201 and the bytes are right",
            chunked_patch
        ),
        check!(
            a,
            "chunked_patch_range_header",
            "each PATCH answers 202 with Location and Range: 0-<end>",
            chunked_patch_range_header
        ),
        check!(
            a,
            "chunked_final_put_with_body",
            "the last chunk may travel in the closing PUT",
            chunked_final_put_with_body
        ),
        check!(
            a,
            "chunked_transfer_encoding",
            "PATCH with Transfer-Encoding: chunked and no length is accepted",
            chunked_transfer_encoding
        ),
        check!(
            a,
            "chunked_transfer_encoding_twice",
            "two streamed PATCHes append in order",
            chunked_transfer_encoding_twice
        ),
        check!(
            a,
            "chunk_out_of_order",
            "a PATCH whose Content-Range skips ahead: 416",
            chunk_out_of_order
        ),
        check!(
            a,
            "chunk_rejected_upload_intact",
            "after a 416 the session still holds its bytes and can finish",
            chunk_rejected_upload_intact
        ),
        check!(
            a,
            "upload_status",
            "GET upload URL: 204 with Location and Range: 0-<end>",
            upload_status
        ),
        check!(
            a,
            "upload_cancel",
            "DELETE upload URL: 204, then the session is 404 BLOB_UPLOAD_UNKNOWN",
            upload_cancel
        ),
        check!(
            a,
            "upload_unknown_session",
            "GET an upload session never issued: 404 BLOB_UPLOAD_UNKNOWN (or _INVALID)",
            upload_unknown_session
        ),
        check!(
            a,
            "digest_mismatch",
            "PUT ?digest= that does not match the bytes: 400 DIGEST_INVALID",
            digest_mismatch
        ),
        check!(
            a,
            "digest_mismatch_not_stored",
            "after a digest mismatch the claimed digest does not exist",
            digest_mismatch_not_stored
        ),
        check!(
            a,
            "upload_malformed_digest",
            "PUT ?digest=<malformed>: 400 DIGEST_INVALID",
            upload_malformed_digest
        ),
        check!(
            a,
            "empty_blob",
            "a zero-length blob can be pushed and pulled",
            empty_blob
        ),
        check!(
            a,
            "sha512_blob",
            "a blob pushed with a sha512 digest: 201, then HEAD and GET by that digest",
            sha512_blob
        ),
        check!(
            a,
            "mount_from",
            "POST ?mount=&from=: 201 with Location, blob then in the target",
            mount_from
        ),
        check!(
            a,
            "mount_without_from",
            "POST ?mount= without from: 201 (mounted) or 202 (session)",
            mount_without_from
        ),
        check!(
            a,
            "mount_unknown_blob",
            "mount of a blob the source lacks: 202 with an upload session",
            mount_unknown_blob
        ),
        check!(
            a,
            "manifest_put_by_tag",
            "PUT manifest by tag: 201 with Location",
            manifest_put_by_tag
        ),
        check!(
            a,
            "manifest_put_digest_header",
            "PUT manifest answers Docker-Content-Digest with its digest (SHOULD)",
            manifest_put_digest_header
        ),
        check!(
            a,
            "manifest_put_by_digest",
            "PUT manifest by digest: 201, then GET by digest",
            manifest_put_by_digest
        ),
        check!(
            a,
            "manifest_put_digest_mismatch",
            "PUT manifest under a digest that is not its own: 400 DIGEST_INVALID",
            manifest_put_digest_mismatch
        ),
        check!(
            a,
            "manifest_put_idempotent",
            "PUT the same manifest twice: 201 both times",
            manifest_put_idempotent
        ),
        check!(
            a,
            "tag_overwrite",
            "PUT another manifest to a tag moves it; the old one stays by digest",
            tag_overwrite
        ),
        check!(
            a,
            "index_with_children",
            "PUT an image index whose children exist: 201",
            index_with_children
        ),
        check!(
            a,
            "index_missing_child",
            "PUT an index naming an unknown manifest: 400 MANIFEST_BLOB_UNKNOWN",
            index_missing_child
        ),
        check!(
            a,
            "manifest_blob_unknown",
            "PUT a manifest whose layer is missing: 400 MANIFEST_BLOB_UNKNOWN",
            manifest_blob_unknown
        ),
        check!(
            a,
            "manifest_config_unknown",
            "PUT a manifest whose config is missing: 400 MANIFEST_BLOB_UNKNOWN",
            manifest_config_unknown
        ),
        check!(
            a,
            "manifest_invalid_json",
            "PUT a body that is not JSON: 400 MANIFEST_INVALID",
            manifest_invalid_json
        ),
        check!(
            a,
            "manifest_large_accepted",
            "a 3.5 MiB manifest is accepted and returned intact (limit SHOULD be >= 4 MiB)",
            manifest_large_accepted
        ),
        check!(
            a,
            "manifest_oversize",
            "an 8 MiB manifest: 413, or accepted and returned intact",
            manifest_oversize
        ),
        check!(
            a,
            "artifact_manifest",
            "an artifact (artifactType, empty config) is accepted and returned",
            artifact_manifest
        ),
        check!(
            a,
            "subject_unknown_accepted",
            "a manifest whose subject does not exist MUST be accepted",
            subject_unknown_accepted
        ),
        check!(
            a,
            "tag_max_length",
            "a 128-character tag is accepted",
            tag_max_length
        ),
        check!(
            a,
            "tag_invalid",
            "a tag starting with '.' is rejected with 4xx",
            tag_invalid
        ),
        check!(
            a,
            "tag_too_long",
            "a 129-character tag is rejected with 4xx",
            tag_too_long
        ),
        check!(
            a,
            "repo_name_uppercase",
            "a repository name with capitals is rejected with 4xx",
            repo_name_uppercase
        ),
        check!(
            a,
            "repo_name_bad_separator",
            "a repository name with '..' is rejected with 4xx",
            repo_name_bad_separator
        ),
        check!(
            a,
            "blob_location_pullable",
            "the Location of a completed upload is a pullable blob URL",
            blob_location_pullable
        ),
        check!(
            a,
            "manifest_location_pullable",
            "the Location of a manifest PUT is a pullable manifest URL",
            manifest_location_pullable
        ),
        check!(
            a,
            "mount_location_pullable",
            "the Location of a mount is a pullable blob URL",
            mount_location_pullable
        ),
        check!(
            a,
            "upload_sessions_unique",
            "two POSTs open two different sessions",
            upload_sessions_unique
        ),
        check!(
            a,
            "blob_repush_existing",
            "pushing a blob the repository already has: 201 again",
            blob_repush_existing
        ),
        check!(
            a,
            "concurrent_same_blob",
            "two interleaved sessions uploading the same blob both succeed",
            concurrent_same_blob
        ),
        check!(
            a,
            "tag_mixed_case",
            "a tag with capitals, dots, dashes and underscores is accepted and distinct",
            tag_mixed_case
        ),
        check!(
            a,
            "chunk_min_length_header",
            "OCI-Chunk-Min-Length, when sent on POST, is a positive integer",
            chunk_min_length_header
        ),
        check!(
            a,
            "upload_cancel_unknown",
            "DELETE of an upload session never issued: 404",
            upload_cancel_unknown
        ),
    ]
}

// ---- helpers ---------------------------------------------------------------

async fn patch(c: &Ctx, url: Url, data: &[u8], start: usize) -> Result<Resp> {
    let end = start + data.len() - 1;
    c.reg
        .send(
            c.reg
                .request_url(Method::PATCH, url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .header("Content-Range", format!("{start}-{end}"))
                .body(data.to_vec()),
        )
        .await
}

/// PATCH with a streamed body: reqwest sends Transfer-Encoding: chunked.
async fn patch_stream(c: &Ctx, url: Url, data: &[u8], frame: usize) -> Result<Resp> {
    let frames: Vec<std::io::Result<Bytes>> = data
        .chunks(frame)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(frames));
    c.reg
        .send(
            c.reg
                .request_url(Method::PATCH, url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body),
        )
        .await
}

async fn finish(c: &Ctx, url: Url, digest: &str, body: Option<&[u8]>) -> Result<Resp> {
    let rb = c
        .reg
        .request_url(Method::PUT, with_digest(url, digest))
        .header(CONTENT_TYPE, "application/octet-stream");
    let rb = match body {
        Some(b) => rb.body(b.to_vec()),
        None => rb.header(CONTENT_LENGTH, "0"),
    };
    c.reg.send(rb).await
}

fn expect_range(r: &Resp, end: usize) -> Result<()> {
    let want = format!("0-{end}");
    let got = r.header("range");
    // The spec's examples use `0-<end>`; some registries prefix `bytes=`.
    ensure!(
        got == Some(want.as_str()) || got == Some(format!("bytes={want}").as_str()),
        "Range is {got:?}, want {want:?}"
    );
    Ok(())
}

/// GETs a blob and fails unless it holds `data`.
async fn expect_blob(c: &Ctx, repo: &str, digest: &str, data: &[u8]) -> Result<()> {
    let r = c.reg.get(&format!("v2/{repo}/blobs/{digest}")).await?;
    r.expect("GET the pushed blob", &[200])?;
    ensure!(
        r.body[..] == data[..],
        "blob read back differs from what was pushed"
    );
    Ok(())
}

// ---- uploads ---------------------------------------------------------------

async fn upload_post_202(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-session");
    let r = c
        .reg
        .send(
            c.reg
                .request(Method::POST, &format!("v2/{repo}/blobs/uploads/"))
                .header(CONTENT_LENGTH, "0"),
        )
        .await?;
    r.expect("POST upload", &[202])?;
    r.location()?;
    Ok(())
}

async fn monolithic_post_put(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mono");
    let blob = Blob::random(2048, OCI_LAYER);
    let r = c
        .reg
        .push_blob_digest(&repo, &blob.data, &blob.digest)
        .await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("PUT ?digest=", &[201])?;
    let h = c
        .reg
        .head(&format!("v2/{repo}/blobs/{}", blob.digest))
        .await?;
    h.expect("HEAD after push", &[200])?;
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn monolithic_put_location(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mono");
    let blob = Blob::random(100, OCI_LAYER);
    let r = c
        .reg
        .push_blob_digest(&repo, &blob.data, &blob.digest)
        .await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("PUT ?digest=", &[201])?;
    r.location()?;
    Ok(())
}

async fn monolithic_put_digest_header(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mono");
    let blob = Blob::random(100, OCI_LAYER);
    let r = c
        .reg
        .push_blob_digest(&repo, &blob.data, &blob.digest)
        .await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("PUT ?digest=", &[201])?;
    ensure!(
        r.digest_header() == Some(blob.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        blob.digest
    );
    Ok(())
}

async fn single_post_digest(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-single");
    let blob = Blob::random(1500, OCI_LAYER);
    let mut url = c.reg.url(&format!("v2/{repo}/blobs/uploads/"));
    url.query_pairs_mut().append_pair("digest", &blob.digest);
    let r = c
        .reg
        .send(
            c.reg
                .request_url(Method::POST, url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(blob.data.clone()),
        )
        .await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("POST ?digest= with body", &[201, 202])?;
    if r.status == 202 {
        // The registry does not do single-request uploads: the spec's fallback
        // is to PUT the body to the session it opened.
        let f = finish(c, r.location()?, &blob.digest, Some(&blob.data)).await?;
        f.expect("fallback PUT after 202", &[201])?;
    } else {
        r.location()?;
    }
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn chunked_patch(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-chunked");
    let blob = Blob::random(3000, OCI_LAYER);
    let mut url = c.reg.start_upload(&repo).await?;
    for (i, part) in blob.data.chunks(1000).enumerate() {
        let r = patch(c, url, part, i * 1000).await?;
        r.expect(&format!("PATCH chunk {i}"), &[202])?;
        url = r.location()?;
    }
    let r = finish(c, url, &blob.digest, None).await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("closing PUT", &[201])?;
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn chunked_patch_range_header(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-chunked");
    let blob = Blob::random(2000, OCI_LAYER);
    let mut url = c.reg.start_upload(&repo).await?;
    for (i, part) in blob.data.chunks(700).enumerate() {
        let r = patch(c, url, part, i * 700).await?;
        r.expect(&format!("PATCH chunk {i}"), &[202])?;
        expect_range(&r, i * 700 + part.len() - 1)?;
        url = r.location()?;
    }
    let r = finish(c, url, &blob.digest, None).await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("closing PUT", &[201])?;
    Ok(())
}

async fn chunked_final_put_with_body(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-chunked");
    let blob = Blob::random(2000, OCI_LAYER);
    let url = c.reg.start_upload(&repo).await?;
    let r = patch(c, url, &blob.data[..1200], 0).await?;
    r.expect("PATCH first chunk", &[202])?;
    let r = finish(c, r.location()?, &blob.digest, Some(&blob.data[1200..])).await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("PUT with the last chunk", &[201])?;
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn chunked_transfer_encoding(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-stream");
    let blob = Blob::random(256 * 1024 + 17, OCI_LAYER);
    let url = c.reg.start_upload(&repo).await?;
    let r = patch_stream(c, url, &blob.data, 16 * 1024).await?;
    r.expect("streamed PATCH", &[202])?;
    let r = finish(c, r.location()?, &blob.digest, None).await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("closing PUT", &[201])?;
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn chunked_transfer_encoding_twice(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-stream");
    let blob = Blob::random(100_000, OCI_LAYER);
    let url = c.reg.start_upload(&repo).await?;
    let r = patch_stream(c, url, &blob.data[..60_000], 8192).await?;
    r.expect("first streamed PATCH", &[202])?;
    let r = patch_stream(c, r.location()?, &blob.data[60_000..], 8192).await?;
    r.expect("second streamed PATCH", &[202])?;
    let r = finish(c, r.location()?, &blob.digest, None).await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("closing PUT", &[201])?;
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn chunk_out_of_order(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-chunked");
    let data = random_bytes(300);
    let url = c.reg.start_upload(&repo).await?;
    let r = patch(c, url, &data[..100], 0).await?;
    r.expect("PATCH 0-99", &[202])?;
    let r = patch(c, r.location()?, &data[200..], 200).await?;
    r.expect("PATCH 200-299 after 0-99", &[416])?;
    Ok(())
}

async fn chunk_rejected_upload_intact(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-chunked");
    let blob = Blob::random(300, OCI_LAYER);
    let url = c.reg.start_upload(&repo).await?;
    let r = patch(c, url, &blob.data[..100], 0).await?;
    r.expect("PATCH 0-99", &[202])?;
    let url = r.location()?;
    let bad = patch(c, url.clone(), &blob.data[200..], 200).await?;
    bad.expect("PATCH 200-299 after 0-99", &[416])?;
    let status = c
        .reg
        .send(c.reg.request_url(Method::GET, url.clone()))
        .await?;
    status.expect("GET upload status after the 416", &[204])?;
    expect_range(&status, 99)?;
    let url = status.location().unwrap_or(url);
    let r = patch(c, url, &blob.data[100..], 100).await?;
    r.expect("PATCH 100-299", &[202])?;
    let r = finish(c, r.location()?, &blob.digest, None).await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("closing PUT", &[201])?;
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn upload_status(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-session");
    let data = random_bytes(500);
    let url = c.reg.start_upload(&repo).await?;
    let r = patch(c, url, &data, 0).await?;
    r.expect("PATCH", &[202])?;
    let url = r.location()?;
    let s = c
        .reg
        .send(c.reg.request_url(Method::GET, url.clone()))
        .await?;
    s.expect("GET upload status", &[204])?;
    s.location()?;
    expect_range(&s, 499)?;
    // Leave nothing behind.
    let _ = c.reg.send(c.reg.request_url(Method::DELETE, url)).await;
    Ok(())
}

async fn upload_cancel(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-session");
    let url = c.reg.start_upload(&repo).await?;
    let r = patch(c, url, &random_bytes(100), 0).await?;
    r.expect("PATCH", &[202])?;
    let url = r.location()?;
    let d = c
        .reg
        .send(c.reg.request_url(Method::DELETE, url.clone()))
        .await?;
    d.expect("DELETE upload", &[204])?;
    let s = c.reg.send(c.reg.request_url(Method::GET, url)).await?;
    s.expect_error("GET cancelled upload", &[404], "BLOB_UPLOAD_UNKNOWN")
}

async fn upload_unknown_session(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-session");
    // Make sure the repository exists, so only the session is unknown.
    let _ = c.reg.start_upload(&repo).await?;
    let r = c
        .reg
        .get(&format!(
            "v2/{repo}/blobs/uploads/{}",
            "3f1b2c4d-0000-4000-8000-000000000000"
        ))
        .await?;
    r.expect("GET unknown upload", &[404])?;
    // A URL the registry never issued is unknown, and may also be judged
    // invalid (registries that keep session state in the URL cannot tell).
    let codes = r.error_codes();
    ensure!(
        codes
            .iter()
            .any(|c| c == "BLOB_UPLOAD_UNKNOWN" || c == "BLOB_UPLOAD_INVALID"),
        "error codes {codes:?}, want BLOB_UPLOAD_UNKNOWN (or BLOB_UPLOAD_INVALID)"
    );
    Ok(())
}

async fn digest_mismatch(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mismatch");
    let data = random_bytes(400);
    let claimed = unknown_digest();
    let r = c.reg.push_blob_digest(&repo, &data, &claimed).await?;
    r.expect_error("PUT with a wrong digest", &[400], "DIGEST_INVALID")
}

async fn digest_mismatch_not_stored(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mismatch");
    let data = random_bytes(400);
    let claimed = unknown_digest();
    let _ = c.reg.push_blob_digest(&repo, &data, &claimed).await?;
    let r = c.reg.head(&format!("v2/{repo}/blobs/{claimed}")).await?;
    r.expect("HEAD the claimed digest", &[404])?;
    Ok(())
}

async fn upload_malformed_digest(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mismatch");
    let data = random_bytes(10);
    let r = c
        .reg
        .push_blob_digest(&repo, &data, "sha256:nothex")
        .await?;
    r.expect_error("PUT ?digest=sha256:nothex", &[400], "DIGEST_INVALID")
}

async fn empty_blob(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mono");
    let digest = sha256(b"");
    let r = c.reg.push_blob_digest(&repo, b"", &digest).await?;
    c.remember_blob(&repo, &digest);
    r.expect("PUT empty blob", &[201])?;
    let g = c.reg.get(&format!("v2/{repo}/blobs/{digest}")).await?;
    g.expect("GET empty blob", &[200])?;
    ensure!(
        g.body.is_empty(),
        "empty blob came back with {} bytes",
        g.body.len()
    );
    Ok(())
}

async fn sha512_blob(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-sha512");
    let data = random_bytes(1024);
    let digest = sha512(&data);
    let r = c.reg.push_blob_digest(&repo, &data, &digest).await?;
    c.remember_blob(&repo, &digest);
    r.expect("PUT ?digest=sha512:...", &[201])?;
    let h = c.reg.head(&format!("v2/{repo}/blobs/{digest}")).await?;
    h.expect("HEAD by sha512 digest", &[200])?;
    expect_blob(c, &repo, &digest, &data).await
}

async fn mount(c: &Ctx, repo: &str, digest: &str, from: Option<&str>) -> Result<Resp> {
    let mut url = c.reg.url(&format!("v2/{repo}/blobs/uploads/"));
    url.query_pairs_mut().append_pair("mount", digest);
    if let Some(from) = from {
        url.query_pairs_mut().append_pair("from", from);
    }
    c.reg
        .send(
            c.reg
                .request_url(Method::POST, url)
                .header(CONTENT_LENGTH, "0"),
        )
        .await
}

async fn mount_from(c: &Ctx) -> Result<()> {
    let src = c.repo("push-mount-src");
    let dst = c.repo("push-mount-dst");
    let blob = Blob::random(700, OCI_LAYER);
    c.push_blob(&src, &blob).await?;
    let r = mount(c, &dst, &blob.digest, Some(&src)).await?;
    c.remember_blob(&dst, &blob.digest);
    r.expect("POST ?mount=&from=", &[201])?;
    r.location()?;
    expect_blob(c, &dst, &blob.digest, &blob.data).await
}

async fn mount_without_from(c: &Ctx) -> Result<()> {
    let src = c.repo("push-mount-src");
    let dst = c.repo("push-mount-nofrom");
    let blob = Blob::random(700, OCI_LAYER);
    c.push_blob(&src, &blob).await?;
    let r = mount(c, &dst, &blob.digest, None).await?;
    c.remember_blob(&dst, &blob.digest);
    r.expect("POST ?mount= without from", &[201, 202])?;
    let loc = r.location()?;
    if r.status == 201 {
        expect_blob(c, &dst, &blob.digest, &blob.data).await
    } else {
        let f = finish(c, loc, &blob.digest, Some(&blob.data)).await?;
        f.expect("PUT to the session the 202 opened", &[201])?;
        Ok(())
    }
}

async fn mount_unknown_blob(c: &Ctx) -> Result<()> {
    let src = c.repo("push-mount-src");
    let dst = c.repo("push-mount-dst");
    c.push_blob(&src, &Blob::random(10, OCI_LAYER)).await?;
    let r = mount(c, &dst, &unknown_digest(), Some(&src)).await?;
    r.expect("mount of an unknown blob", &[202])?;
    let loc = r.location()?;
    let _ = c.reg.send(c.reg.request_url(Method::DELETE, loc)).await;
    Ok(())
}

// ---- manifests ---------------------------------------------------------------

async fn manifest_put_by_tag(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = variant(&b, "by-tag");
    let r = c.push_manifest(&b.repo, "by-tag", &m).await?;
    r.location()?;
    let g = c.reg.get_manifest(&b.repo, "by-tag").await?;
    g.expect("GET the tag", &[200])?;
    ensure!(
        g.body[..] == m.bytes[..],
        "tag does not return the pushed manifest"
    );
    Ok(())
}

async fn manifest_put_digest_header(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = variant(&b, "digest-header");
    let r = c.push_manifest(&b.repo, "digest-header", &m).await?;
    ensure!(
        r.digest_header() == Some(m.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        m.digest
    );
    Ok(())
}

async fn manifest_put_by_digest(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = variant(&b, "by-digest");
    let r = c.push_manifest(&b.repo, &m.digest, &m).await?;
    r.location()?;
    let g = c.reg.get_manifest(&b.repo, &m.digest).await?;
    g.expect("GET by digest", &[200])?;
    ensure!(
        g.body[..] == m.bytes[..],
        "digest does not return the pushed manifest"
    );
    Ok(())
}

async fn manifest_put_digest_mismatch(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = variant(&b, "mismatch");
    let r = c.put_manifest(&b.repo, &unknown_digest(), &m).await?;
    r.expect_error(
        "PUT manifest under another digest",
        &[400],
        "DIGEST_INVALID",
    )
}

async fn manifest_put_idempotent(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = variant(&b, "twice");
    c.push_manifest(&b.repo, "twice", &m).await?;
    c.push_manifest(&b.repo, "twice", &m).await?;
    Ok(())
}

async fn tag_overwrite(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let first = variant(&b, "first");
    let second = variant(&b, "second");
    c.push_manifest(&b.repo, "moving", &first).await?;
    c.push_manifest(&b.repo, "moving", &second).await?;
    let g = c.reg.get_manifest(&b.repo, "moving").await?;
    g.expect("GET the tag", &[200])?;
    ensure!(
        g.body[..] == second.bytes[..],
        "tag still returns the first manifest"
    );
    let old = c.reg.get_manifest(&b.repo, &first.digest).await?;
    old.expect("GET the replaced manifest by digest", &[200])?;
    Ok(())
}

async fn index_with_children(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let x = variant(&b, "child-a");
    let y = variant(&b, "child-b");
    c.push_manifest(&b.repo, &x.digest, &x).await?;
    c.push_manifest(&b.repo, &y.digest, &y).await?;
    let idx = index_for(OCI_INDEX, &[(&x, "amd64"), (&y, "arm64")], None);
    c.push_manifest(&b.repo, "index", &idx).await?;
    let g = c.reg.get_manifest(&b.repo, "index").await?;
    g.expect("GET index", &[200])?;
    ensure!(g.body[..] == idx.bytes[..], "index came back different");
    Ok(())
}

async fn index_missing_child(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let present = variant(&b, "present");
    c.push_manifest(&b.repo, &present.digest, &present).await?;
    let ghost = variant(&b, "never-pushed");
    let idx = index_for(OCI_INDEX, &[(&present, "amd64"), (&ghost, "arm64")], None);
    let r = c.put_manifest(&b.repo, "broken-index", &idx).await?;
    r.expect_error(
        "PUT index with a missing child",
        &[400],
        "MANIFEST_BLOB_UNKNOWN",
    )
}

async fn manifest_blob_unknown(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let missing = Blob::random(100, OCI_LAYER);
    let m = manifest_for(OCI_MANIFEST, &b.image.config, &[missing], None);
    let r = c.put_manifest(&b.repo, "missing-layer", &m).await?;
    r.expect_error(
        "PUT manifest with a missing layer",
        &[400],
        "MANIFEST_BLOB_UNKNOWN",
    )
}

async fn manifest_config_unknown(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let missing = Blob::random(100, OCI_CONFIG);
    let m = manifest_for(OCI_MANIFEST, &missing, &b.image.layers, None);
    let r = c.put_manifest(&b.repo, "missing-config", &m).await?;
    r.expect_error(
        "PUT manifest with a missing config",
        &[400],
        "MANIFEST_BLOB_UNKNOWN",
    )
}

async fn manifest_invalid_json(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let r = c
        .reg
        .put_manifest_raw(
            &b.repo,
            "garbage",
            OCI_MANIFEST,
            b"{ this is not json".to_vec(),
        )
        .await?;
    r.expect_error("PUT a non-JSON manifest", &[400], "MANIFEST_INVALID")
}

fn padded(b: &Base, size: usize) -> Manifest {
    let pad = "x".repeat(size);
    manifest_for(
        OCI_MANIFEST,
        &b.image.config,
        &b.image.layers,
        Some(json!({"annotations": {"org.signet.conformance.padding": pad}})),
    )
}

async fn manifest_large_accepted(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = padded(&b, 3_500_000);
    c.push_manifest(&b.repo, "large", &m).await?;
    let g = c.reg.get_manifest(&b.repo, "large").await?;
    g.expect("GET the large manifest", &[200])?;
    ensure!(
        g.body[..] == m.bytes[..],
        "large manifest came back different"
    );
    Ok(())
}

async fn manifest_oversize(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = padded(&b, 8 * 1024 * 1024);
    let r = c.put_manifest(&b.repo, "oversize", &m).await?;
    match r.status {
        413 => Ok(()),
        201 => {
            let g = c.reg.get_manifest(&b.repo, &m.digest).await?;
            g.expect("GET the accepted 8 MiB manifest", &[200])?;
            ensure!(
                g.body[..] == m.bytes[..],
                "accepted 8 MiB manifest came back different"
            );
            Ok(())
        }
        s => bail!(
            "PUT 8 MiB manifest: got {s} {:?}, want 413 (or 201 and intact)",
            r.error_codes()
        ),
    }
}

async fn artifact_manifest(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-artifact");
    let config = Blob::new(b"{}".to_vec(), OCI_EMPTY);
    let layer = Blob::random(300, "application/vnd.example.conformance.payload");
    c.push_blob(&repo, &config).await?;
    c.push_blob(&repo, &layer).await?;
    let m = manifest_for(
        OCI_MANIFEST,
        &config,
        std::slice::from_ref(&layer),
        Some(json!({"artifactType": "application/vnd.example.conformance.artifact"})),
    );
    c.push_manifest(&repo, "artifact", &m).await?;
    let g = c.reg.get_manifest(&repo, "artifact").await?;
    g.expect("GET artifact", &[200])?;
    ensure!(g.body[..] == m.bytes[..], "artifact came back different");
    Ok(())
}

async fn subject_unknown_accepted(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": unknown_digest(), "size": 1234});
    let m = manifest_for(
        OCI_MANIFEST,
        &b.image.config,
        &b.image.layers,
        Some(
            json!({"subject": subject, "artifactType": "application/vnd.example.conformance.orphan"}),
        ),
    );
    c.push_manifest(&b.repo, &m.digest, &m).await?;
    Ok(())
}

async fn tag_max_length(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let tag = format!("t{}", "a".repeat(127));
    let m = variant(&b, "long-tag");
    c.push_manifest(&b.repo, &tag, &m).await?;
    c.reg
        .get_manifest(&b.repo, &tag)
        .await?
        .expect("GET 128-char tag", &[200])?;
    Ok(())
}

async fn expect_rejected(r: &Resp, what: &str) -> Result<()> {
    ensure!(
        (400..500).contains(&r.status),
        "{what}: got {} {:?}, want a 4xx rejection",
        r.status,
        r.error_codes()
    );
    Ok(())
}

async fn tag_invalid(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = variant(&b, "bad-tag");
    let r = c.put_manifest(&b.repo, ".hidden", &m).await?;
    expect_rejected(&r, "PUT manifest with tag .hidden").await
}

async fn tag_too_long(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = variant(&b, "too-long");
    let r = c.put_manifest(&b.repo, &"a".repeat(129), &m).await?;
    expect_rejected(&r, "PUT manifest with a 129-char tag").await
}

async fn repo_name_uppercase(c: &Ctx) -> Result<()> {
    let r = c
        .reg
        .send(
            c.reg
                .request(
                    Method::POST,
                    &format!("v2/{}/BadName/blobs/uploads/", c.prefix),
                )
                .header(CONTENT_LENGTH, "0"),
        )
        .await?;
    expect_rejected(&r, "POST upload in .../BadName").await
}

async fn repo_name_bad_separator(c: &Ctx) -> Result<()> {
    let r = c
        .reg
        .send(
            c.reg
                .request(
                    Method::POST,
                    &format!("v2/{}/a..b/blobs/uploads/", c.prefix),
                )
                .header(CONTENT_LENGTH, "0"),
        )
        .await?;
    expect_rejected(&r, "POST upload in .../a..b").await
}

/// GETs a Location (blob or manifest) and fails unless it returns `data`.
async fn expect_location(c: &Ctx, r: &Resp, data: &[u8], accept: Option<&str>) -> Result<()> {
    let loc = r.location()?;
    let mut rb = c.reg.request_url(Method::GET, loc.clone());
    if let Some(a) = accept {
        rb = rb.header("Accept", a);
    }
    let g = c.reg.send(rb).await?;
    g.expect(&format!("GET Location {}", loc.path()), &[200])?;
    ensure!(
        g.body[..] == data[..],
        "Location {} does not return the pushed content",
        loc.path()
    );
    Ok(())
}

async fn blob_location_pullable(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mono");
    let blob = Blob::random(321, OCI_LAYER);
    let r = c
        .reg
        .push_blob_digest(&repo, &blob.data, &blob.digest)
        .await?;
    c.remember_blob(&repo, &blob.digest);
    r.expect("PUT ?digest=", &[201])?;
    expect_location(c, &r, &blob.data, None).await
}

async fn manifest_location_pullable(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let m = variant(&b, "location");
    let r = c.push_manifest(&b.repo, "location", &m).await?;
    expect_location(c, &r, &m.bytes, Some(crate::client::MANIFEST_ACCEPT)).await
}

async fn mount_location_pullable(c: &Ctx) -> Result<()> {
    let src = c.repo("push-mount-src");
    let dst = c.repo("push-mount-loc");
    let blob = Blob::random(222, OCI_LAYER);
    c.push_blob(&src, &blob).await?;
    let r = mount(c, &dst, &blob.digest, Some(&src)).await?;
    c.remember_blob(&dst, &blob.digest);
    r.expect("POST ?mount=&from=", &[201])?;
    expect_location(c, &r, &blob.data, None).await
}

async fn upload_sessions_unique(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-session");
    let a = c.reg.start_upload(&repo).await?;
    let b = c.reg.start_upload(&repo).await?;
    ensure!(a != b, "both POSTs returned the session {a}");
    for u in [a, b] {
        let _ = c.reg.send(c.reg.request_url(Method::DELETE, u)).await;
    }
    Ok(())
}

async fn blob_repush_existing(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-mono");
    let blob = Blob::random(123, OCI_LAYER);
    c.push_blob(&repo, &blob).await?;
    let r = c
        .reg
        .push_blob_digest(&repo, &blob.data, &blob.digest)
        .await?;
    r.expect("second push of the same blob", &[201])?;
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn concurrent_same_blob(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-race");
    let blob = Blob::random(4096, OCI_LAYER);
    let a = c.reg.start_upload(&repo).await?;
    let b = c.reg.start_upload(&repo).await?;
    let ra = patch(c, a, &blob.data[..2048], 0).await?;
    ra.expect("PATCH in session A", &[202])?;
    let rb = patch(c, b, &blob.data[..2048], 0).await?;
    rb.expect("PATCH in session B", &[202])?;
    let fa = finish(c, ra.location()?, &blob.digest, Some(&blob.data[2048..])).await?;
    let fb = finish(c, rb.location()?, &blob.digest, Some(&blob.data[2048..])).await?;
    c.remember_blob(&repo, &blob.digest);
    fa.expect("closing PUT of session A", &[201])?;
    fb.expect("closing PUT of session B", &[201])?;
    expect_blob(c, &repo, &blob.digest, &blob.data).await
}

async fn tag_mixed_case(c: &Ctx) -> Result<()> {
    let b = base(c).await?;
    let upper = variant(&b, "upper");
    let lower = variant(&b, "lower");
    c.push_manifest(&b.repo, "Release_1.0-RC", &upper).await?;
    c.push_manifest(&b.repo, "release_1.0-rc", &lower).await?;
    let g = c.reg.get_manifest(&b.repo, "Release_1.0-RC").await?;
    g.expect("GET Release_1.0-RC", &[200])?;
    ensure!(
        g.body[..] == upper.bytes[..],
        "tags differing only in case were merged"
    );
    Ok(())
}

async fn chunk_min_length_header(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-session");
    let r = c
        .reg
        .send(
            c.reg
                .request(Method::POST, &format!("v2/{repo}/blobs/uploads/"))
                .header(CONTENT_LENGTH, "0"),
        )
        .await?;
    r.expect("POST upload", &[202])?;
    if let Ok(loc) = r.location() {
        let _ = c.reg.send(c.reg.request_url(Method::DELETE, loc)).await;
    }
    match r.header("oci-chunk-min-length") {
        None => Err(crate::context::skip(
            "the registry sends no OCI-Chunk-Min-Length",
        )),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(()),
            _ => bail!("OCI-Chunk-Min-Length is {v:?}, not a positive integer"),
        },
    }
}

async fn upload_cancel_unknown(c: &Ctx) -> Result<()> {
    let repo = c.repo("push-session");
    let _ = c.reg.start_upload(&repo).await?;
    let r = c
        .reg
        .delete(&format!(
            "v2/{repo}/blobs/uploads/3f1b2c4d-0000-4000-8000-00000000dead"
        ))
        .await?;
    r.expect("DELETE an unknown upload", &[404])?;
    Ok(())
}
