//! One regression test per finding of the attack passes (besides the route-table suite
//! in `security.rs`): unsigned images dressed as attachments, descriptor sizes, refusal
//! timing, a token's catalog, the sync admin API and server files, sealed upstream
//! passwords, token scopes, and tags on a manifest PUT by digest.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{
    push_referrer, sign_payload, simple_signing_payload, trust_config, Key,
};
use signet_api_tests::oci::{
    error_code, expect_error, get, header, push_blob, push_image, send_manifest, OCI_CONFIG,
    OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use signet_api_tests::pki::{auth_users, write_token_key};
use signet_api_tests::{client, require_tool, sha256, Registry};

const SPDX: &str = "application/spdx+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{password}")))
}

fn client_as(user: &str, password: &str) -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        basic(user, password).parse().unwrap(),
    );
    Client::builder().default_headers(headers).build().unwrap()
}

// ---------------------------------------------------------------------------------
// An attachment is what a manifest is, not what it is called
// ---------------------------------------------------------------------------------

/// A runnable image (an image config and a tar layer) with `extra` top-level fields,
/// its blobs pushed; returns the manifest bytes.
async fn runnable(c: &Client, r: &Registry, repo: &str, note: &str, extra: Value) -> Vec<u8> {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"note":"{note}"}}"#
    );
    let layer = format!("a runnable layer: {note}");
    push_blob(c, r, repo, config.as_bytes()).await;
    push_blob(c, r, repo, layer.as_bytes()).await;
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer.as_bytes()), "size": layer.len()}],
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    serde_json::to_vec(&m).unwrap()
}

async fn status_of(c: &Client, r: &Registry, repo: &str, reference: &str) -> StatusCode {
    get(c, &r.v2(&format!("{repo}/manifests/{reference}")))
        .await
        .0
}

