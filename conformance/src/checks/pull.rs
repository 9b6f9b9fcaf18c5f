//! Pull: the API version check, manifests and blobs by tag and digest, their
//! headers, ranges, and the errors for what does not exist.

use std::sync::Arc;

use anyhow::{bail, ensure, Result};
use reqwest::Method;
use tokio::sync::OnceCell;

use crate::check;
use crate::client::{sha256, OCI_INDEX, OCI_MANIFEST};
use crate::context::{once, Area, Check, Ctx};
use crate::fixtures::{index_for, oci_image, unknown_digest, Image, Manifest};

#[derive(Default)]
pub struct State {
    fixture: OnceCell<Result<Arc<Fixture>, String>>,
}

/// What the pull checks read: an image tagged `v1` and an index tagged `multi`.
pub struct Fixture {
    pub repo: String,
    pub image: Image,
    pub tag: String,
    pub index: Manifest,
    pub children: Vec<Image>,
}

async fn fixture(c: &Ctx) -> Result<Arc<Fixture>> {
    once(&c.pull.fixture, || async {
        let repo = c.repo("pull");
        let image = oci_image(2, 4096);
        let tag = "v1".to_owned();
        c.push_image(&repo, &tag, &image).await?;
        let children = vec![oci_image(1, 256), oci_image(1, 256)];
        for child in &children {
            c.push_image(&repo, &child.manifest.digest, child).await?;
        }
        let index = index_for(
            OCI_INDEX,
            &[
                (&children[0].manifest, "amd64"),
                (&children[1].manifest, "arm64"),
            ],
            None,
        );
        c.push_manifest(&repo, "multi", &index).await?;
        Ok(Fixture {
            repo,
            image,
            tag,
            index,
            children,
        })
    })
    .await
}

