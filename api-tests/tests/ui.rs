//! The web UI: its files served by `signet` under `/ui/` (types, caching, deep links,
//! 404s), the `_signet/tags` listing it reads, and the UI itself driven end to end in
//! headless Debian chromium by playwright-core (`api-tests/ui/e2e.mjs`): a signed
//! multi-platform image found, opened and its signature tree read, and with
//! authentication on, a user seeing only what they may pull. Screenshots land in
//! `target/ui-artifacts/<test>/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::buildkit::{self, buildkit_image, push_all, Layout};
use signet_api_tests::cosign::{
    attachment_tag, push_attestation, push_cosign_manifest, push_referrer, simple_signing_payload,
    trust_config, Key, SIG_ANNOTATION, SIMPLESIGNING,
};
use signet_api_tests::notation::{
    acme, envelope, notation_root, push_signature, write, TestCa, ID, JWS_MEDIA_TYPE,
};
use signet_api_tests::oci::{
    descriptor, error_code, get, push_blob, push_image, put_manifest, OCI_CONFIG, OCI_INDEX,
    OCI_LAYER, OCI_MANIFEST,
};
use signet_api_tests::pki::{auth_users, write_token_key};
use signet_api_tests::{client, require_tool, run, sha256, Registry};

const PROVENANCE: &str = "https://slsa.dev/provenance/v0.2";
const SPDX: &str = "application/spdx+json";
const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";

// ---------------------------------------------------------------------------------
// Content: platform images, an index, cosign signatures and attestations, an SBOM
// ---------------------------------------------------------------------------------

/// An image for one platform (its config says so); returns the manifest bytes.
async fn push_platform_image(c: &Client, r: &Registry, repo: &str, arch: &str) -> Vec<u8> {
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let layer = format!("{arch} layer of {repo}").into_bytes();
    push_blob(c, r, repo, &config).await;
    push_blob(c, r, repo, &layer).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    put_manifest(c, r, repo, &sha256(&manifest), OCI_MANIFEST, &manifest).await;
    manifest
}

/// A Fulcio-style signing certificate naming `identity` and its OIDC `issuer` (in the
/// SAN and Fulcio's issuer extension), self-signed: the UI reads it, nothing trusts it.
fn signing_certificate(identity: &str, issuer: &str) -> String {
    use rcgen::{CertificateParams, CustomExtension, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::Rfc822Name(identity.try_into().unwrap())];
    let mut utf8 = vec![0x0c, issuer.len() as u8];
    utf8.extend_from_slice(issuer.as_bytes());
    params.custom_extensions = vec![CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
        utf8,
    )];
    params.self_signed(&key).unwrap().pem()
}

/// An index over linux/amd64 and linux/arm64 images, tagged `tag`; returns the
/// index bytes and the two platform manifests.
async fn push_index(c: &Client, r: &Registry, repo: &str, tag: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut children = Vec::new();
    let mut descriptors = Vec::new();
    for arch in ["amd64", "arm64"] {
        let m = push_platform_image(c, r, repo, arch).await;
        descriptors.push(json!({
            "mediaType": OCI_MANIFEST, "digest": sha256(&m), "size": m.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
        children.push(m);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors,
    }))
    .unwrap();
    put_manifest(c, r, repo, tag, OCI_INDEX, &index).await;
    (index, children)
}

/// `cosign sign --key`: the simple-signing payload over `subject`, signed by `key`
/// (or, `tampered`, carrying a signature `key` made over other bytes), with the signing
/// certificate's PEM when there is one, as keyless cosign adds it.
async fn sign(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &str,
    key: &Key,
    tampered: bool,
    certificate: Option<&str>,
) -> String {
    let payload = simple_signing_payload(r, repo, subject);
    let signature = if tampered {
        key.sign(b"a payload other than the one stored")
    } else {
        key.sign(&payload)
    };
    let mut annotations = json!({ SIG_ANNOTATION: B64.encode(signature) });
    if let Some(pem) = certificate {
        annotations[CERTIFICATE_ANNOTATION] = json!(pem);
    }
    let tag = attachment_tag(subject, "sig");
    push_cosign_manifest(c, r, repo, &tag, SIMPLESIGNING, &payload, annotations).await
}

/// `cosign attest --key`: a DSSE envelope over an in-toto provenance statement.
async fn attest(c: &Client, r: &Registry, repo: &str, subject: &str, key: &Key) -> String {
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": PROVENANCE,
        "subject": [{"name": format!("{}/{repo}", r.host),
                     "digest": {"sha256": subject.trim_start_matches("sha256:")}}],
        "predicate": {"builder": {"id": "https://builder.example/ui-test"}},
    }))
    .unwrap();
    let annotations = json!({ SIG_ANNOTATION: "", "predicateType": PROVENANCE });
    push_attestation(c, r, repo, subject, &statement, annotations, key).await
}