#[tokio::test]
async fn unsigned_runnable_images_are_refused_under_enforce_whatever_they_claim() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let public = key.write_public(keys.path(), "release");
    let r = Registry::start_with_config(&trust_config(
        &[("release", &public, &["prod/**"])],
        "enforce",
    ));
    let c = client();
    let subject_manifest = push_image(&c, &r, "prod/app", "v1", &[b"the subject's layer"]).await;
    let subject = sha256(&subject_manifest);
    let hex = subject.trim_start_matches("sha256:");
    let subject_desc =
        json!({"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_manifest.len()});
    let nowhere = json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "e".repeat(64)), "size": 10});

    // Each disguise, pushed by tag or under the tag that claims it.
    let disguises: Vec<(String, Value, String)> = vec![
        (
            "a subject that exists nowhere".into(),
            json!({"subject": nowhere}),
            "r1".into(),
        ),
        (
            "the image as its subject".into(),
            json!({"subject": subject_desc}),
            "r2".into(),
        ),
        (
            "an artifactType".into(),
            json!({"artifactType": BUNDLE}),
            "r3".into(),
        ),
        (
            "a cosign .sig tag".into(),
            json!({}),
            format!("sha256-{hex}.sig"),
        ),
        (
            "a cosign .att tag".into(),
            json!({}),
            format!("sha256-{hex}.att"),
        ),
        (
            "a cosign .sbom tag".into(),
            json!({}),
            format!("sha256-{hex}.sbom"),
        ),
        (
            "the referrers fallback tag".into(),
            json!({}),
            format!("sha256-{hex}"),
        ),
    ];
    let mut refused = Vec::new();
    for (what, extra, tag) in &disguises {
        let manifest = runnable(&c, &r, "prod/app", what, extra.clone()).await;
        let resp = send_manifest(&c, &r, "prod/app", tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "{what}");
        let digest = sha256(&manifest);
        for reference in [tag.as_str(), digest.as_str()] {
            let (status, body) = get(&c, &r.v2(&format!("prod/app/manifests/{reference}"))).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{what}, by {reference}");
            assert_eq!(error_code(&body), "DENIED");
        }
        refused.push((tag.clone(), digest, manifest));
    }
    // An index of such an image, naming the subject, under the fallback tag's neighbour.
    let (_, child, child_manifest) = &refused[1];
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": child_manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
        "subject": subject_desc,
    }))
    .unwrap();
    assert_eq!(
        send_manifest(&c, &r, "prod/app", "idx", OCI_INDEX, &index)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        status_of(&c, &r, "prod/app", "idx").await,
        StatusCode::FORBIDDEN
    );

    // Real attachments of the image stay readable: a cosign signature by the trusted key,
    // an SBOM and a Sigstore bundle as referrers.
    let payload = simple_signing_payload(&r, "prod/app", &subject);
    let sig = sign_payload(&c, &r, "prod/app", &subject, &payload, &key).await;
    for reference in [format!("sha256-{hex}.sig"), sig.clone()] {
        assert_eq!(
            status_of(&c, &r, "prod/app", &reference).await,
            StatusCode::OK,
            "{reference}"
        );
    }
    let sbom = push_referrer(
        &c,
        &r,
        "prod/app",
        subject_desc.clone(),
        SPDX,
        br#"{"spdxVersion":"SPDX-2.3"}"#,
        Value::Null,
    )
    .await;
    let bundle = push_referrer(
        &c,
        &r,
        "prod/app",
        subject_desc.clone(),
        BUNDLE,
        br#"{"mediaType":"bundle"}"#,
        Value::Null,
    )
    .await;
    for digest in [&sbom, &bundle] {
        assert_eq!(
            status_of(&c, &r, "prod/app", digest).await,
            StatusCode::OK,
            "{digest}"
        );
    }
    // Signed now, the image itself is served; the disguised images still are not.
    assert_eq!(status_of(&c, &r, "prod/app", "v1").await, StatusCode::OK);
    for (tag, digest, _) in &refused[..3] {
        assert_eq!(
            status_of(&c, &r, "prod/app", tag).await,
            StatusCode::FORBIDDEN,
            "{tag}"
        );
        assert_eq!(
            status_of(&c, &r, "prod/app", digest).await,
            StatusCode::FORBIDDEN,
            "{digest}"
        );
    }

    // An SBOM whose subject lives only in another repository is no attachment here.
    let elsewhere = push_image(&c, &r, "prod/other", "v1", &[b"another image"]).await;
    let stray = push_referrer(
        &c,
        &r,
        "prod/app",
        json!({"mediaType": OCI_MANIFEST, "digest": sha256(&elsewhere), "size": elsewhere.len()}),
        SPDX,
        br#"{"spdxVersion":"SPDX-2.3","stray":true}"#,
        Value::Null,
    )
    .await;
    assert_eq!(
        status_of(&c, &r, "prod/app", &stray).await,
        StatusCode::FORBIDDEN
    );

    // And the real client agrees: skopeo cannot copy the disguised image out.
    require_tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let mut copy = std::process::Command::new("skopeo");
    copy.args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/prod/app:r2", r.host),
        &format!("oci:{}:r2", dir.path().join("layout").display()),
    ]);
    let out = copy.output().unwrap();
    assert!(!out.status.success(), "skopeo copied an unsigned image");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403")
            || String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------
// Descriptor sizes
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_descriptor_size_that_differs_from_the_blob_is_refused() {
    let r = Registry::start();
    let c = client();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"twenty-two bytes long!";
    push_blob(&c, &r, "sizes/app", config).await;
    push_blob(&c, &r, "sizes/app", layer).await;
    let manifest = |layer_size: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": config.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": layer_size}],
        }))
        .unwrap()
    };
    for wrong in [layer.len() + 1, layer.len() - 1, 0] {
        let resp = send_manifest(&c, &r, "sizes/app", "v1", OCI_MANIFEST, &manifest(wrong)).await;
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
        );
        assert!(
            String::from_utf8_lossy(&body).contains(&sha256(layer)),
            "names the digest"
        );
    }
    assert_eq!(
        status_of(&c, &r, "sizes/app", "v1").await,
        StatusCode::NOT_FOUND
    );
    let resp = send_manifest(
        &c,
        &r,
        "sizes/app",
        "v1",
        OCI_MANIFEST,
        &manifest(layer.len()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    // An index child's size is checked too.
    let good = manifest(layer.len());
    let index = |size: usize| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(&good), "size": size}],
        }))
        .unwrap()
    };
    let resp = send_manifest(
        &c,
        &r,
        "sizes/app",
        "multi",
        OCI_INDEX,
        &index(good.len() + 7),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = send_manifest(&c, &r, "sizes/app", "multi", OCI_INDEX, &index(good.len())).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
}

