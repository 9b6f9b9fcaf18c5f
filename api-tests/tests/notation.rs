//! Notary Project (notation) signatures: referrers of artifact type
//! `application/vnd.cncf.notary.signature`, pushed as notation pushes them
//! (`signet_api_tests::notation`). Signet verifies them
//! against `[[trust.roots]]` CA certificates and identities, or a notation
//! `trustpolicy.json` and trust store; the verdicts show in the coverage extension,
//! decide pulls under `enforce`, and decide what a sync moves.

use std::path::Path;
use std::process::Output;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{coverage, head_digest, trust_check, verification};
use signet_api_tests::notation::{
    acme, envelope, no_timestamp, notation_root, push_signature, testing, write, Signing, TestCa,
    ARTIFACT_TYPE, COSE_MEDIA_TYPE, ID, JWS_MEDIA_TYPE,
};
use signet_api_tests::oci::{get, push_image};
use signet_api_tests::{client, sha256, Registry};

/// Makes an envelope (and says its media type) for an image manifest.
type MakeEnvelope<'a> = dyn Fn(&[u8]) -> (Vec<u8>, &'static str) + 'a;

async fn pull(c: &Client, r: &Registry, repo: &str, reference: &str) -> StatusCode {
    get(c, &r.v2(&format!("{repo}/manifests/{reference}")))
        .await
        .0
}

#[tokio::test]
async fn notation_signatures_verify_in_both_encodings_and_decide_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Root");
    let rogue = TestCa::new("Rogue Root");
    let ca_file = write(dir.path(), "acme.pem", &ca.pem);
    let r = Registry::start_with_config(&format!(
        "[trust]\npolicy = \"enforce\"\n{}",
        notation_root("release", &ca_file, ID, &["prod/**"])
    ));
    let c = client();
    let signer = acme(&ca);

    for (repo, media_type) in [("prod/jws", JWS_MEDIA_TYPE), ("prod/cose", COSE_MEDIA_TYPE)] {
        let image = push_image(&c, &r, repo, "v1", &[repo.as_bytes()]).await;
        let digest = sha256(&image);
        assert_eq!(
            pull(&c, &r, repo, "v1").await,
            StatusCode::FORBIDDEN,
            "{repo} unsigned"
        );
        let sig = push_signature(
            &c,
            &r,
            repo,
            &image,
            media_type,
            &envelope(&signer, media_type, &image),
        )
        .await;
        let report = coverage(&c, &r, repo, "v1").await;
        let entry = &report["attachments"]["signature"][0];
        assert_eq!(entry["digest"], sig.as_str(), "{report}");
        assert_eq!(entry["format"], "notation", "{report}");
        let v = verification(&report["attachments"], "signature");
        assert_eq!(v["verdict"], "valid", "{report}");
        assert_eq!(v["root"], "release");
        assert!(v["signer"].as_str().unwrap().contains("CN=release"), "{v}");
        assert_eq!(
            pull(&c, &r, repo, "v1").await,
            StatusCode::OK,
            "{repo} signed"
        );
        // The referrers API lists it with notation's artifact type.
        let (_, body) = get(&c, &r.v2(&format!("{repo}/referrers/{digest}"))).await;
        let referrers: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            referrers["manifests"][0]["artifactType"], ARTIFACT_TYPE,
            "{referrers}"
        );
    }

    // A changed envelope, a rogue CA's signer, another signer of the trusted CA, and a
    // signature naming another image: invalid, and the pull stays refused.
    let cases: Vec<(&str, Box<MakeEnvelope>, &str)> = vec![
        (
            "prod/tampered",
            Box::new(|d: &[u8]| {
                let mut e = envelope(&signer, JWS_MEDIA_TYPE, d);
                let text = String::from_utf8(e.clone()).unwrap();
                let at = text.find("\"signature\":\"").unwrap() + 20;
                e[at] = if e[at] == b'A' { b'B' } else { b'A' };
                (e, JWS_MEDIA_TYPE)
            }),
            "bad signature",
        ),
        (
            "prod/rogue",
            Box::new(|d: &[u8]| (envelope(&acme(&rogue), COSE_MEDIA_TYPE, d), COSE_MEDIA_TYPE)),
            "authenticity",
        ),
        (
            "prod/mallory",
            Box::new(|d: &[u8]| {
                let mallory = ca.signer(&testing::subject("Acme", "mallory"), 2020, 2080);
                (envelope(&mallory, JWS_MEDIA_TYPE, d), JWS_MEDIA_TYPE)
            }),
            "not a trusted identity",
        ),
        (
            "prod/other",
            Box::new(|_: &[u8]| {
                (
                    envelope(&signer, JWS_MEDIA_TYPE, b"another manifest"),
                    JWS_MEDIA_TYPE,
                )
            }),
            "the signature is for",
        ),
        (
            "prod/misdescribed",
            Box::new(|d: &[u8]| {
                let signing = Signing {
                    subject_size: d.len() as u64 + 1,
                    ..Signing::of_manifest(d)
                };
                (
                    testing::jws(&signer, &signing, no_timestamp),
                    JWS_MEDIA_TYPE,
                )
            }),
            "the signature describes",
        ),
    ];
    for (repo, make, why) in cases {
        let image = push_image(&c, &r, repo, "v1", &[repo.as_bytes()]).await;
        let (env, media_type) = make(&image);
        push_signature(&c, &r, repo, &image, media_type, &env).await;
        let report = coverage(&c, &r, repo, "v1").await;
        let v = verification(&report["attachments"], "signature");
        assert_eq!(v["verdict"], "invalid", "{repo}: {report}");
        assert!(v["reason"].as_str().unwrap().contains(why), "{repo}: {v}");
        assert_eq!(
            pull(&c, &r, repo, "v1").await,
            StatusCode::FORBIDDEN,
            "{repo}"
        );
    }

    // `signet trust check` describes the root; a bad identity stops it.
    let config = write(
        dir.path(),
        "signet.toml",
        &format!(
            "[trust]\n{}",
            notation_root("release", &ca_file, ID, &["prod/**"])
        ),
    );
    let out = trust_check(Path::new(&config));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("notation: 1 ca"),
        "{text}"
    );
    let bad = write(
        dir.path(),
        "bad.toml",
        &format!(
            "[trust]\n{}",
            notation_root("release", &ca_file, "x509.subject: CN=release", &[])
        ),
    );
    let out = trust_check(Path::new(&bad));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must name at least C, ST and O"));
}

