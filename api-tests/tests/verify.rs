//! Server-side verification and the signature policy: cosign `.sig` and DSSE `.att`
//! attachments signed with the `sigstore` crate, checked by Signet against the trust
//! roots of its configuration; the verdicts in the coverage extension; `enforce` and
//! `audit` on manifest pulls (including a platform manifest covered by its signed
//! index); `signet trust check`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{
    attachment_tag, cosign_sign, coverage, push_attestation, push_sig, simple_signing_payload,
    trust_check, trust_config, verification, Key, SIG_ANNOTATION,
};
use signet_api_tests::oci::{error_code, get, push_image, put_manifest, OCI_INDEX, OCI_MANIFEST};
use signet_api_tests::{client, sha256, Registry};

const PROVENANCE: &str = "https://slsa.dev/provenance/v0.2";

/// `cosign attest --key`: a DSSE envelope over an in-toto statement about `about`,
/// pushed as the `.att` of `subject`.
async fn cosign_attest(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &str,
    about: &str,
    key: &Key,
) -> String {
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": PROVENANCE,
        "subject": [{"name": format!("{}/{repo}", r.host), "digest": {"sha256": about.trim_start_matches("sha256:")}}],
        "predicate": {"builder": {"id": "https://signet.example/builder"}},
    }))
    .unwrap();
    let annotations = json!({SIG_ANNOTATION: "", "predicateType": PROVENANCE});
    push_attestation(c, r, repo, subject, &statement, annotations, key).await
}

async fn pull_status(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: &str,
) -> (StatusCode, Vec<u8>) {
    let (status, body) = get(c, &r.v2(&format!("{repo}/manifests/{reference}"))).await;
    (status, body.to_vec())
}