pub fn checks() -> Vec<Check> {
    let a = Area::Pull;
    vec![
        check!(
            a,
            "api_version_200",
            "GET /v2/ answers 200",
            api_version_200
        ),
        check!(
            a,
            "api_version_header",
            "GET /v2/ sets Docker-Distribution-API-Version: registry/2.0 (SHOULD)",
            api_version_header
        ),
        check!(
            a,
            "manifest_get_by_tag",
            "GET manifest by tag returns the pushed bytes",
            manifest_get_by_tag
        ),
        check!(
            a,
            "manifest_get_by_digest",
            "GET manifest by digest returns the pushed bytes",
            manifest_get_by_digest
        ),
        check!(
            a,
            "manifest_content_type",
            "GET manifest sets Content-Type to the manifest's media type",
            manifest_content_type
        ),
        check!(
            a,
            "manifest_digest_header_by_tag",
            "GET manifest by tag sets Docker-Content-Digest to its digest",
            manifest_digest_header_by_tag
        ),
        check!(
            a,
            "manifest_digest_header_by_digest",
            "GET manifest by digest sets Docker-Content-Digest to that digest",
            manifest_digest_header_by_digest
        ),
        check!(
            a,
            "manifest_content_length",
            "GET manifest sets Content-Length to the body size",
            manifest_content_length
        ),
        check!(
            a,
            "manifest_head_by_tag",
            "HEAD manifest by tag: 200, no body, digest and length headers",
            manifest_head_by_tag
        ),
        check!(
            a,
            "manifest_head_by_digest",
            "HEAD manifest by digest: 200 with Docker-Content-Digest",
            manifest_head_by_digest
        ),
        check!(
            a,
            "manifest_head_content_type",
            "HEAD manifest sets the same Content-Type as GET",
            manifest_head_content_type
        ),
        check!(
            a,
            "manifest_unknown_tag",
            "GET unknown tag: 404 MANIFEST_UNKNOWN",
            manifest_unknown_tag
        ),
        check!(
            a,
            "manifest_unknown_digest",
            "GET unknown manifest digest: 404 MANIFEST_UNKNOWN",
            manifest_unknown_digest
        ),
        check!(
            a,
            "manifest_head_unknown",
            "HEAD unknown manifest: 404",
            manifest_head_unknown
        ),
        check!(
            a,
            "manifest_malformed_digest",
            "GET manifest by a malformed digest: 400 (or 404), never 2xx/5xx",
            manifest_malformed_digest
        ),
        check!(
            a,
            "index_get",
            "GET index by tag returns it with the index media type",
            index_get
        ),
        check!(
            a,
            "index_children_by_digest",
            "each child of an index is pullable by digest",
            index_children_by_digest
        ),
        check!(
            a,
            "manifest_bytes_preserved",
            "a manifest with unusual formatting comes back byte for byte",
            manifest_bytes_preserved
        ),
        check!(a, "blob_get", "GET blob returns its bytes", blob_get),
        check!(
            a,
            "blob_get_headers",
            "GET blob sets Content-Length and Docker-Content-Digest",
            blob_get_headers
        ),
        check!(
            a,
            "blob_head",
            "HEAD blob: 200, Content-Length, Docker-Content-Digest, no body",
            blob_head
        ),
        check!(
            a,
            "blob_unknown",
            "GET unknown blob: 404 BLOB_UNKNOWN",
            blob_unknown
        ),
        check!(
            a,
            "blob_head_unknown",
            "HEAD unknown blob: 404",
            blob_head_unknown
        ),
        check!(
            a,
            "blob_malformed_digest",
            "GET blob with a malformed digest: 400 DIGEST_INVALID",
            blob_malformed_digest
        ),
        check!(
            a,
            "repo_unknown_manifest",
            "manifest in an unknown repository: 404 NAME_UNKNOWN or MANIFEST_UNKNOWN",
            repo_unknown_manifest
        ),
        check!(
            a,
            "repo_unknown_blob",
            "blob in an unknown repository: 404 NAME_UNKNOWN or BLOB_UNKNOWN",
            repo_unknown_blob
        ),
        check!(
            a,
            "blob_range",
            "Range: bytes=a-b answers 206 with Content-Range and the slice",
            blob_range
        ),
        check!(
            a,
            "blob_range_open_ended",
            "Range: bytes=a- answers 206 with the tail",
            blob_range_open_ended
        ),
        check!(
            a,
            "blob_range_suffix",
            "Range: bytes=-n answers 206 with the last n bytes",
            blob_range_suffix
        ),
        check!(
            a,
            "blob_range_unsatisfiable",
            "Range past the end answers 416",
            blob_range_unsatisfiable
        ),
        check!(
            a,
            "index_head",
            "HEAD index by tag: 200 with the index media type and digest",
            index_head
        ),
        check!(
            a,
            "blob_digest_as_manifest",
            "GET /manifests/<digest of a blob>: 404 MANIFEST_UNKNOWN, never the blob",
            blob_digest_as_manifest
        ),
        check!(
            a,
            "error_body_format",
            "4xx JSON bodies are {\"errors\":[{code,message,...}]} with codes from the spec",
            error_body_format
        ),
    ]
}

async fn api_version_200(c: &Ctx) -> Result<()> {
    c.reg.get("v2/").await?.expect("GET /v2/", &[200])?;
    Ok(())
}

async fn api_version_header(c: &Ctx) -> Result<()> {
    let r = c.reg.get("v2/").await?;
    match r.header("docker-distribution-api-version") {
        Some("registry/2.0") => Ok(()),
        other => bail!("Docker-Distribution-API-Version is {other:?}, want registry/2.0"),
    }
}

async fn manifest_get_by_tag(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.get_manifest(&f.repo, &f.tag).await?;
    r.expect("GET manifest by tag", &[200])?;
    ensure!(
        r.body[..] == f.image.manifest.bytes[..],
        "body differs from the pushed manifest"
    );
    Ok(())
}

async fn manifest_get_by_digest(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c
        .reg
        .get_manifest(&f.repo, &f.image.manifest.digest)
        .await?;
    r.expect("GET manifest by digest", &[200])?;
    ensure!(
        r.body[..] == f.image.manifest.bytes[..],
        "body differs from the pushed manifest"
    );
    Ok(())
}

async fn manifest_content_type(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.get_manifest(&f.repo, &f.tag).await?;
    r.expect("GET manifest", &[200])?;
    ensure!(
        r.content_type() == Some(OCI_MANIFEST),
        "Content-Type is {:?}, want {OCI_MANIFEST}",
        r.content_type()
    );
    Ok(())
}