#[tokio::test]
async fn a_notation_trust_policy_and_trust_store_configure_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Root");
    let store = dir.path().join("truststore");
    std::fs::create_dir_all(store.join("x509/ca/acme")).unwrap();
    write(&store.join("x509/ca/acme"), "root.crt", &ca.pem);
    let policy = write(
        dir.path(),
        "trustpolicy.json",
        &json!({"version": "1.0", "trustPolicies": [
            {"name": "apps", "registryScopes": ["registry.example/team/app"],
             "signatureVerification": {"level": "strict"},
             "trustStores": ["ca:acme"], "trustedIdentities": [ID]},
            {"name": "legacy", "registryScopes": ["registry.example/legacy/tool"],
             "signatureVerification": {"level": "skip"}},
            {"name": "elsewhere", "registryScopes": ["other.example/team/app"],
             "signatureVerification": {"level": "skip"}}
        ]})
        .to_string(),
    );
    let r = Registry::start_with_config(&format!(
        "[trust]\npolicy = \"enforce\"\nregistry_names = [\"registry.example\"]\n\n[trust.notation]\ntrust_policy = \"{policy}\"\ntrust_store = \"{}\"\n",
        store.display()
    ));
    let c = client();
    let image = push_image(&c, &r, "team/app", "v1", &[b"app"]).await;
    assert_eq!(pull(&c, &r, "team/app", "v1").await, StatusCode::FORBIDDEN);
    let env = envelope(&acme(&ca), JWS_MEDIA_TYPE, &image);
    push_signature(&c, &r, "team/app", &image, JWS_MEDIA_TYPE, &env).await;
    let v = verification(
        &coverage(&c, &r, "team/app", "v1").await["attachments"],
        "signature",
    );
    assert_eq!(v["verdict"], "valid", "{v}");
    assert_eq!(v["root"], "apps", "{v}");
    assert_eq!(pull(&c, &r, "team/app", "v1").await, StatusCode::OK);
    // `skip`: nothing is asked of legacy/tool, unsigned it pulls.
    push_image(&c, &r, "legacy/tool", "v1", &[b"tool"]).await;
    assert_eq!(pull(&c, &r, "legacy/tool", "v1").await, StatusCode::OK);
    // A repository no statement scopes for this registry: `[trust] policy` applies.
    push_image(&c, &r, "team/unscoped", "v1", &[b"x"]).await;
    assert_eq!(
        pull(&c, &r, "team/unscoped", "v1").await,
        StatusCode::FORBIDDEN
    );
}

/// `signet sync run <job> --json` on the mirror.
fn sync(mirror: &Registry, job: &str) -> Value {
    let out: Output = mirror
        .cli(&["sync", "run", job, "--json"])
        .output()
        .expect("run signet sync");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary: {e}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_publishes_only_what_a_notation_signature_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Acme Root");
    let rogue = TestCa::new("Rogue Root");
    let ca_file = write(dir.path(), "acme.pem", &ca.pem);
    let upstream = Registry::start();
    let c = client();
    let good = push_image(&c, &upstream, "apps/good", "v1", &[b"good"]).await;
    let env = envelope(&acme(&ca), COSE_MEDIA_TYPE, &good);
    push_signature(&c, &upstream, "apps/good", &good, COSE_MEDIA_TYPE, &env).await;
    let bad = push_image(&c, &upstream, "apps/bad", "v1", &[b"bad"]).await;
    let env = envelope(&acme(&rogue), JWS_MEDIA_TYPE, &bad);
    push_signature(&c, &upstream, "apps/bad", &bad, JWS_MEDIA_TYPE, &env).await;

    let mirror = Registry::start_with_config(&format!(
        "[trust]\npolicy = \"enforce\"\n{}\n[[sync.jobs]]\nname = \"mirror\"\nupstream = \"{}\"\nrepositories = [\"apps/good\", \"apps/bad\"]\ndestination_prefix = \"mirror\"\n",
        notation_root("release", &ca_file, ID, &["mirror/**"]),
        upstream.url
    ));
    let summary = sync(&mirror, "mirror");
    assert_eq!(summary["tags_verified"], 1, "{summary}");
    assert_eq!(summary["tags_refused"], 1, "{summary}");
    assert_eq!(
        head_digest(&c, &mirror, "mirror/apps/good", "v1").await,
        Some(sha256(&good))
    );
    assert_eq!(
        head_digest(&c, &mirror, "mirror/apps/bad", "v1").await,
        None
    );
    assert_eq!(
        pull(&c, &mirror, "mirror/apps/good", "v1").await,
        StatusCode::OK
    );
}