/// A registry enforcing signatures by one cosign key (root `release`, its public key
/// written into `dir`) on `prod/**`.
fn enforcing_prod(dir: &std::path::Path) -> (Key, Registry) {
    let key = Key::generate();
    let public = key.write_public(dir, "cosign");
    let r = Registry::start_with_config(&trust_config(
        &[("release", &public, &["prod/**"])],
        "enforce",
    ));
    (key, r)
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn verdicts_for_valid_wrong_key_tampered_mismatched_untrusted_and_dsse() {
    let keys = tempfile::tempdir().unwrap();
    let team = Key::generate();
    let stranger = Key::generate();
    let team_pub = team.write_public(keys.path(), "team");
    let r = Registry::start_with_config(&trust_config(
        &[("team-key", &team_pub, &["team/*"])],
        "off",
    ));
    let c = client();

    // Signed with the trusted key, by the cosign client: valid.
    push_image(&c, &r, "team/app", "v1", &[b"good layer"]).await;
    let good = cosign_sign(&r.host, "team/app", "v1", &team).await;
    let report = coverage(&c, &r, "team/app", "v1").await;
    let v = verification(&report["attachments"], "signature");
    assert_eq!(v["verdict"], "valid", "{report}");
    assert_eq!(v["root"], "team-key");
    // A second call reads the same verdict (cached).
    assert_eq!(
        verification(
            &coverage(&c, &r, "team/app", &good).await["attachments"],
            "signature"
        ),
        v
    );

    // A DSSE attestation with the trusted key: valid, with its predicate type.
    cosign_attest(&c, &r, "team/app", &good, &good, &team).await;
    let report = coverage(&c, &r, "team/app", "v1").await;
    let v = verification(&report["attachments"], "attestation");
    assert_eq!(v["verdict"], "valid", "{report}");
    assert_eq!(v["predicateType"], PROVENANCE);

    // Signed with another key: invalid (bad signature) where the root applies.
    push_image(&c, &r, "team/other", "v1", &[b"other layer"]).await;
    cosign_sign(&r.host, "team/other", "v1", &stranger).await;
    let report = coverage(&c, &r, "team/other", "v1").await;
    let v = verification(&report["attachments"], "signature");
    assert_eq!(v["verdict"], "invalid", "{report}");
    assert!(
        v["reason"].as_str().unwrap().contains("bad signature"),
        "{v}"
    );

    // A DSSE attestation by another key: invalid.
    let other = sha256(&push_image(&c, &r, "team/att", "v1", &[b"att layer"]).await);
    cosign_attest(&c, &r, "team/att", &other, &other, &stranger).await;
    let v = verification(
        &coverage(&c, &r, "team/att", "v1").await["attachments"],
        "attestation",
    );
    assert_eq!(v["verdict"], "invalid", "{v}");

    // A repository no root covers: no-trust-root.
    push_image(&c, &r, "elsewhere/app", "v1", &[b"elsewhere layer"]).await;
    cosign_sign(&r.host, "elsewhere/app", "v1", &team).await;
    let v = verification(
        &coverage(&c, &r, "elsewhere/app", "v1").await["attachments"],
        "signature",
    );
    assert_eq!(v["verdict"], "no-trust-root", "{v}");

    // Tampered: the signature annotation swapped for a valid signature of other bytes.
    let tampered = sha256(&push_image(&c, &r, "team/tampered", "v1", &[b"tampered layer"]).await);
    let payload = simple_signing_payload(&r, "team/tampered", &tampered);
    let wrong_sig = B64.encode(team.sign(b"some other payload"));
    push_sig(&c, &r, "team/tampered", &tampered, &payload, &wrong_sig).await;
    let v = verification(
        &coverage(&c, &r, "team/tampered", "v1").await["attachments"],
        "signature",
    );
    assert_eq!(v["verdict"], "invalid", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("bad signature"),
        "{v}"
    );

    // Garbage in the annotation: invalid, malformed.
    let garbage = sha256(&push_image(&c, &r, "team/garbage", "v1", &[b"garbage layer"]).await);
    let payload = simple_signing_payload(&r, "team/garbage", &garbage);
    push_sig(&c, &r, "team/garbage", &garbage, &payload, "not base64 !!").await;
    let v = verification(
        &coverage(&c, &r, "team/garbage", "v1").await["attachments"],
        "signature",
    );
    assert_eq!(v["verdict"], "invalid", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("malformed"), "{v}");

    // A correctly signed payload that names another digest (copied from `good`).
    let copied = sha256(&push_image(&c, &r, "team/copied", "v1", &[b"copied layer"]).await);
    let payload = simple_signing_payload(&r, "team/app", &good);
    let sig = B64.encode(team.sign(&payload));
    push_sig(&c, &r, "team/copied", &copied, &payload, &sig).await;
    let v = verification(
        &coverage(&c, &r, "team/copied", "v1").await["attachments"],
        "signature",
    );
    assert_eq!(v["verdict"], "invalid", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("digest mismatch"),
        "{v}"
    );
    // The same payload hand-signed over its own digest is valid.
    let own = sha256(&push_image(&c, &r, "team/own", "v1", &[b"own layer"]).await);
    let payload = simple_signing_payload(&r, "team/own", &own);
    push_sig(
        &c,
        &r,
        "team/own",
        &own,
        &payload,
        &B64.encode(team.sign(&payload)),
    )
    .await;
    let v = verification(
        &coverage(&c, &r, "team/own", "v1").await["attachments"],
        "signature",
    );
    assert_eq!(v["verdict"], "valid", "{v}");

    // `signet attachments` shows the same verdicts, in the tree and in its JSON.
    // (The registry's own configuration: the same trust roots, the same stores.)
    let cli = |args: &[&str]| {
        let mut all = vec!["attachments"];
        all.extend_from_slice(args);
        let out = r.cli(&all).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let tree = cli(&["team/app:v1"]);
    assert!(tree.contains(" — valid (root team-key)"), "{tree}");
    assert!(
        tree.contains(&format!(" — valid (root team-key, predicate {PROVENANCE})")),
        "{tree}"
    );
    let tree = cli(&["team/copied:v1"]);
    assert!(tree.contains(" — invalid: digest mismatch"), "{tree}");
    let json: Value = serde_json::from_str(&cli(&["team/tampered:v1", "--json"])).unwrap();
    assert_eq!(
        verification(&json["attachments"], "signature")["verdict"],
        "invalid"
    );

    // Policy off: everything is served.
    assert_eq!(
        pull_status(&c, &r, "team/other", "v1").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn enforce_refuses_unsigned_images_and_lets_platforms_of_a_signed_index_through() {
    let keys = tempfile::tempdir().unwrap();
    let (key, r) = enforcing_prod(keys.path());
    let c = client();

    // Pushing is never refused; pulling an unsigned image is.
    let unsigned = push_image(&c, &r, "prod/unsigned", "v1", &[b"unsigned layer"]).await;
    for reference in ["v1".to_string(), sha256(&unsigned)] {
        let (status, body) = pull_status(&c, &r, "prod/unsigned", &reference).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error_code(&body), "DENIED");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("no signature"), "{text}");
    }
    // HEAD tells only the digest (signers resolve what they sign with it): answered.
    let head = c
        .head(r.v2("prod/unsigned/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);

    // Signed with a stranger's key: still refused, saying why.
    push_image(&c, &r, "prod/stranger", "v1", &[b"stranger layer"]).await;
    cosign_sign(&r.host, "prod/stranger", "v1", &Key::generate()).await;
    let (status, body) = pull_status(&c, &r, "prod/stranger", "v1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("bad signature"));

    // A multi-arch index signed without --recursive: index and platforms pull.
    let repo = "prod/multi";
    let amd64 = push_image(&c, &r, repo, "amd64", &[b"amd64 layer"]).await;
    let arm64 = push_image(&c, &r, repo, "arm64", &[b"arm64 layer"]).await;
    let platforms: Vec<Value> = [(&amd64, "amd64"), (&arm64, "arm64")]
        .iter()
        .map(|(m, arch)| {
            json!({
                "mediaType": OCI_MANIFEST, "digest": sha256(m), "size": m.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": platforms,
    }))
    .unwrap();
    put_manifest(&c, &r, repo, "v1", OCI_INDEX, &index).await;
    assert_eq!(
        pull_status(&c, &r, repo, &sha256(&arm64)).await.0,
        StatusCode::FORBIDDEN
    );
    let index_digest = cosign_sign(&r.host, repo, "v1", &key).await;
    assert_eq!(index_digest, sha256(&index));
    assert_eq!(pull_status(&c, &r, repo, "v1").await.0, StatusCode::OK);
    for child in [&amd64, &arm64] {
        let (status, body) = pull_status(&c, &r, repo, &sha256(child)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    // The coverage of a platform shows the index's valid signature.
    let report = coverage(&c, &r, repo, &sha256(&arm64)).await;
    assert_eq!(
        verification(&report["coveredBy"][0]["attachments"], "signature")["verdict"],
        "valid"
    );

    // Signatures stay readable (the crate pulled them to sign again above), and so
    // do attachments by digest and blobs of refused images.
    let sig_tag = attachment_tag(&index_digest, "sig");
    assert_eq!(pull_status(&c, &r, repo, &sig_tag).await.0, StatusCode::OK);
    let layer_digest = sha256(b"unsigned layer");
    let (status, _) = get(&c, &r.v2(&format!("prod/unsigned/blobs/{layer_digest}"))).await;
    assert_eq!(status, StatusCode::OK);

    // Repositories no root covers follow the default policy (here enforce too).
    push_image(&c, &r, "dev/app", "v1", &[b"dev layer"]).await;
    assert_eq!(
        pull_status(&c, &r, "dev/app", "v1").await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn without_inherit_from_index_a_platform_needs_its_own_signature() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let public = key.write_public(keys.path(), "cosign");
    let mut toml = trust_config(&[("release", &public, &[])], "enforce");
    toml = toml.replace(
        "policy = \"enforce\"\n",
        "policy = \"enforce\"\ninherit_from_index = false\n",
    );
    let r = Registry::start_with_config(&toml);
    let c = client();
    let repo = "prod/multi";
    let amd64 = push_image(&c, &r, repo, "amd64", &[b"amd64 layer"]).await;
    let arm64 = push_image(&c, &r, repo, "arm64", &[b"arm64 layer"]).await;
    let platforms: Vec<Value> = [(&amd64, "amd64"), (&arm64, "arm64")]
        .iter()
        .map(|(m, arch)| {
            json!({
                "mediaType": OCI_MANIFEST, "digest": sha256(m), "size": m.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platforms,
    }))
    .unwrap();
    put_manifest(&c, &r, repo, "v1", OCI_INDEX, &index).await;
    cosign_sign(&r.host, repo, "v1", &key).await;
    assert_eq!(pull_status(&c, &r, repo, "v1").await.0, StatusCode::OK);
    let (status, body) = pull_status(&c, &r, repo, &sha256(&arm64)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("inherit_from_index is off"));
    // Signing the platform itself (cosign sign --recursive does) lets it through.
    cosign_sign(&r.host, repo, &sha256(&arm64), &key).await;
    assert_eq!(
        pull_status(&c, &r, repo, &sha256(&arm64)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        pull_status(&c, &r, repo, &sha256(&amd64)).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn audit_serves_and_logs() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let public = key.write_public(keys.path(), "cosign");
    let r = Registry::start_with_config(&trust_config(&[("release", &public, &["**"])], "audit"));
    let c = client();
    let unsigned = sha256(&push_image(&c, &r, "team/app", "v1", &[b"audited layer"]).await);
    assert_eq!(
        pull_status(&c, &r, "team/app", "v1").await.0,
        StatusCode::OK
    );
    let mut logged = false;
    for _ in 0..50 {
        let log = r.stderr();
        if log.contains("manifest without a valid signature") && log.contains(&unsigned) {
            logged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(logged, "no audit line:\n{}", r.stderr());
}

#[test]
fn trust_check_validates_keys_and_prints_what_each_root_covers() {
    let dir = tempfile::tempdir().unwrap();
    let public = Key::generate().write_public(dir.path(), "cosign");
    let config = dir.path().join("signet.toml");
    let mut toml = trust_config(
        &[
            ("release", &public, &["team/*", "prod/**"]),
            ("all", &public, &[]),
        ],
        "audit",
    );
    toml.push_str("[[trust.roots]]\nname = \"strict\"\npublic_key = \"");
    toml.push_str(&public);
    toml.push_str("\"\nrepositories = [\"prod/**\"]\npolicy = \"enforce\"\n");
    std::fs::write(&config, &toml).unwrap();
    let out = trust_check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 root(s), default policy audit, inherit_from_index true"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "root release: cosign public key (ECDSA P-256), covers team/*, prod/**, policy audit"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "root all: cosign public key (ECDSA P-256), covers every repository, policy audit"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "root strict: cosign public key (ECDSA P-256), covers prod/**, policy enforce"
        ),
        "{stdout}"
    );

    // A file that is not a public key is refused, naming the root.
    let bad = dir.path().join("bad.pub");
    std::fs::write(
        &bad,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        trust_config(&[("broken", &bad.display().to_string(), &[])], "off"),
    )
    .unwrap();
    let out = trust_check(&config);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing file too; and the server refuses to start with it.
    std::fs::write(
        &config,
        trust_config(&[("gone", "/nonexistent/cosign.pub", &[])], "off"),
    )
    .unwrap();
    let out = trust_check(&config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// `podman pull` and `skopeo copy` under `enforce`: an unsigned image is refused with
/// the registry's 403, the same image pulls once a trusted key signed it.
#[tokio::test(flavor = "multi_thread")]
async fn enforce_refuses_podman_and_skopeo_pulls_of_unsigned_images() {
    use signet_api_tests::gpg::{accept_anything_policy, oci_layout};
    use signet_api_tests::{require_tool, run};
    use std::process::Command;
    require_tool("podman");
    require_tool("skopeo");
    let dir = tempfile::tempdir().unwrap();
    let (key, r) = enforcing_prod(dir.path());
    let layout = oci_layout(dir.path());
    let image = format!("{}/prod/app:v1", r.host);
    let policy = accept_anything_policy(dir.path());
    run(Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{image}")));

    let skopeo_pull = |to: &str| {
        Command::new("skopeo")
            .arg("--policy")
            .arg(&policy)
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("dir:{}", dir.path().join(to).display()))
            .output()
            .unwrap()
    };
    let podman_pull = || {
        Command::new("podman")
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--runroot")
            .arg(dir.path().join("run"))
            .args(["--storage-driver", "vfs", "pull", "--tls-verify=false"])
            .arg(&image)
            .output()
            .unwrap()
    };
    for out in [skopeo_pull("unsigned"), podman_pull()] {
        assert!(!out.status.success(), "an unsigned image must not pull");
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            stderr.contains("403") || stderr.contains("denied"),
            "{stderr}"
        );
    }

    cosign_sign(&r.host, "prod/app", "v1", &key).await;
    for out in [skopeo_pull("signed"), podman_pull()] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