async fn manifest_digest_header_by_tag(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.get_manifest(&f.repo, &f.tag).await?;
    r.expect("GET manifest", &[200])?;
    ensure!(
        r.digest_header() == Some(f.image.manifest.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        f.image.manifest.digest
    );
    Ok(())
}

async fn manifest_digest_header_by_digest(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c
        .reg
        .get_manifest(&f.repo, &f.image.manifest.digest)
        .await?;
    r.expect("GET manifest", &[200])?;
    ensure!(
        r.digest_header() == Some(f.image.manifest.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        f.image.manifest.digest
    );
    Ok(())
}

async fn manifest_content_length(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.get_manifest(&f.repo, &f.tag).await?;
    r.expect("GET manifest", &[200])?;
    let want = f.image.manifest.bytes.len() as u64;
    ensure!(
        r.content_length() == Some(want),
        "Content-Length is {:?}, want {want}",
        r.content_length()
    );
    Ok(())
}

async fn manifest_head_by_tag(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.head_manifest(&f.repo, &f.tag).await?;
    r.expect("HEAD manifest by tag", &[200])?;
    ensure!(r.body.is_empty(), "HEAD returned a body");
    ensure!(
        r.digest_header() == Some(f.image.manifest.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        f.image.manifest.digest
    );
    let want = f.image.manifest.bytes.len() as u64;
    ensure!(
        r.content_length() == Some(want),
        "Content-Length is {:?}, want {want}",
        r.content_length()
    );
    Ok(())
}

async fn manifest_head_by_digest(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c
        .reg
        .head_manifest(&f.repo, &f.image.manifest.digest)
        .await?;
    r.expect("HEAD manifest by digest", &[200])?;
    ensure!(
        r.digest_header() == Some(f.image.manifest.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        f.image.manifest.digest
    );
    Ok(())
}

async fn manifest_head_content_type(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.head_manifest(&f.repo, &f.tag).await?;
    r.expect("HEAD manifest", &[200])?;
    ensure!(
        r.content_type() == Some(OCI_MANIFEST),
        "Content-Type is {:?}, want {OCI_MANIFEST}",
        r.content_type()
    );
    Ok(())
}

async fn manifest_unknown_tag(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.get_manifest(&f.repo, "no-such-tag").await?;
    r.expect_error("GET unknown tag", &[404], "MANIFEST_UNKNOWN")
}

async fn manifest_unknown_digest(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.get_manifest(&f.repo, &unknown_digest()).await?;
    r.expect_error("GET unknown digest", &[404], "MANIFEST_UNKNOWN")
}

async fn manifest_head_unknown(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.head_manifest(&f.repo, &unknown_digest()).await?;
    r.expect("HEAD unknown manifest", &[404])?;
    Ok(())
}

async fn manifest_malformed_digest(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    // Valid hex, wrong length for sha256: it cannot be a tag (':'), nor a digest.
    let r = c
        .reg
        .get_manifest(&f.repo, "sha256:0123456789abcdef")
        .await?;
    r.expect("GET manifest sha256:<16 hex>", &[400, 404])?;
    Ok(())
}

async fn index_get(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.get_manifest(&f.repo, "multi").await?;
    r.expect("GET index", &[200])?;
    ensure!(
        r.content_type() == Some(OCI_INDEX),
        "Content-Type is {:?}, want {OCI_INDEX}",
        r.content_type()
    );
    ensure!(
        r.body[..] == f.index.bytes[..],
        "body differs from the pushed index"
    );
    Ok(())
}

async fn index_children_by_digest(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    for child in &f.children {
        let r = c.reg.get_manifest(&f.repo, &child.manifest.digest).await?;
        r.expect("GET child manifest", &[200])?;
        ensure!(r.body[..] == child.manifest.bytes[..], "child body differs");
    }
    Ok(())
}

async fn manifest_bytes_preserved(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    // The same content as the fixture image, re-serialised with odd spacing
    // and key order: a registry must store the bytes, not re-encode them.
    let img = &f.image;
    let layers: Vec<String> = img
        .layers
        .iter()
        .map(|l| {
            format!(
                "{{ \"size\" : {}, \"digest\" : \"{}\",   \"mediaType\" : \"{}\" }}",
                l.data.len(),
                l.digest,
                l.media_type
            )
        })
        .collect();
    let text = format!(
        "{{\n   \"mediaType\":   \"{OCI_MANIFEST}\",\n   \"schemaVersion\" : 2,\n   \"config\" : {{ \"size\": {}, \"mediaType\": \"{}\", \"digest\": \"{}\" }},\n   \"layers\" : [\n      {}\n   ],\n   \"annotations\": {{ \"z\": \"last\", \"a\": \"first\" }}\n}}\n",
        img.config.data.len(),
        img.config.media_type,
        img.config.digest,
        layers.join(",\n      ")
    );
    let value: serde_json::Value = serde_json::from_str(&text)?;
    let m = Manifest::from_bytes(text.into_bytes(), &value);
    c.push_manifest(&f.repo, "formatted", &m).await?;
    let r = c.reg.get_manifest(&f.repo, "formatted").await?;
    r.expect("GET formatted manifest", &[200])?;
    ensure!(
        r.body[..] == m.bytes[..],
        "the registry re-encoded the manifest"
    );
    ensure!(
        sha256(&r.body) == m.digest,
        "digest of the returned body is not the pushed digest"
    );
    Ok(())
}

async fn blob_get(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    for b in f.image.blobs() {
        let r = c
            .reg
            .get(&format!("v2/{}/blobs/{}", f.repo, b.digest))
            .await?;
        r.expect("GET blob", &[200])?;
        ensure!(
            r.body[..] == b.data[..],
            "blob body differs from what was pushed"
        );
    }
    Ok(())
}

async fn blob_get_headers(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let b = &f.image.layers[0];
    let r = c
        .reg
        .get(&format!("v2/{}/blobs/{}", f.repo, b.digest))
        .await?;
    r.expect("GET blob", &[200])?;
    ensure!(
        r.content_length() == Some(b.data.len() as u64),
        "Content-Length is {:?}, want {}",
        r.content_length(),
        b.data.len()
    );
    ensure!(
        r.digest_header() == Some(b.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        b.digest
    );
    Ok(())
}

async fn blob_head(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let b = &f.image.layers[0];
    let r = c
        .reg
        .head(&format!("v2/{}/blobs/{}", f.repo, b.digest))
        .await?;
    r.expect("HEAD blob", &[200])?;
    ensure!(r.body.is_empty(), "HEAD returned a body");
    ensure!(
        r.content_length() == Some(b.data.len() as u64),
        "Content-Length is {:?}, want {}",
        r.content_length(),
        b.data.len()
    );
    ensure!(
        r.digest_header() == Some(b.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        b.digest
    );
    Ok(())
}

async fn blob_unknown(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c
        .reg
        .get(&format!("v2/{}/blobs/{}", f.repo, unknown_digest()))
        .await?;
    r.expect_error("GET unknown blob", &[404], "BLOB_UNKNOWN")
}

async fn blob_head_unknown(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c
        .reg
        .head(&format!("v2/{}/blobs/{}", f.repo, unknown_digest()))
        .await?;
    r.expect("HEAD unknown blob", &[404])?;
    Ok(())
}

async fn blob_malformed_digest(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    // 40 hex digits: the shape of a digest, the wrong length for sha256.
    let bad = format!("sha256:{}", "ab".repeat(20));
    let r = c.reg.get(&format!("v2/{}/blobs/{bad}", f.repo)).await?;
    r.expect_error("GET blob sha256:<40 hex>", &[400], "DIGEST_INVALID")
}

async fn repo_unknown_manifest(c: &Ctx) -> Result<()> {
    let repo = c.repo("never-pushed");
    let r = c.reg.get_manifest(&repo, "latest").await?;
    r.expect("GET manifest in unknown repo", &[404])?;
    let codes = r.error_codes();
    ensure!(
        codes
            .iter()
            .any(|c| c == "NAME_UNKNOWN" || c == "MANIFEST_UNKNOWN"),
        "error codes {codes:?}, want NAME_UNKNOWN or MANIFEST_UNKNOWN"
    );
    Ok(())
}

async fn repo_unknown_blob(c: &Ctx) -> Result<()> {
    let repo = c.repo("never-pushed");
    let r = c
        .reg
        .get(&format!("v2/{repo}/blobs/{}", unknown_digest()))
        .await?;
    r.expect("GET blob in unknown repo", &[404])?;
    let codes = r.error_codes();
    ensure!(
        codes
            .iter()
            .any(|c| c == "NAME_UNKNOWN" || c == "BLOB_UNKNOWN"),
        "error codes {codes:?}, want NAME_UNKNOWN or BLOB_UNKNOWN"
    );
    Ok(())
}

async fn ranged(c: &Ctx, range: &str) -> Result<(crate::client::Resp, Vec<u8>)> {
    let f = fixture(c).await?;
    let b = &f.image.layers[0];
    let r = c
        .reg
        .send(
            c.reg
                .request(Method::GET, &format!("v2/{}/blobs/{}", f.repo, b.digest))
                .header("Range", range),
        )
        .await?;
    Ok((r, b.data.clone()))
}

fn expect_partial(r: &crate::client::Resp, data: &[u8], start: usize, end: usize) -> Result<()> {
    r.expect("ranged GET", &[206])?;
    let want = format!("bytes {start}-{end}/{}", data.len());
    ensure!(
        r.header("content-range") == Some(want.as_str()),
        "Content-Range is {:?}, want {want:?}",
        r.header("content-range")
    );
    ensure!(
        r.body[..] == data[start..=end],
        "partial body is not bytes {start}-{end}"
    );
    Ok(())
}

async fn blob_range(c: &Ctx) -> Result<()> {
    let (r, data) = ranged(c, "bytes=10-99").await?;
    expect_partial(&r, &data, 10, 99)
}

async fn blob_range_open_ended(c: &Ctx) -> Result<()> {
    let (r, data) = ranged(c, "bytes=4000-").await?;
    expect_partial(&r, &data, 4000, data.len() - 1)
}

async fn blob_range_suffix(c: &Ctx) -> Result<()> {
    let (r, data) = ranged(c, "bytes=-16").await?;
    expect_partial(&r, &data, data.len() - 16, data.len() - 1)
}

async fn blob_range_unsatisfiable(c: &Ctx) -> Result<()> {
    let (r, data) = ranged(c, "bytes=100000-100010").await?;
    r.expect(
        &format!("Range past the end of a {}-byte blob", data.len()),
        &[416],
    )?;
    Ok(())
}

async fn index_head(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let r = c.reg.head_manifest(&f.repo, "multi").await?;
    r.expect("HEAD index", &[200])?;
    ensure!(
        r.content_type() == Some(OCI_INDEX),
        "Content-Type is {:?}, want {OCI_INDEX}",
        r.content_type()
    );
    ensure!(
        r.digest_header() == Some(f.index.digest.as_str()),
        "Docker-Content-Digest is {:?}, want {}",
        r.digest_header(),
        f.index.digest
    );
    Ok(())
}

async fn blob_digest_as_manifest(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    // The config is a JSON blob: a registry that serves blobs as manifests
    // would hand it out here (or fail to parse it and answer 500).
    let r = c.reg.get_manifest(&f.repo, &f.image.config.digest).await?;
    r.expect_error("GET /manifests/<config digest>", &[404], "MANIFEST_UNKNOWN")
}

/// The error codes the distribution spec defines.
const SPEC_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

async fn error_body_format(c: &Ctx) -> Result<()> {
    let f = fixture(c).await?;
    let bad = format!("sha256:{}", "ab".repeat(20));
    let answers = [
        c.reg.get_manifest(&f.repo, "no-such-tag").await?,
        c.reg
            .get(&format!("v2/{}/blobs/{}", f.repo, unknown_digest()))
            .await?,
        c.reg.get(&format!("v2/{}/blobs/{bad}", f.repo)).await?,
        c.reg
            .get(&format!("v2/{}/tags/list", c.repo("never-pushed")))
            .await?,
    ];
    for r in &answers {
        ensure!(
            (400..500).contains(&r.status),
            "{} answered {}, not a 4xx",
            r.url.path(),
            r.status
        );
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
            continue; // A non-JSON 4xx body is allowed.
        };
        let errors = v["errors"].as_array().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: JSON error body without an \"errors\" array",
                r.url.path()
            )
        })?;
        ensure!(
            !errors.is_empty(),
            "{}: empty \"errors\" array",
            r.url.path()
        );
        for e in errors {
            let code = e["code"].as_str().unwrap_or_default();
            ensure!(
                SPEC_CODES.contains(&code),
                "{}: error code {code:?} is not one of the spec's",
                r.url.path()
            );
            ensure!(
                e.get("message").is_none_or(|m| m.is_string()),
                "{}: \"message\" is not a string",
                r.url.path()
            );
        }
    }
    Ok(())
}
