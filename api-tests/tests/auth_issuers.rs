//! External token issuers trusted by public key (`[[auth.issuers]]`): a bearer token
//! signed by such an issuer is accepted like Signet's own, for what its `access` claim
//! grants; tokens signed by another key, expired, for another audience or another
//! repository are refused.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use signet_api_tests::pki::auth_users;
use signet_api_tests::{oci, random_bytes, sha256, Registry};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

enum Key {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Key {
    fn ec() -> Key {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        Key::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap())
    }

    fn rsa() -> Key {
        Key::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }

    fn public_pem(&self) -> String {
        match self {
            Key::Ec(k) => pem(k.public_key().as_der().unwrap().as_ref()),
            Key::Rsa(k) => pem(k.public_key().as_der().unwrap().as_ref()),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let alg = match self {
            Key::Ec(_) => "ES256",
            Key::Rsa(_) => "RS256",
        };
        let input = format!(
            "{}.{}",
            B64URL.encode(serde_json::to_vec(&json!({"alg": alg, "typ": "JWT"})).unwrap()),
            B64URL.encode(serde_json::to_vec(claims).unwrap())
        );
        let rng = SystemRandom::new();
        let sig = match self {
            Key::Ec(k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        format!("{input}.{}", B64URL.encode(sig))
    }
}

fn claims(iss: &str, aud: &str, repo: &str, actions: &[&str], exp: u64) -> Value {
    json!({
        "iss": iss,
        "sub": "carol",
        "aud": aud,
        "exp": exp,
        "nbf": now() - 5,
        "iat": now() - 5,
        "jti": "x1",
        "access": [{"type": "repository", "name": repo, "actions": actions}],
        "admin": true,
    })
}

struct Fixture {
    r: Registry,
    _dir: tempfile::TempDir,
    manifest_url: String,
}

async fn fixture(es: &Key, rsa: &Key) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let es_path = dir.path().join("es.pem");
    let rsa_path = dir.path().join("rsa.pem");
    std::fs::write(&es_path, es.public_pem()).unwrap();
    std::fs::write(&rsa_path, rsa.public_pem()).unwrap();
    let r = Registry::start_with_config(&format!(
        r#"
[auth]
enabled = true
admins = ["root"]
realm = "https://auth.example.com/token"
{users}
[[auth.issuers]]
name = "corp-auth"
public_key = {es_path:?}

[[auth.issuers]]
name = "rsa-auth"
public_key = {rsa_path:?}
service = "registry.example.com"
"#,
        users = auth_users(&[("root", "root-pw")]),
    ));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        format!("Basic {}", STANDARD.encode("root:root-pw"))
            .parse()
            .unwrap(),
    );
    let root = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let manifest = oci::push_image(&root, &r, "team/app", "v1", &[&random_bytes(64)]).await;
    let manifest_url = r.v2(&format!("team/app/manifests/{}", sha256(&manifest)));
    Fixture {
        r,
        _dir: dir,
        manifest_url,
    }
}

async fn get(url: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn tokens_of_trusted_issuers_are_accepted_and_others_refused() {
    let es = Key::ec();
    let rsa = Key::rsa();
    let f = fixture(&es, &rsa).await;
    let url = &f.manifest_url;
    let later = now() + 300;

    // The challenge points at the configured external realm.
    let resp = reqwest::Client::new().get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()[WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer realm=\"https://auth.example.com/token\",service=\"signet\""),
        "{challenge}"
    );

    // ES256, trusted key, right audience and repository: accepted.
    let good = es.sign(&claims("corp-auth", "signet", "team/app", &["pull"], later));
    assert_eq!(get(url, &good).await.status(), StatusCode::OK);
    // RS256, with its own audience.
    let rs = rsa.sign(&claims(
        "rsa-auth",
        "registry.example.com",
        "team/app",
        &["pull"],
        later,
    ));
    assert_eq!(get(url, &rs).await.status(), StatusCode::OK);
    // An audience list containing the service is fine too.
    let mut listed = claims("corp-auth", "signet", "team/app", &["pull"], later);
    listed["aud"] = json!(["other", "signet"]);
    assert_eq!(get(url, &es.sign(&listed)).await.status(), StatusCode::OK);

    // A pull-only token cannot push, and the admin claim of an external token counts
    // for nothing.
    let resp = reqwest::Client::new()
        .post(f.r.v2("team/app/blobs/uploads/"))
        .header(AUTHORIZATION, format!("Bearer {good}"))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ),
        "{}",
        resp.status()
    );
    let sync = get(&format!("{}/v2/_signet/sync/jobs", f.r.url), &good).await;
    assert_eq!(sync.status(), StatusCode::FORBIDDEN);

    // Refused: another key, expired, wrong audience, another repository, an issuer
    // name the key does not belong to, an unknown issuer.
    let other = Key::ec();
    let refused = [
        (
            "another key",
            other.sign(&claims("corp-auth", "signet", "team/app", &["pull"], later)),
        ),
        (
            "expired",
            es.sign(&claims(
                "corp-auth",
                "signet",
                "team/app",
                &["pull"],
                now() - 1,
            )),
        ),
        (
            "wrong audience",
            es.sign(&claims(
                "corp-auth",
                "elsewhere",
                "team/app",
                &["pull"],
                later,
            )),
        ),
        (
            "rsa key, es issuer",
            rsa.sign(&claims("corp-auth", "signet", "team/app", &["pull"], later)),
        ),
        (
            "es key, rsa issuer",
            es.sign(&claims(
                "rsa-auth",
                "registry.example.com",
                "team/app",
                &["pull"],
                later,
            )),
        ),
        (
            "unknown issuer",
            es.sign(&claims("nobody", "signet", "team/app", &["pull"], later)),
        ),
        (
            "posing as signet",
            es.sign(&claims("signet", "signet", "team/app", &["pull"], later)),
        ),
    ];
    for (what, token) in refused {
        let resp = get(url, &token).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let c = resp.headers()[WWW_AUTHENTICATE].to_str().unwrap();
        assert!(c.contains("invalid_token"), "{what}: {c}");
    }
    let elsewhere = es.sign(&claims(
        "corp-auth",
        "signet",
        "team/other",
        &["pull"],
        later,
    ));
    let resp = get(url, &elsewhere).await;
    assert!(
        matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ),
        "another repository: {}",
        resp.status()
    );
}

#[tokio::test]
async fn a_push_token_of_a_trusted_issuer_pushes() {
    let es = Key::ec();
    let rsa = Key::rsa();
    let f = fixture(&es, &rsa).await;
    let token = es.sign(&claims(
        "corp-auth",
        "signet",
        "team/new",
        &["pull", "push"],
        now() + 300,
    ));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    let c = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let manifest = oci::push_image(&c, &f.r, "team/new", "v1", &[&random_bytes(16)]).await;
    let (status, body) = oci::get(&c, &f.r.v2("team/new/manifests/v1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_ref(), manifest.as_slice());
}
