//! The security suite: Signet with `[auth]` on, driven over HTTP. Every endpoint without
//! credentials, with wrong ones, with a token for another repository, an expired
//! token, a token whose scope was edited, a pull-only token trying to write; path
//! traversal in names and digests, oversized headers and bodies. Each is refused with
//! the right status and OCI error, and nothing stored changes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use signet_api_tests::oci::{self, expect_error, header, snapshot, Snapshot, OCI_MANIFEST};
use signet_api_tests::pki::{auth_users, bcrypt_hash, write_token_key};
use signet_api_tests::{random_bytes, sha256, signet_binary, Registry};

const ROBOT_TOKEN: &str = "signet-robot-3f9a1c0e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b";

/// alice pushes and deletes `team/*`; bob pulls `team/*`; the robot `ci` pushes
/// `team/*`; anyone pulls `public/**`; root is admin. `extra` goes into `[auth]`.
fn config(extra: &str) -> String {
    format!(
        r#"
[auth]
enabled = true
admins = ["root"]
{extra}
{users}
[[auth.robots]]
name = "ci"
token_sha256 = "{robot}"

[[auth.rules]]
repositories = ["team/*"]
pull = ["bob"]
push = ["alice", "ci"]
delete = ["alice"]

[[auth.rules]]
repositories = ["public/**"]
pull = ["anonymous", "*"]
push = ["alice"]
"#,
        users = auth_users(&[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("root", "root-pw")
        ]),
        robot = hex::encode(Sha256::digest(ROBOT_TOKEN.as_bytes())),
    )
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A client that sends `authorization` on every request.
fn client_with(authorization: &str) -> Client {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

fn anonymous() -> Client {
    signet_api_tests::client()
}

/// A token from the token service: `(status, body)`.
async fn token(r: &Registry, authorization: Option<&str>, scopes: &[&str]) -> (StatusCode, Value) {
    let mut url = format!("{}/v2/token?service=signet", r.url);
    for s in scopes {
        url.push_str(&format!(
            "&scope={}",
            s.replace('/', "%2F").replace(':', "%3A")
        ));
    }
    let mut req = anonymous().get(url);
    if let Some(a) = authorization {
        req = req.header(AUTHORIZATION, a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn bearer(r: &Registry, authorization: Option<&str>, scopes: &[&str]) -> String {
    let (status, body) = token(r, authorization, scopes).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// The claims of a JWT (unverified: the test only reads them).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn granted(token: &str) -> Vec<(String, Vec<String>)> {
    claims(token)["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// The registry with one image in `team/app`, one in `public/base`, one in
/// `private/x` (pushed by root), and an atomic signature on the team image.
struct Fixture {
    r: Registry,
    root: Client,
    team_digest: String,
    team_layer: String,
}

async fn fixture(extra: &str) -> Fixture {
    let r = Registry::start_with_config(&config(extra));
    let root = client_with(&basic("root", "root-pw"));
    let layer = random_bytes(64);
    let manifest = oci::push_image(&root, &r, "team/app", "v1", &[&layer]).await;
    oci::push_image(&root, &r, "public/base", "v1", &[&random_bytes(32)]).await;
    oci::push_image(&root, &r, "private/x", "v1", &[&random_bytes(32)]).await;
    let team_digest = sha256(&manifest);
    let sig = json!({
        "schemaVersion": 2,
        "name": format!("{team_digest}@{}", "a".repeat(32)),
        "type": "atomic",
        "content": "aGVsbG8=",
    });
    let resp = root
        .put(format!(
            "{}/extensions/v2/team/app/signatures/{team_digest}",
            r.url
        ))
        .json(&sig)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    Fixture {
        r,
        root,
        team_digest,
        team_layer: sha256(&layer),
    }
}

impl Fixture {
    async fn snapshot(&self) -> Snapshot {
        snapshot(
            &self.root,
            &self.r,
            &["team/app", "public/base", "private/x"],
        )
        .await
    }

    /// Every endpoint of the registry on `team/app`, with a body where it takes one.
    fn endpoints(&self) -> Vec<(Method, String, Vec<u8>)> {
        let d = &self.team_digest;
        let l = &self.team_layer;
        let v2 = |p: &str| self.r.v2(p);
        let ext = |p: &str| format!("{}/extensions/v2/{p}", self.r.url);
        let manifest = oci::image_manifest(b"{}", &[], json!({}));
        vec![
            (Method::GET, v2(""), vec![]),
            (Method::GET, v2("_catalog"), vec![]),
            (Method::GET, v2("team/app/tags/list"), vec![]),
            (Method::GET, v2("team/app/manifests/v1"), vec![]),
            (Method::HEAD, v2(&format!("team/app/manifests/{d}")), vec![]),
            (Method::PUT, v2("team/app/manifests/v2"), manifest),
            (
                Method::DELETE,
                v2(&format!("team/app/manifests/{d}")),
                vec![],
            ),
            (Method::GET, v2(&format!("team/app/blobs/{l}")), vec![]),
            (Method::HEAD, v2(&format!("team/app/blobs/{l}")), vec![]),
            (Method::DELETE, v2(&format!("team/app/blobs/{l}")), vec![]),
            (Method::POST, v2("team/app/blobs/uploads/"), vec![]),
            (
                Method::POST,
                v2(&format!("team/app/blobs/uploads/?digest={}", sha256(b"x"))),
                b"x".to_vec(),
            ),
            (
                Method::POST,
                v2(&format!("team/app/blobs/uploads/?mount={l}&from=private/x")),
                vec![],
            ),
            (
                Method::PATCH,
                v2("team/app/blobs/uploads/some-session"),
                b"abc".to_vec(),
            ),
            (
                Method::PUT,
                v2(&format!("team/app/blobs/uploads/some-session?digest={l}")),
                vec![],
            ),
            (
                Method::GET,
                v2("team/app/blobs/uploads/some-session"),
                vec![],
            ),
            (
                Method::DELETE,
                v2("team/app/blobs/uploads/some-session"),
                vec![],
            ),
            (Method::GET, v2(&format!("team/app/referrers/{d}")), vec![]),
            (Method::GET, v2("team/app/_signet/attachments/v1"), vec![]),
            (
                Method::GET,
                ext(&format!("team/app/signatures/{d}")),
                vec![],
            ),
            (
                Method::PUT,
                ext(&format!("team/app/signatures/{d}")),
                serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "name": format!("{d}@{}", "b".repeat(32)),
                    "type": "atomic",
                    "content": "aGVsbG8=",
                }))
                .unwrap(),
            ),
            (
                Method::DELETE,
                ext(&format!("team/app/signatures/{d}/{}", "a".repeat(32))),
                vec![],
            ),
            (Method::GET, format!("{}/metrics", self.r.url), vec![]),
        ]
    }
}

async fn send(c: &Client, method: &Method, url: &str, body: &[u8]) -> reqwest::Response {
    let mut req = c.request(method.clone(), url);
    if !body.is_empty() {
        req = req.header("Content-Type", OCI_MANIFEST).body(body.to_vec());
    }
    req.send().await.unwrap()
}

/// A 401 with the OCI body and a bearer challenge naming the token service.
async fn expect_challenge(resp: reqwest::Response, r: &Registry, what: &str) -> String {
    let headers = resp.headers().clone();
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        String::from_utf8_lossy(&body)
    );
    if !body.is_empty() {
        oci::assert_error_body(&body, "UNAUTHORIZED");
    }
    let challenge = header(&headers, "www-authenticate").to_string();
    assert!(
        challenge.starts_with(&format!(
            "Bearer realm=\"http://{}/v2/token\",service=\"signet\"",
            r.host
        )),
        "{what}: challenge {challenge:?}"
    );
    challenge
}

#[tokio::test]
async fn every_endpoint_refuses_missing_and_wrong_credentials_and_nothing_changes() {
    let f = fixture("").await;
    let before = f.snapshot().await;
    let wrong = [
        client_with(&basic("alice", "wrong")),
        client_with(&basic("nobody", "alice-pw")),
        client_with(&basic("ci", "not-the-token")),
        client_with("Basic !!!not-base64"),
        client_with("Digest username=\"alice\""),
        client_with("Bearer not.a.token"),
    ];
    for (method, url, body) in f.endpoints() {
        let what = format!("{method} {url}");
        let resp = send(&anonymous(), &method, &url, &body).await;
        let challenge = expect_challenge(resp, &f.r, &format!("anonymous {what}")).await;
        if url.contains("/team/app/") {
            assert!(
                challenge.contains(",scope=\"repository:team/app:"),
                "{what}: {challenge}"
            );
        }
        for c in &wrong {
            let resp = send(c, &method, &url, &body).await;
            expect_challenge(resp, &f.r, &format!("wrong credentials {what}")).await;
        }
    }
    assert_eq!(f.snapshot().await, before);
}

#[tokio::test]
async fn version_check_challenges_and_keeps_the_signatures_header() {
    let f = fixture("").await;
    let resp = anonymous().get(f.r.v2("")).send().await.unwrap();
    assert_eq!(
        header(resp.headers(), "x-registry-supports-signatures"),
        "1"
    );
    assert_eq!(
        header(resp.headers(), "docker-distribution-api-version"),
        "registry/2.0"
    );
    let challenge = expect_challenge(resp, &f.r, "GET /v2/").await;
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"http://{}/v2/token\",service=\"signet\"",
            f.r.host
        )
    );
    let resp = client_with(&basic("bob", "bob-pw"))
        .get(f.r.v2(""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(resp.headers(), "x-registry-supports-signatures"),
        "1"
    );
}

#[tokio::test]
async fn basic_credentials_follow_the_rules() {
    let f = fixture("").await;
    let alice = client_with(&basic("alice", "alice-pw"));
    let bob = client_with(&basic("bob", "bob-pw"));
    let ci = client_with(&basic("ci", ROBOT_TOKEN));
    // alice and the robot push; bob pulls.
    oci::push_image(&alice, &f.r, "team/alice", "v1", &[&random_bytes(16)]).await;
    oci::push_image(&ci, &f.r, "team/ci", "v1", &[&random_bytes(16)]).await;
    let (status, _) = oci::get(&bob, &f.r.v2("team/ci/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    let before = f.snapshot().await;
    // bob may not push nor delete: 403 DENIED.
    let manifest = oci::image_manifest(b"{}", &[], json!({}));
    let resp = send(
        &bob,
        &Method::PUT,
        &f.r.v2("team/app/manifests/v9"),
        &manifest,
    )
    .await;
    expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    let resp = bob
        .delete(f.r.v2(&format!("team/app/manifests/{}", f.team_digest)))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    let resp = bob
        .post(f.r.v2("team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    // Nobody but root reads private/x; the robot may not delete.
    for c in [&alice, &bob, &ci] {
        let resp = c
            .get(f.r.v2("private/x/manifests/v1"))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    }
    let resp = ci
        .delete(f.r.v2(&format!("team/app/manifests/{}", f.team_digest)))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    // Anonymous callers pull public/**, and nothing else.
    let (status, _) = oci::get(&anonymous(), &f.r.v2("public/base/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    let resp = anonymous()
        .get(f.r.v2("team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_challenge(resp, &f.r, "anonymous pull of team/app").await;
    assert_eq!(f.snapshot().await, before);
    // alice deletes in team/*.
    let resp = alice
        .delete(f.r.v2(&format!("team/app/manifests/{}", f.team_digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn catalog_lists_only_what_the_caller_may_pull() {
    let f = fixture("").await;
    let list = |c: Client| {
        let url = f.r.v2("_catalog");
        async move {
            let resp = c.get(url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let v: Value = resp.json().await.unwrap();
            v["repositories"].clone()
        }
    };
    assert_eq!(
        list(f.root.clone()).await,
        json!(["private/x", "public/base", "team/app"])
    );
    assert_eq!(
        list(client_with(&basic("bob", "bob-pw"))).await,
        json!(["public/base", "team/app"])
    );
    let anon = bearer(&f.r, None, &["registry:catalog:*"]).await;
    assert_eq!(
        list(client_with(&format!("Bearer {anon}"))).await,
        json!(["public/base"])
    );
    // Pagination counts only visible repositories.
    let resp = client_with(&basic("bob", "bob-pw"))
        .get(f.r.v2("_catalog?n=1"))
        .send()
        .await
        .unwrap();
    let link = header(resp.headers(), "link").to_string();
    assert!(link.contains("last=public/base"), "{link}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["public/base"]));
}

#[tokio::test]
async fn tokens_carry_only_the_granted_scopes() {
    let f = fixture("").await;
    let alice = basic("alice", "alice-pw");
    let bob = basic("bob", "bob-pw");

    // The challenge leads to the token service; a token opens the door.
    let t = bearer(&f.r, Some(&alice), &["repository:team/app:pull,push"]).await;
    assert_eq!(
        granted(&t),
        vec![(
            "team/app".to_string(),
            vec!["pull".to_string(), "push".to_string()]
        )]
    );
    let c = claims(&t);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "signet");
    let (status, body) = token(&f.r, Some(&alice), &["repository:team/app:pull"]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    let with_token = client_with(&format!("Bearer {t}"));
    oci::push_image(&with_token, &f.r, "team/app", "v2", &[&random_bytes(8)]).await;

    // Push asked where only pull is allowed: pull granted.
    let t = bearer(&f.r, Some(&bob), &["repository:team/app:pull,push"]).await;
    assert_eq!(
        granted(&t),
        vec![("team/app".to_string(), vec!["pull".to_string()])]
    );
    // Scopes repeat; what is not allowed at all is left out.
    let t = bearer(
        &f.r,
        Some(&bob),
        &[
            "repository:team/app:pull",
            "repository:private/x:pull",
            "repository:public/base:*",
        ],
    )
    .await;
    assert_eq!(
        granted(&t),
        vec![
            ("team/app".to_string(), vec!["pull".to_string()]),
            ("public/base".to_string(), vec!["pull".to_string()]),
        ]
    );
    // Anonymous tokens get what anonymous may do.
    let t = bearer(
        &f.r,
        None,
        &["repository:team/app:pull", "repository:public/base:pull"],
    )
    .await;
    assert_eq!(
        granted(&t),
        vec![("public/base".to_string(), vec!["pull".to_string()])]
    );
    // The robot gets tokens with its token as password.
    let t = bearer(
        &f.r,
        Some(&basic("ci", ROBOT_TOKEN)),
        &["repository:team/x:push"],
    )
    .await;
    assert_eq!(
        granted(&t),
        vec![("team/x".to_string(), vec!["push".to_string()])]
    );
    // Wrong credentials get no token at all.
    let (status, body) = token(
        &f.r,
        Some(&basic("alice", "nope")),
        &["repository:team/app:pull"],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    // POST: the OAuth2 password grant docker uses.
    let resp = anonymous()
        .post(format!("{}/v2/token", f.r.url))
        .form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "bob-pw"),
            ("service", "signet"),
            ("client_id", "docker"),
            ("scope", "repository:team/app:pull,push"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["scope"], "repository:team/app:pull");
    assert!(
        v.get("refresh_token").is_none(),
        "no refresh tokens without a configured key"
    );
    let resp = anonymous()
        .post(format!("{}/v2/token", f.r.url))
        .form(&[
            ("grant_type", "password"),
            ("username", "bob"),
            ("password", "x"),
        ])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn bad_tokens_are_refused_and_nothing_changes() {
    let f = fixture("").await;
    let before = f.snapshot().await;
    let alice = basic("alice", "alice-pw");
    let bob = basic("bob", "bob-pw");
    let d = f.team_digest.clone();

    // A pull-only token trying to write: bob may not, so 403.
    let pull_only = bearer(&f.r, Some(&bob), &["repository:team/app:pull,push"]).await;
    let c = client_with(&format!("Bearer {pull_only}"));
    let (status, _) = oci::get(&c, &f.r.v2("team/app/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    let manifest = oci::image_manifest(b"{}", &[], json!({}));
    for (method, url, body) in [
        (
            Method::PUT,
            f.r.v2("team/app/manifests/v1"),
            manifest.clone(),
        ),
        (
            Method::DELETE,
            f.r.v2(&format!("team/app/manifests/{d}")),
            vec![],
        ),
        (
            Method::DELETE,
            f.r.v2(&format!("team/app/blobs/{}", f.team_layer)),
            vec![],
        ),
        (Method::POST, f.r.v2("team/app/blobs/uploads/"), vec![]),
        (
            Method::PATCH,
            f.r.v2("team/app/blobs/uploads/x"),
            b"abc".to_vec(),
        ),
        (
            Method::PUT,
            f.r.v2(&format!("team/app/blobs/uploads/x?digest={d}")),
            vec![],
        ),
    ] {
        let resp = send(&c, &method, &url, &body).await;
        expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    }

    // A token for another repository: 403 where the holder may not act at all, 401
    // with a challenge for the right scope where only the token is too narrow.
    let resp = c
        .get(f.r.v2("private/x/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    let narrow = bearer(&f.r, Some(&alice), &["repository:team/app:pull,push"]).await;
    let resp = client_with(&format!("Bearer {narrow}"))
        .put(f.r.v2("team/other/manifests/v1"))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    let challenge = expect_challenge(resp, &f.r, "token for another repository").await;
    assert!(
        challenge.contains("scope=\"repository:team/other:pull,push\""),
        "{challenge}"
    );

    // A token whose scope was edited: the signature no longer holds.
    let parts: Vec<&str> = pull_only.split('.').collect();
    let mut edited = claims(&pull_only);
    edited["access"] =
        json!([{"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete"]}]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&edited).unwrap()),
        parts[2]
    );
    let resp = client_with(&format!("Bearer {forged}"))
        .delete(f.r.v2(&format!("team/app/manifests/{d}")))
        .send()
        .await
        .unwrap();
    let challenge = expect_challenge(resp, &f.r, "edited token").await;
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    // alg "none" is no way around the signature either.
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let resp = client_with(&format!("Bearer {none}"))
        .get(f.r.v2("team/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    expect_challenge(resp, &f.r, "alg none").await;
    // A token from another registry (another key) is not ours.
    let other = Registry::start_with_config(&config(""));
    let foreign = bearer(
        &other,
        Some(&alice),
        &["repository:team/app:pull,push,delete"],
    )
    .await;
    let resp = client_with(&format!("Bearer {foreign}"))
        .delete(f.r.v2(&format!("team/app/manifests/{d}")))
        .send()
        .await
        .unwrap();
    expect_challenge(resp, &f.r, "foreign token").await;
    assert_eq!(f.snapshot().await, before);
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let r = Registry::start_with_config(&config("token_ttl_secs = 1"));
    let t = bearer(
        &r,
        Some(&basic("alice", "alice-pw")),
        &["repository:team/app:pull,push"],
    )
    .await;
    let c = client_with(&format!("Bearer {t}"));
    let resp = c.get(r.v2("team/app/tags/list")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "fresh token works");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = c.get(r.v2("team/app/tags/list")).send().await.unwrap();
    let challenge = expect_challenge(resp, &r, "expired token").await;
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let resp = c
        .post(r.v2("team/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    expect_challenge(resp, &r, "expired token").await;
}

#[tokio::test]
async fn refresh_tokens_with_a_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("token.pem");
    write_token_key(&key_path);
    let r = Registry::start_with_config(&config(&format!(
        "token_key = {:?}",
        key_path.to_str().unwrap()
    )));
    // docker login: GET with offline_token=true.
    let resp = client_with(&basic("alice", "alice-pw"))
        .get(format!(
            "{}/v2/token?service=signet&offline_token=true&client_id=docker",
            r.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let refresh = v["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();
    // A refresh token is no access token.
    let resp = client_with(&format!("Bearer {refresh}"))
        .get(r.v2("team/app/tags/list"))
        .send()
        .await
        .unwrap();
    expect_challenge(resp, &r, "refresh token used as access token").await;
    // docker push: POST grant_type=refresh_token.
    let resp = anonymous()
        .post(format!("{}/v2/token", r.url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "signet"),
            ("client_id", "docker"),
            ("scope", "repository:team/app:pull,push"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    let access = v["access_token"].as_str().unwrap();
    assert_eq!(claims(access)["sub"], "alice");
    oci::push_image(
        &client_with(&format!("Bearer {access}")),
        &r,
        "team/app",
        "v1",
        &[&random_bytes(8)],
    )
    .await;
    // An access token is no refresh token.
    let resp = anonymous()
        .post(format!("{}/v2/token", r.url))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", access)])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn extensions_follow_the_rules() {
    let f = fixture("").await;
    let d = &f.team_digest;
    let bob = client_with(&basic("bob", "bob-pw"));
    let alice = client_with(&basic("alice", "alice-pw"));
    let sigs = format!("{}/extensions/v2/team/app/signatures/{d}", f.r.url);
    // GET = pull.
    let resp = bob.get(&sigs).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = bob
        .get(f.r.v2("team/app/_signet/attachments/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = bob
        .get(f.r.v2(&format!("team/app/referrers/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // PUT = push.
    let sig = json!({
        "schemaVersion": 2,
        "name": format!("{d}@{}", "c".repeat(32)),
        "type": "atomic",
        "content": "aGVsbG8=",
    });
    let resp = bob.put(&sigs).json(&sig).send().await.unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    let resp = alice.put(&sigs).json(&sig).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // DELETE = admin: alice may delete manifests, but not signatures.
    let one = format!("{sigs}/{}", "c".repeat(32));
    let resp = alice.delete(&one).send().await.unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    let t = bearer(
        &f.r,
        Some(&basic("alice", "alice-pw")),
        &["repository:team/app:*"],
    )
    .await;
    let resp = client_with(&format!("Bearer {t}"))
        .delete(&one)
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::FORBIDDEN, "DENIED").await;
    let resp = f.root.delete(&one).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn cross_repository_mounts_need_pull_on_the_source() {
    let f = fixture("").await;
    let alice = client_with(&basic("alice", "alice-pw"));
    let private_layer = {
        let v: Value =
            serde_json::from_slice(&oci::get(&f.root, &f.r.v2("private/x/manifests/v1")).await.1)
                .unwrap();
        v["layers"][0]["digest"].as_str().unwrap().to_string()
    };
    // From a repository alice cannot read (or from anywhere): an upload session instead.
    for query in [
        format!("mount={private_layer}&from=private/x"),
        format!("mount={private_layer}"),
    ] {
        let resp = alice
            .post(f.r.v2(&format!("team/app/blobs/uploads/?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{query}");
        let resp = alice
            .head(f.r.v2(&format!("team/app/blobs/{private_layer}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{query}");
    }
    // From one she can read: mounted.
    let resp = alice
        .post(f.r.v2(&format!(
            "team/new/blobs/uploads/?mount={}&from=team/app",
            f.team_layer
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

/// Sends raw bytes (paths a URL library would normalise) and reads the status line.
fn raw_status(r: &Registry, request: &str) -> u16 {
    let mut stream = TcpStream::connect(&r.host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

#[tokio::test]
async fn traversal_long_names_and_oversized_requests_are_refused() {
    let f = fixture("").await;
    let before = f.snapshot().await;
    let bob = basic("bob", "bob-pw");
    let root = basic("root", "root-pw");
    let get = |path: &str, auth: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n",
            f.r.host
        )
    };
    // bob may pull team/*, never private/x: no spelling of the path gets him there.
    for path in [
        "/v2/team/../private/x/manifests/v1",
        "/v2/team/app/../../private/x/manifests/v1",
        "/v2/team/%2e%2e/private/x/manifests/v1",
        "/v2/team%2F..%2Fprivate%2Fx/manifests/v1",
        "/v2/team/app%2F..%2F..%2Fprivate%2Fx/manifests/v1",
        "/v2/team/./app/manifests/v1",
        "/v2/team//app/manifests/v1",
        "/v2/team/app/manifests/..%2F..%2Fprivate%2Fx%2Fmanifests%2Fv1",
        "/extensions/v2/team/../private/x/signatures/sha256:00",
    ] {
        let status = raw_status(&f.r, &get(path, &bob));
        assert!(
            [400, 403, 404].contains(&status),
            "bob GET {path}: {status}"
        );
    }
    // Even an admin cannot name a repository with traversal or a bad digest.
    for (path, want) in [
        ("/v2/team/../private/x/manifests/v1", 400),
        ("/v2/team/%2e%2e/private/x/manifests/v1", 400),
        ("/v2/team%2F..%2Fprivate%2Fx/manifests/v1", 400),
        ("/v2/team/app/blobs/sha256:..%2F..%2F..%2Fetc%2Fpasswd", 400),
        ("/v2/team/app/blobs/sha256:../../etc/passwd", 404),
    ] {
        let status = raw_status(&f.r, &get(path, &root));
        assert_eq!(status, want, "root GET {path}");
    }
    // Very long names.
    // Very long names: refused by the name grammar, as the request is read, before any
    // rule is looked at.
    let long = "a".repeat(5000);
    let (outside, inside) = (
        format!("/v2/private/{long}/manifests/v1"),
        format!("/v2/team/{long}/manifests/v1"),
    );
    assert_eq!(raw_status(&f.r, &get(&outside, &bob)), 400);
    assert_eq!(raw_status(&f.r, &get(&inside, &bob)), 400);
    assert_eq!(raw_status(&f.r, &get(&inside, &root)), 400);
    // Oversized headers are cut off before any handler runs.
    let huge = format!(
        "GET /v2/team/app/manifests/v1 HTTP/1.1\r\nHost: {}\r\nAuthorization: {bob}\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        f.r.host,
        "x".repeat(256 * 1024)
    );
    let status = raw_status(&f.r, &huge);
    assert!(
        [400, 413, 431].contains(&status),
        "oversized header: {status}"
    );
    let huge_auth = format!("Basic {}", "A".repeat(200 * 1024));
    let status = raw_status(&f.r, &get("/v2/team/app/manifests/v1", &huge_auth));
    assert!(
        [400, 401, 413, 431].contains(&status),
        "oversized credentials: {status}"
    );
    // Oversized bodies: a manifest over the limit, a token form over 16 KiB.
    let alice = client_with(&basic("alice", "alice-pw"));
    let resp = alice
        .put(f.r.v2("team/app/manifests/big"))
        .header("Content-Type", OCI_MANIFEST)
        .body(vec![b' '; 5 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    expect_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "MANIFEST_INVALID").await;
    let resp = anonymous()
        .post(format!("{}/v2/token", f.r.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&username=bob&password={}",
            "x".repeat(64 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // The server is alive and nothing changed.
    assert_eq!(f.snapshot().await, before);
}

#[tokio::test]
async fn audit_log_names_who_what_and_from_where() {
    let f = fixture("").await;
    let bob = client_with(&basic("bob", "bob-pw"));
    let resp = bob
        .delete(f.r.v2(&format!("team/app/manifests/{}", f.team_digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = anonymous()
        .get(f.r.v2("private/x/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = f
        .root
        .delete(f.r.v2(&format!("team/app/manifests/{}", f.team_digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = strip_ansi(&f.r.stderr());
    let audit: Vec<&str> = log.lines().filter(|l| l.contains(" audit:")).collect();
    let has = |parts: &[&str]| audit.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        has(&[
            "push-manifest",
            "who=root",
            "repository=team/app",
            "peer=127.0.0.1"
        ]),
        "{audit:#?}"
    );
    assert!(has(&["push-blob", "who=root"]), "{audit:#?}");
    assert!(has(&["signature-write", "who=root"]), "{audit:#?}");
    assert!(
        has(&[
            "denied",
            "who=bob",
            "status=403",
            "peer=127.0.0.1",
            "DELETE"
        ]),
        "{audit:#?}"
    );
    assert!(
        has(&["denied", "who=anonymous", "status=401", "private/x"]),
        "{audit:#?}"
    );
    assert!(
        has(&["event=\"delete\"", "who=root"]) || has(&["event=delete", "who=root"]),
        "{audit:#?}"
    );
    // No password, hash or token ever reaches the log.
    for secret in ["bob-pw", "root-pw", "alice-pw", "$2b$", ROBOT_TOKEN] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn htpasswd_users_log_in_and_other_hash_kinds_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("htpasswd");
    std::fs::write(
        &file,
        format!("# team\ncarol:{}\n", bcrypt_hash("carol-pw")),
    )
    .unwrap();
    let cfg = format!(
        "[auth]\nenabled = true\nhtpasswd = {:?}\n[[auth.rules]]\nrepositories = [\"**\"]\npush = [\"carol\"]\n",
        file.to_str().unwrap()
    );
    let r = Registry::start_with_config(&cfg);
    let carol = client_with(&basic("carol", "carol-pw"));
    oci::push_image(&carol, &r, "any/where", "v1", &[&random_bytes(8)]).await;
    let resp = client_with(&basic("carol", "nope"))
        .get(r.v2(""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    std::fs::write(
        &file,
        format!("carol:{}\ndave:$apr1$abc$def\n", bcrypt_hash("x")),
    )
    .unwrap();
    let cfg_path = dir.path().join("signet.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let out = std::process::Command::new(signet_binary())
        .arg("--config")
        .arg(&cfg_path)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2") && err.contains("dave") && err.contains("htpasswd -B"),
        "{err}"
    );
}

#[tokio::test]
async fn credential_checks_are_cached() {
    // A deliberately slow hash: every request re-checking it would take seconds each.
    let cfg = format!(
        "[auth]\nenabled = true\nadmins = [\"slow\"]\n[[auth.users]]\nname = \"slow\"\npassword_bcrypt = \"{}\"\n",
        bcrypt::hash("slow-pw", 13).unwrap()
    );
    let r = Registry::start_with_config(&cfg);
    let c = client_with(&basic("slow", "slow-pw"));
    let started = std::time::Instant::now();
    let resp = c.get(r.v2("")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let first = started.elapsed();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        let resp = c.get(r.v2("_catalog")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let twenty = started.elapsed();
    assert!(
        twenty < first * 5,
        "20 cached requests took {twenty:?}, one verification {first:?}"
    );
}

#[tokio::test]
async fn rate_limits_and_upload_session_caps_answer_429() {
    let r = Registry::start_with_config(
        "[rate_limit]\nrequests_per_sec = 1.0\nburst = 5\nmax_upload_sessions_per_client = 2\n",
    );
    let c = anonymous();
    let mut statuses = Vec::new();
    let mut retry_after = String::new();
    for _ in 0..10 {
        let resp = c.get(r.v2("")).send().await.unwrap();
        statuses.push(resp.status().as_u16());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = header(resp.headers(), "retry-after").to_string();
            oci::assert_error_body(&resp.bytes().await.unwrap(), "TOOMANYREQUESTS");
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert!(retry_after.parse::<u64>().unwrap() >= 1);

    let r = Registry::start_with_config("[rate_limit]\nmax_upload_sessions_per_client = 2\n");
    let first = oci::start_upload(&c, &r, "cap/x").await;
    oci::start_upload(&c, &r, "cap/x").await;
    let resp = c.post(r.v2("cap/x/blobs/uploads/")).send().await.unwrap();
    let headers = expect_error(resp, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    assert!(!header(&headers, "retry-after").is_empty());
    // Finishing (or cancelling) a session frees its place.
    let resp = c.delete(&first).send().await.unwrap();
    assert!(resp.status().is_success());
    oci::start_upload(&c, &r, "cap/x").await;
}

#[tokio::test]
async fn auth_is_off_by_default() {
    let r = Registry::start();
    let c = anonymous();
    oci::push_image(&c, &r, "open/app", "v1", &[&random_bytes(8)]).await;
    let (status, _) = oci::get(&c, &r.v2("_catalog")).await;
    assert_eq!(status, StatusCode::OK);
    let resp = c.get(format!("{}/v2/token", r.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