// ---------------------------------------------------------------------------------
// Timing of refusals
// ---------------------------------------------------------------------------------

/// The least time of a few refused logins, so a busy moment does not decide.
async fn least_refusal_time(c: &Client, url: &str, user: &str) -> Duration {
    let mut least = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let resp = c
            .get(url)
            .header("Authorization", basic(user, "not the password"))
            .send()
            .await
            .unwrap();
        least = least.min(started.elapsed());
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{url} as {user}");
    }
    least
}

#[tokio::test]
async fn a_refused_login_takes_as_long_for_an_unknown_name_as_for_a_known_one() {
    // A real cost (10): a wrong password then takes tens of milliseconds.
    let hash = bcrypt::hash("alice-pw", 10).unwrap();
    let r = Registry::start_with_config(&format!(
        "[auth]\nenabled = true\n[[auth.users]]\nname = \"alice\"\npassword_bcrypt = \"{hash}\"\n"
    ));
    let c = client();
    for path in ["/v2/", "/v2/token?service=signet&scope=repository:a/b:pull"] {
        let url = format!("{}{path}", r.url);
        let known = least_refusal_time(&c, &url, "alice").await;
        let unknown = least_refusal_time(&c, &url, "nobody-by-this-name").await;
        // Without the dummy check an unknown name is refused a hundred times faster.
        assert!(
            unknown.as_secs_f64() >= 0.4 * known.as_secs_f64(),
            "{path}: unknown {unknown:?}, known {known:?}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Tokens: the catalog, scope names
// ---------------------------------------------------------------------------------

fn team_config(dir: &std::path::Path) -> String {
    let key = dir.join("token.pem");
    write_token_key(&key);
    format!(
        r#"[auth]
enabled = true
token_key = "{}"
{}
[[auth.rules]]
repositories = ["alice/**"]
push = ["alice"]

[[auth.rules]]
repositories = ["shared/**"]
pull = ["alice"]
push = ["root"]

[[auth.rules]]
repositories = ["root/**"]
push = ["root"]
"#,
        key.display(),
        auth_users(&[("alice", "alice-pw"), ("root", "root-pw")])
    )
}

async fn token(r: &Registry, user: &str, scopes: &[&str]) -> (StatusCode, Value) {
    let query: Vec<(&str, &str)> = std::iter::once(("service", "signet"))
        .chain(scopes.iter().map(|s| ("scope", *s)))
        .collect();
    let resp = client()
        .get(r.v2("token"))
        .query(&query)
        .header("Authorization", basic(user, &format!("{user}-pw")))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn catalog_with(r: &Registry, token: &str) -> Vec<String> {
    let resp = client()
        .get(r.v2("_catalog"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    serde_json::from_value(body["repositories"].clone()).unwrap()
}

#[tokio::test]
async fn a_tokens_catalog_follows_its_grants_and_scopes_name_repositories_only() {
    let dir = tempfile::tempdir().unwrap();
    let r = Registry::start_with_config(&team_config(dir.path()));
    let (alice, root) = (client_as("alice", "alice-pw"), client_as("root", "root-pw"));
    push_image(&alice, &r, "alice/x", "v1", &[b"x"]).await;
    push_image(&alice, &r, "alice/y", "v1", &[b"y"]).await;
    push_image(&root, &r, "shared/base", "v1", &[b"base"]).await;
    push_image(&root, &r, "root/private", "v1", &[b"private"]).await;

    let (_, one) = token(&r, "alice", &["repository:alice/x:pull"]).await;
    assert_eq!(
        catalog_with(&r, one["token"].as_str().unwrap()).await,
        ["alice/x"]
    );
    let (_, whole) = token(&r, "alice", &["registry:catalog:*"]).await;
    assert_eq!(
        catalog_with(&r, whole["token"].as_str().unwrap()).await,
        ["alice/x", "alice/y", "shared/base"]
    );

    // Only repository names are granted: no patterns, no made-up paths.
    let (status, body) = token(
        &r,
        "alice",
        &[
            "repository:alice/**:pull",
            "repository:alice/../root/private:pull",
            "repository:alice/x\n:pull",
            "repository:alice/y:pull",
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body["token"].as_str().unwrap().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = claims["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice/y"]);
    // A request for more scopes than any client needs is refused, not signed.
    let many: Vec<String> = (0..1500)
        .map(|i| format!("repository:alice/r{i}:pull"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, _) = token(&r, "alice", &many).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------
// The sync admin API: server files and sealed passwords
// ---------------------------------------------------------------------------------

async fn create_job(r: &Registry, job: Value) -> (StatusCode, String) {
    let resp = client_as("root", "root-pw")
        .post(r.v2("_signet/sync/jobs"))
        .json(&job)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

fn admin_config(extra: &str) -> String {
    format!(
        "[auth]\nenabled = true\nadmins = [\"root\"]\n{}\n[sync]\n{extra}\n",
        auth_users(&[("root", "root-pw")])
    )
}

#[tokio::test]
async fn api_sync_jobs_read_no_server_files_and_seal_their_passwords() {
    let r = Registry::start_with_config(&admin_config(""));
    let job = |extra: Value| {
        let mut j = json!({"name": "j", "upstream": "http://127.0.0.1:9", "repositories": ["a"]});
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
        j
    };
    for (what, extra) in [
        (
            "a CA file",
            json!({"name": "ca", "upstream": "https://127.0.0.1:9", "ca_file": "/etc/shadow"}),
        ),
        (
            "a file lookaside",
            json!({"name": "look", "lookaside": "file:///etc"}),
        ),
        (
            "a plain path lookaside",
            json!({"name": "path", "lookaside": "/etc"}),
        ),
        (
            "a layout folder",
            json!({"name": "layout", "upstream": "oci:/etc"}),
        ),
        (
            "a layout tar",
            json!({"name": "archive", "upstream": "oci-archive:/etc/shadow"}),
        ),
        (
            "a destination layout",
            json!({"name": "dest", "destination_layout": "/etc/signet-layout"}),
        ),
    ] {
        let (status, body) = create_job(&r, job(extra)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
        assert!(body.contains("api_jobs_may_read_files"), "{what}: {body}");
        assert!(!body.contains("PEM"), "nothing read from the file: {body}");
    }
    // A password needs a sealing key.
    let (status, body) = create_job(
        &r,
        job(json!({"username": "u", "password": "upstream-s3cret"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("secret_key_file"), "{body}");
    drop(r);

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sync.key");
    std::fs::write(&key_file, hex::encode([42u8; 32])).unwrap();
    let mut r = Registry::start_with_config(&admin_config(&format!(
        "secret_key_file = \"{}\"",
        key_file.display()
    )));
    let (status, body) = create_job(
        &r,
        job(json!({"username": "u", "password": "upstream-s3cret"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!body.contains("upstream-s3cret"), "{body}");
    // At rest: sealed, in the database every replica and backup sees.
    let meta = signet_storage::open_metadata(&format!(
        "sqlite://{}",
        r.data_dir.join("signet.db").display()
    ))
    .await
    .unwrap();
    let stored = meta.sync_jobs().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].1.contains("upstream-s3cret"), "{}", stored[0].1);
    assert!(stored[0].1.contains("sealed:v1:"), "{}", stored[0].1);
    // After a restart the job opens again with the key, its password redacted when shown.
    drop(meta);
    r.crash_and_restart();
    let shown = client_as("root", "root-pw")
        .get(r.v2("_signet/sync/jobs/j"))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    let shown = shown.text().await.unwrap();
    assert!(
        shown.contains("\"***\"") && !shown.contains("upstream-s3cret"),
        "{shown}"
    );
}

// ---------------------------------------------------------------------------------
// Tags on a manifest PUT by digest
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_put_by_digest_moves_every_tag_it_names() {
    let r = Registry::start_with_config("[limits]\nmax_tags_per_push = 12\n");
    let c = client();
    let manifest = push_image(&c, &r, "tags/app", "seed", &[b"layer"]).await;
    let digest = sha256(&manifest);
    let tags: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let query: String = tags
        .iter()
        .map(|t| format!("tag={t}"))
        .collect::<Vec<_>>()
        .join("&");
    let url = r.v2(&format!("tags/app/manifests/{digest}?{query}&tag=t0"));
    let resp = c
        .put(&url)
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let echoed: Vec<&str> = resp
        .headers()
        .get_all("OCI-Tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(echoed, tags.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(header(resp.headers(), "docker-content-digest"), digest);
    for tag in &tags {
        let (status, body) = get(&c, &r.v2(&format!("tags/app/manifests/{tag}"))).await;
        assert_eq!(status, StatusCode::OK, "{tag}");
        assert_eq!(&body[..], &manifest[..]);
    }
    // Beyond the limit: 414, and no tag moves.
    let over: String = (0..13)
        .map(|i| format!("tag=o{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let resp = c
        .put(r.v2(&format!("tags/app/manifests/{digest}?{over}")))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::URI_TOO_LONG, "TAG_INVALID").await;
    assert_eq!(
        status_of(&c, &r, "tags/app", "o0").await,
        StatusCode::NOT_FOUND
    );
    // A bad tag, or tags on a PUT by tag: 400 TAG_INVALID.
    for url in [
        r.v2(&format!("tags/app/manifests/{digest}?tag=ok&tag=-bad")),
        r.v2("tags/app/manifests/seed?tag=other"),
    ] {
        let resp = c
            .put(&url)
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "TAG_INVALID").await;
    }
    assert_eq!(
        status_of(&c, &r, "tags/app", "ok").await,
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------
// Refresh tokens: bound to their credential, rotated, revocable
// ---------------------------------------------------------------------------------

/// `[auth]` with a token key, alice (password `password`) and the robot `ci`.
fn refresh_config(key: &std::path::Path, password: &str, with_robot: bool) -> String {
    let robot = if with_robot {
        format!(
            "[[auth.robots]]\nname = \"ci\"\ntoken_sha256 = \"{}\"\n",
            sha256(b"ci-token").trim_start_matches("sha256:")
        )
    } else {
        String::new()
    };
    format!(
        "[auth]\nenabled = true\ntoken_key = {:?}\nrefresh_ttl_secs = 3600\n{}{robot}\n[[auth.rules]]\nrepositories = [\"team/**\"]\npush = [\"alice\", \"ci\"]\n",
        key.display().to_string(),
        auth_users(&[("alice", password)]),
    )
}

/// `POST /v2/token` with an OAuth2 form: status and body.
async fn oauth(r: &Registry, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = client()
        .post(r.v2("token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn refreshed(r: &Registry, refresh: &str) -> (StatusCode, Value) {
    oauth(
        r,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("service", "signet"),
            ("scope", "repository:team/app:pull"),
        ],
    )
    .await
}

/// docker login's identity token: `GET` with `offline_token=true`.
async fn identity_token(r: &Registry, user: &str, password: &str) -> String {
    let resp = client()
        .get(r.v2("token"))
        .query(&[
            ("service", "signet"),
            ("offline_token", "true"),
            ("client_id", "docker"),
        ])
        .header("Authorization", basic(user, password))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    body["refresh_token"].as_str().unwrap().to_string()
}

/// The OAuth2 password grant with `access_type=offline` (the web UI's sign-in).
async fn oauth_refresh_token(r: &Registry, password: &str) -> String {
    let (status, body) = oauth(
        r,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", password),
            ("access_type", "offline"),
            ("client_id", "signet-ui"),
            ("service", "signet"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["refresh_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn refresh_tokens_die_with_their_credential_rotate_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("token.pem");
    write_token_key(&key);
    let config = dir.path().join("signet.toml");
    std::fs::write(&config, refresh_config(&key, "first-pw", true)).unwrap();
    let data = dir.path().join("data");
    let mut r = Registry::start_in(&data, Some(config.clone()));

    // The OAuth grant's token is good once: each use returns the next, and a replay of
    // a used one is refused.
    let first = oauth_refresh_token(&r, "first-pw").await;
    let (status, body) = refreshed(&r, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["refresh_token"]
        .as_str()
        .expect("a replacement")
        .to_string();
    assert_ne!(second, first);
    assert_eq!(
        refreshed(&r, &first).await.0,
        StatusCode::UNAUTHORIZED,
        "replayed"
    );
    let (status, body) = refreshed(&r, &second).await;
    assert_eq!(status, StatusCode::OK);
    let third = body["refresh_token"].as_str().unwrap().to_string();

    // docker's identity token is presented as stored, again and again, until revoked.
    let docker = identity_token(&r, "alice", "first-pw").await;
    for _ in 0..2 {
        let (status, body) = refreshed(&r, &docker).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.get("refresh_token").is_none(),
            "no replacement to lose"
        );
    }
    let robot = identity_token(&r, "ci", "ci-token").await;

    // A password change (and a restart) ends every refresh token issued before it.
    r.kill();
    std::fs::write(&config, refresh_config(&key, "second-pw", true)).unwrap();
    r = Registry::start_in(&data, Some(config.clone()));
    assert_eq!(refreshed(&r, &third).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(refreshed(&r, &docker).await.0, StatusCode::UNAUTHORIZED);
    // The robot's token lives on while the robot does.
    assert_eq!(refreshed(&r, &robot).await.0, StatusCode::OK);

    // Signing out revokes on the server (always 200: it tells nothing about the token).
    let fresh = identity_token(&r, "alice", "second-pw").await;
    for token in [fresh.as_str(), "not a token"] {
        let resp = client()
            .post(r.v2("token/revoke"))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert_eq!(refreshed(&r, &fresh).await.0, StatusCode::UNAUTHORIZED);

    // A removed robot takes its tokens along.
    r.kill();
    std::fs::write(&config, refresh_config(&key, "second-pw", false)).unwrap();
    let r = Registry::start_in(&data, Some(config));
    assert_eq!(refreshed(&r, &robot).await.0, StatusCode::UNAUTHORIZED);
}

// ---------------------------------------------------------------------------------
// A blob reaches a repository only by upload, from its upstream, or from a repository
// the caller may pull
// ---------------------------------------------------------------------------------

/// The value of a metric series whose line contains every one of `labels`.
async fn metric(r: &Registry, name: &str, labels: &[&str]) -> f64 {
    let (_, body) = get(&client_as("root", "root-pw"), &format!("{}/metrics", r.url)).await;
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_only_another_tenant_holds_is_linked_by_no_route() {
    let c = client();
    let upstream = Registry::start();
    push_image(
        &c,
        &upstream,
        "team/app",
        "v1",
        &[b"the upstream's own layer"],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signet.toml");
    std::fs::write(
        &config,
        format!(
            r#"[auth]
enabled = true
admins = ["root"]
{users}
[[auth.rules]]
repositories = ["secret/**"]
push = ["alice"]

[[auth.rules]]
repositories = ["hub/**"]
pull = ["bob"]

[[auth.rules]]
repositories = ["bob/**"]
push = ["bob"]

[[sync.pull_through]]
prefix = "hub"
upstream = "{upstream}"

[[sync.jobs]]
name = "mirror"
upstream = "{upstream}"
repositories = ["team/app"]
destination_prefix = "bob/mirror"
"#,
            users = auth_users(&[
                ("alice", "alice-pw"),
                ("bob", "bob-pw"),
                ("root", "root-pw")
            ]),
            upstream = upstream.url,
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let r = Registry::start_in(&data, Some(config.clone()));
    let (alice, bob, root) = (
        client_as("alice", "alice-pw"),
        client_as("bob", "bob-pw"),
        client_as("root", "root-pw"),
    );
    // alice's secret: a config holding a password.
    let secret_config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["DB_PASSWORD=hunter2"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let secret = push_blob(&alice, &r, "secret/app", secret_config).await;
    let (status, _) = get(&bob, &r.v2(&format!("secret/app/blobs/{secret}"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Pull-through, under a made-up name and under a name upstream has: upstream is asked,
    // says no, and nothing is linked or created. Asked again, the negative cache answers.
    for name in ["hub/whatever/x", "hub/team/app"] {
        for _ in 0..2 {
            let (status, body) = get(&bob, &r.v2(&format!("{name}/blobs/{secret}"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
            assert!(!body.windows(7).any(|w| w == b"hunter2"));
            let resp = bob
                .head(r.v2(&format!("{name}/blobs/{secret}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "HEAD {name}");
        }
    }
    assert!(
        metric(
            &r,
            "signet_pull_through_refused_total",
            &["reason=\"absent-upstream\""]
        )
        .await
            >= 2.0
    );
    // Bob's mounts, from alice's repository and from nowhere: ordinary uploads.
    for query in [
        format!("mount={secret}&from=secret/app"),
        format!("mount={secret}"),
    ] {
        let resp = bob
            .post(r.v2(&format!("bob/x/blobs/uploads/?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{query}");
    }
    // A sync run mirrors what upstream's manifests name, nothing else.
    let resp = root
        .post(r.v2("_signet/sync/jobs/mirror/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    for _ in 0..200 {
        let (_, body) = get(&root, &r.v2("_signet/sync/jobs/mirror")).await;
        let job: Value = serde_json::from_slice(&body).unwrap();
        if job["run"]["status"] != "running" && job["run"]["status"] != "cancelling" {
            assert_eq!(job["run"]["status"], "succeeded", "{job}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for repo in [
        "bob/x",
        "bob/mirror/team/app",
        "hub/whatever/x",
        "hub/team/app",
    ] {
        let (status, _) = get(&bob, &r.v2(&format!("{repo}/blobs/{secret}"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{repo}");
    }
    let (_, body) = get(&root, &r.v2("_catalog")).await;
    let catalog: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        catalog["repositories"],
        json!(["bob/mirror/team/app", "secret/app"])
    );

    // `signet migrate` copies the links as they are: the secret stays alice's alone.
    let mut r = r;
    r.kill();
    let target = dir.path().join("target");
    let target_config = dir.path().join("target.toml");
    std::fs::write(
        &target_config,
        format!("[storage]\ndata_dir = {:?}\n", target.display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new(signet_api_tests::signet_binary())
        .args([
            "migrate",
            "--from-data-dir",
            data.to_str().unwrap(),
            "--to-config",
            target_config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta =
        signet_storage::open_metadata(&format!("sqlite://{}", target.join("signet.db").display()))
            .await
            .unwrap();
    let digest: signet_storage::Digest = secret.parse().unwrap();
    let page = signet_storage::meta::Page {
        last: None,
        limit: Some(100),
    };
    for name in meta.list_repositories(page).await.unwrap() {
        let held = meta
            .blob_in_repository(&name.parse().unwrap(), &digest)
            .await
            .unwrap();
        assert_eq!(held.is_some(), name == "secret/app", "{name}");
    }
}