/// An SPDX document attached as an OCI 1.1 referrer (`subject`), as oras pushes one.
async fn attach_sbom(c: &Client, r: &Registry, repo: &str, subject: &[u8], marker: &str) -> String {
    let document = serde_json::to_vec(&json!({
        "spdxVersion": "SPDX-2.3", "name": marker, "SPDXID": "SPDXRef-DOCUMENT",
        "packages": [{"name": "busybox", "versionInfo": "1.36.1"}],
    }))
    .unwrap();
    push_referrer(
        c,
        r,
        repo,
        descriptor(OCI_INDEX, subject),
        SPDX,
        &document,
        Value::Null,
    )
    .await
}

/// One manifest under `count` tags (`t00000`, `t00001`, …), pushed 16 at a time.
async fn push_many_tags(c: &Client, r: &Registry, repo: &str, count: usize) {
    let manifest = push_platform_image(c, r, repo, "amd64").await;
    futures::stream::iter(0..count)
        .map(|i| {
            let manifest = manifest.clone();
            async move {
                put_manifest(c, r, repo, &format!("t{i:05}"), OCI_MANIFEST, &manifest).await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

// ---------------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------------

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// `target/ui-artifacts/<name>`. Screenshots overwrite those of earlier runs by name;
/// the folder is not emptied, since another run of the suite may be writing to it.
fn artifacts(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("ui-artifacts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("failure.png"));
    dir
}

/// Runs `api-tests/ui/e2e.mjs` on `scenario` in headless chromium.
fn drive_browser(r: &Registry, name: &str, mut scenario: Value) {
    let chromium = require_tool("chromium");
    require_tool("node");
    assert!(
        js_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed in {}: run scripts/install-test-deps.sh",
        js_dir().display()
    );
    let artifacts = artifacts(name);
    scenario["url"] = json!(r.url);
    scenario["host"] = json!(r.host);
    scenario["jsDir"] = json!(js_dir());
    scenario["artifacts"] = json!(artifacts);
    scenario["chromium"] = json!(chromium);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&scenario).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/e2e.mjs");
    let out = run(Command::new("node").arg(script).arg(file.path()));
    let shots: usize = out
        .trim()
        .strip_prefix("ok, screenshots: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {out:?}"));
    assert!(shots >= 4, "{shots} screenshots in {}", artifacts.display());
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn assets_have_types_etags_deep_links_and_404s() {
    let r = Registry::start();
    let c = client();

    let resp = c.get(format!("{}/ui", r.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()["location"], "/ui/");

    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/api.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let resp = c.get(format!("{}{path}", r.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let etag = headers["etag"].to_str().unwrap().to_string();
        let body = resp.bytes().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        // The ETag is the content's SHA-256: a new build changes it.
        assert_eq!(etag, format!("\"{}\"", &sha256(&body)["sha256:".len()..]));

        let revalidated = c
            .get(format!("{}{path}", r.url))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert!(revalidated.bytes().await.unwrap().is_empty());
        let stale = c
            .get(format!("{}{path}", r.url))
            .header("If-None-Match", "\"something-else\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), StatusCode::OK, "{path}");

        let head = c.head(format!("{}{path}", r.url)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(
            head.headers()["content-length"].to_str().unwrap(),
            body.len().to_string()
        );
    }

    // The page itself is locked down: its own scripts and styles only.
    let page = c.get(format!("{}/ui/", r.url)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let index = page.text().await.unwrap();
    assert!(index.contains("<script type=\"module\" src=\"/ui/app.js\">"));

    // Deep links are pages of the UI; a file this build lacks is a 404.
    for deep in [
        "/ui/repo?name=a/b",
        "/ui/image?name=a&ref=v1",
        "/ui/some/where",
    ] {
        let (status, body) = get(&c, &format!("{}{deep}", r.url)).await;
        assert_eq!(status, StatusCode::OK, "{deep}");
        assert_eq!(body, index.as_bytes(), "{deep}");
    }
    for missing in ["/ui/missing.js", "/ui/app.js.map", "/ui/x/app.css"] {
        let (status, body) = get(&c, &format!("{}{missing}", r.url)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(error_code(&body), "UNSUPPORTED", "{missing}");
    }
    // Read-only: the UI's paths take no writes.
    let put = c
        .put(format!("{}/ui/app.js", r.url))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn tag_details_page_through_ten_thousand_tags() {
    let r = Registry::start();
    let c = client();
    let start = utc_now();
    let (index, children) = push_index(&c, &r, "shop/app", "v1").await;
    let single = push_platform_image(&c, &r, "shop/app", "arm64").await;
    put_manifest(&c, &r, "shop/app", "arm-only", OCI_MANIFEST, &single).await;
    let sbom = attach_sbom(&c, &r, "shop/app", &index, "shop-sbom").await;

    let (status, body) = get(&c, &r.v2("shop/app/_signet/tags")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let listing: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(listing["name"], "shop/app");
    let tags = listing["tags"].as_array().unwrap();
    // The SBOM was pushed by digest: no tag of its own.
    let names: Vec<&str> = tags.iter().map(|t| t["tag"].as_str().unwrap()).collect();
    assert_eq!(names, ["arm-only", "v1"]);
    assert!(!body.windows(sbom.len()).any(|w| w == sbom.as_bytes()));
    let v1 = &tags[1];
    assert_eq!(v1["digest"], sha256(&index));
    assert_eq!(v1["mediaType"], OCI_INDEX);
    assert_eq!(v1["size"], index.len());
    assert_eq!(
        v1["platforms"],
        json!([{"os": "linux", "architecture": "amd64"}, {"os": "linux", "architecture": "arm64"}])
    );
    let pushed = v1["pushedAt"].as_str().unwrap();
    // RFC 3339 at a fixed width compares as text.
    let end = utc_now();
    assert!(
        pushed.len() == 20 && start.as_str() <= pushed && pushed <= end.as_str(),
        "{start} <= {pushed} <= {end}"
    );
    // A single image's platform comes from its config.
    assert_eq!(tags[0]["digest"], sha256(&single));
    assert_eq!(
        tags[0]["platforms"],
        json!([{"os": "linux", "architecture": "arm64"}])
    );
    assert!(children.iter().all(|m| !m.is_empty()));

    // Tags that only carry attachments, left out on request, paging included.
    let sig_tag = attachment_tag(&sha256(&index), "sig");
    let sig = push_cosign_manifest(
        &c,
        &r,
        "shop/app",
        &sig_tag,
        SIMPLESIGNING,
        b"{}",
        json!({}),
    )
    .await;
    let listing = |query: &'static str| {
        let c = c.clone();
        let url = r.v2(&format!("shop/app/_signet/tags{query}"));
        async move {
            let resp = c.get(url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let link = resp
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_string());
            let body: Value = resp.json().await.unwrap();
            let tags: Vec<String> = body["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["tag"].as_str().unwrap().to_string())
                .collect();
            (tags, link)
        }
    };
    assert_eq!(listing("").await.0, ["arm-only", sig_tag.as_str(), "v1"]);
    assert_eq!(listing("?attachments=false").await.0, ["arm-only", "v1"]);
    let (first, link) = listing("?attachments=false&n=1").await;
    assert_eq!(first, ["arm-only"]);
    assert_eq!(
        link.as_deref(),
        Some("</v2/shop/app/_signet/tags?n=1&attachments=false&last=arm-only>; rel=\"next\"")
    );
    let (second, link) = listing("?n=1&attachments=false&last=arm-only").await;
    assert_eq!((second, link), (vec!["v1".to_string()], None));
    let (status, body) = get(&c, &r.v2("shop/app/_signet/tags?attachments=maybe")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "UNSUPPORTED");
    assert!(!sig.is_empty());

    // Discoverable beside the coverage endpoint.
    let (_, body) = get(&c, &r.v2("_oci/ext/discover")).await;
    let discover: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        discover["extensions"][0]["endpoints"],
        json!(["_signet/attachments", "_signet/tags"])
    );

    // Errors: unknown repository, bad n, bad name.
    let (status, body) = get(&c, &r.v2("shop/none/_signet/tags")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "NAME_UNKNOWN");
    let (status, body) = get(&c, &r.v2("shop/app/_signet/tags?n=lots")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "SIZE_INVALID");
    let (status, body) = get(&c, &r.v2("Shop/App/_signet/tags")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "NAME_INVALID");
    let (status, body) = get(&c, &r.v2("shop/app/_signet/tags?n=0")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["tags"],
        json!([])
    );

    // 10 000 tags: pages of 100 by default, at most 1000 however many are asked for,
    // each with a Link to the next, together every tag once and in order.
    const COUNT: usize = 10_000;
    let started = Instant::now();
    push_many_tags(&c, &r, "shop/many", COUNT).await;
    eprintln!("pushed {COUNT} tags in {:?}", started.elapsed());

    let started = Instant::now();
    let first = c.get(r.v2("shop/many/_signet/tags")).send().await.unwrap();
    let first_page_time = started.elapsed();
    let link = first.headers()["link"].to_str().unwrap().to_string();
    assert_eq!(
        link,
        "</v2/shop/many/_signet/tags?n=100&last=t00099>; rel=\"next\""
    );
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["tags"].as_array().unwrap().len(), 100);
    eprintln!("first page of 100 tag details in {first_page_time:?}");

    let capped: Value = c
        .get(r.v2("shop/many/_signet/tags?n=50000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(capped["tags"].as_array().unwrap().len(), 1000);

    let mut seen = Vec::new();
    let mut next = Some(r.v2("shop/many/_signet/tags?n=1000"));
    let started = Instant::now();
    while let Some(url) = next {
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        next = resp
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap())
            .map(|l| format!("{}{}", r.url, &l[1..l.find('>').unwrap()]));
        let page: Value = resp.json().await.unwrap();
        for t in page["tags"].as_array().unwrap() {
            assert_eq!(
                t["platforms"],
                json!([{"os": "linux", "architecture": "amd64"}])
            );
            seen.push(t["tag"].as_str().unwrap().to_string());
        }
    }
    eprintln!(
        "all {COUNT} tag details in pages of 1000 in {:?}",
        started.elapsed()
    );
    let expected: Vec<String> = (0..COUNT).map(|i| format!("t{i:05}")).collect();
    assert_eq!(seen, expected);
}

/// Now as the listing prints it (RFC 3339, seconds, UTC).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Days and time of day by hand: the tests need no date crate for one string.
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Howard Hinnant's days-to-civil-date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[tokio::test]
async fn browser_shows_the_index_signature_covering_both_platforms_and_a_tampered_one_invalid() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let notation_ca = TestCa::new("Acme Root");
    let notation_ca_file = write(keys.path(), "notation-ca.pem", &notation_ca.pem);
    let r = Registry::start_with_config(&format!(
        "{}{}",
        trust_config(
            &[(
                "release-key",
                &key.write_public(keys.path(), "cosign"),
                &["prod/**"],
            )],
            "off",
        ),
        notation_root("notation-release", &notation_ca_file, ID, &["prod/notary"])
    ));
    let c = client();
    let repo = "prod/web";

    let (index, children) = push_index(&c, &r, repo, "v1").await;
    let index_digest = sha256(&index);
    let index_signature = sign(&c, &r, repo, &index_digest, &key, false, None).await;
    let amd64 = sha256(&children[0]);
    let tampered = sign(&c, &r, repo, &amd64, &key, true, None).await;
    // arm64 also has its own signature, made with a certificate naming its signer.
    let certificate = signing_certificate("builder@example.com", "https://issuer.example");
    let arm64 = sha256(&children[1]);
    let with_certificate = sign(&c, &r, repo, &arm64, &key, false, Some(&certificate)).await;
    let attestation = attest(&c, &r, repo, &index_digest, &key).await;
    let sbom = attach_sbom(&c, &r, repo, &index, "web-sbom-document").await;
    // The SBOM is signed in turn: an attachment of an attachment.
    let sbom_signature = sign(&c, &r, repo, &sbom, &key, false, None).await;
    // Neighbours the search must filter out, and a repository with many tags.
    for other in ["prod/api", "staging/web-old"] {
        push_platform_image(&c, &r, other, "amd64").await;
    }
    push_many_tags(&c, &r, "prod/many", 120).await;
    // An image built with BuildKit's provenance and SBOM attestations.
    let work = tempfile::tempdir().unwrap();
    let layout = Layout::new(&work.path().join("layout"));
    let built = buildkit_image(&layout);
    push_all(work.path(), &layout, &r, "prod/built");
    // An image with a Notary Project signature (JWS).
    let notary = push_image(&c, &r, "prod/notary", "v1", &[b"notary layer"]).await;
    let notary_envelope = envelope(&acme(&notation_ca), JWS_MEDIA_TYPE, &notary);
    let notary_signature = push_signature(
        &c,
        &r,
        "prod/notary",
        &notary,
        JWS_MEDIA_TYPE,
        &notary_envelope,
    )
    .await;

    // What the UI will show, checked on the API first.
    let (status, body) = get(
        &c,
        &r.v2(&format!(
            "{repo}/_signet/attachments/{index_digest}?recursive=true"
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        report["attachments"]["signature"][0]["verification"]["verdict"], "valid",
        "{report}"
    );
    assert_eq!(
        report["children"][0]["attachments"]["signature"][0]["verification"]["verdict"], "invalid",
        "{report}"
    );

    drive_browser(
        &r,
        "signed-index",
        json!({
            "kind": "signed",
            "search": "web",
            "repo": repo,
            "filteredOut": ["prod/api", "prod/many"],
            "tag": "v1",
            "indexDigest": index_digest,
            "platforms": children.iter().map(|m| json!({"digest": sha256(m)})).collect::<Vec<_>>(),
            "indexSignature": index_signature,
            "tamperedSignature": tampered,
            "certificateSignature": with_certificate,
            "certificateSigner": "Certificate for builder@example.com (issuer https://issuer.example)",
            "root": "release-key",
            "attestation": attestation,
            "predicateType": PROVENANCE,
            "sbom": sbom,
            "sbomMarker": "web-sbom-document",
            "sbomSignature": sbom_signature,
            "manyTagsRepo": "prod/many",
            "built": {
                "repo": "prod/built",
                "platforms": built.platforms.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
                "attestations": built.attestations,
                "predicateTypes": [buildkit::SPDX, buildkit::PROVENANCE],
            },
            "notary": {
                "repo": "prod/notary",
                "signature": notary_signature,
                "root": "notation-release",
                "signer": "CN=release",
            },
        }),
    );
}

fn basic_client(user: &str, password: &str) -> Client {
    let mut headers = HeaderMap::new();
    let value = format!("Basic {}", B64.encode(format!("{user}:{password}")));
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
    Client::builder().default_headers(headers).build().unwrap()
}

#[tokio::test]
async fn browser_with_auth_shows_a_user_only_their_repositories() {
    // Without a token key the UI keeps the password in the page; with one it keeps a
    // refresh token in the tab's session storage and survives reloads.
    let keys = tempfile::tempdir().unwrap();
    let token_key = keys.path().join("token.pem");
    write_token_key(&token_key);
    browse_with_auth("auth-password", None).await;
    browse_with_auth("auth-refresh-token", Some(&token_key)).await;
}

async fn browse_with_auth(name: &str, token_key: Option<&Path>) {
    let token_key = token_key
        .map(|k| format!("token_key = {:?}", k.display().to_string()))
        .unwrap_or_default();
    let r = Registry::start_with_config(&format!(
        r#"
[auth]
enabled = true
admins = ["root"]
{token_key}
{users}
[[auth.rules]]
repositories = ["alice/**"]
pull = ["alice"]
push = ["root"]

[[auth.rules]]
repositories = ["bob/**"]
pull = ["bob"]
push = ["root"]

[[auth.rules]]
repositories = ["public/**"]
pull = ["anonymous", "*"]
push = ["root"]
"#,
        users = auth_users(&[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("root", "root-pw")
        ]),
    ));
    let root = basic_client("root", "root-pw");
    push_index(&root, &r, "alice/app", "v1").await;
    push_index(&root, &r, "bob/app", "v1").await;
    push_index(&root, &r, "bob/tools", "v1").await;
    push_index(&root, &r, "public/base", "v1").await;

    // The files need no credentials; the data behind them does.
    let anonymous = client();
    let (status, _) = get(&anonymous, &format!("{}/ui/", r.url)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&anonymous, &format!("{}/ui/app.js", r.url)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&anonymous, &r.v2("alice/app/_signet/tags")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(
        &basic_client("alice", "alice-pw"),
        &r.v2("bob/app/_signet/tags"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "DENIED");
    let (status, _) = get(
        &basic_client("alice", "alice-pw"),
        &r.v2("alice/app/_signet/tags"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    drive_browser(
        &r,
        name,
        json!({
            "kind": "auth",
            "persistent": !token_key.is_empty(),
            "user": "alice",
            "password": "alice-pw",
            "ownRepo": "alice/app",
            "visible": ["alice/app", "public/base"],
            "anonymousVisible": ["public/base"],
            "otherRepo": "bob/app",
            "tag": "v1",
        }),
    );
}
