//! Server-side verification and the signature policy: cosign `.sig` and DSSE `.att`
//! attachments signed with the `sigstore` crate, checked by Signet against the trust
//! roots of its configuration; the verdicts in the coverage extension; `enforce` and
//! `audit` on manifest pulls (including a platform manifest covered by its signed
//! index); `signet trust check`.

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::oci::{
    error_code, get, push_blob, push_image, put_manifest, OCI_INDEX, OCI_MANIFEST,
};
use signet_api_tests::{client, sha256, signet_binary, Registry};
use sigstore::cosign::constraint::PrivateKeySigner;
use sigstore::cosign::{ClientBuilder, Constraint as _, CosignCapabilities as _, SignatureLayer};
use sigstore::crypto::{SigStoreSigner, SigningScheme};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const PROVENANCE: &str = "https://slsa.dev/provenance/v0.2";

// ---------------------------------------------------------------------------------
// Keys and signing (as sigstore.rs does)
// ---------------------------------------------------------------------------------

struct Key {
    signer: SigStoreSigner,
    public_pem: String,
}

impl Key {
    fn generate() -> Key {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
            .create_signer()
            .expect("generate a key pair");
        let public_pem = signer
            .to_sigstore_keypair()
            .expect("key pair")
            .public_key_to_pem()
            .expect("public key PEM");
        Key { signer, public_pem }
    }

    fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.signer.sign(bytes).expect("sign")
    }

    /// Writes the public key as `cosign.pub` would be, returns its path.
    fn write_public(&self, dir: &Path, name: &str) -> String {
        let path = dir.join(format!("{name}.pub"));
        std::fs::write(&path, &self.public_pem).unwrap();
        path.display().to_string()
    }
}

fn cosign() -> sigstore::cosign::Client {
    let config = ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    };
    ClientBuilder::default()
        .with_oci_client_config(config)
        .build()
        .expect("cosign client")
}

/// `cosign sign --key` with the crate's client; returns the signed digest.
async fn cosign_sign(r: &Registry, repo: &str, reference: &str, key: &Key) -> String {
    let sep = if reference.contains(':') { '@' } else { ':' };
    let image: OciReference = format!("{}/{repo}{sep}{reference}", r.host)
        .parse()
        .unwrap();
    let mut client = cosign();
    let (sig_image, digest) = client
        .triangulate(&image, &Auth::Anonymous)
        .await
        .expect("triangulate");
    let mut layer = SignatureLayer::new_unsigned(&image, &digest).expect("payload");
    let signed = PrivateKeySigner::new_with_signer(clone_signer(key))
        .add_constraint(&mut layer)
        .expect("sign");
    assert!(signed);
    client
        .push_signature(None, &Auth::Anonymous, &sig_image, vec![layer])
        .await
        .expect("push the .sig");
    digest
}

/// The crate's signer is not `Clone`: round-trip the key pair through PEM.
fn clone_signer(key: &Key) -> SigStoreSigner {
    let pair = key.signer.to_sigstore_keypair().unwrap();
    let pem = pair.private_key_to_pem().unwrap();
    sigstore::crypto::signing_key::SigStoreKeyPair::from_pem(pem.as_bytes())
        .unwrap()
        .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
        .unwrap()
}

fn attachment_tag(subject: &str, suffix: &str) -> String {
    format!("{}.{suffix}", subject.replace(':', "-"))
}

fn cosign_config(layer_digests: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }))
    .unwrap()
}

/// Pushes a `.sig` for `subject` by hand: one simple-signing layer with `payload` and
/// the given base64 signature annotation.
async fn push_sig(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &str,
    payload: &[u8],
    sig_b64: &str,
) -> String {
    let layer = push_blob(c, r, repo, payload).await;
    let config = cosign_config(std::slice::from_ref(&layer));
    push_blob(c, r, repo, &config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": SIMPLESIGNING, "digest": layer, "size": payload.len(),
                    "annotations": {SIG_ANNOTATION: sig_b64}}],
    }))
    .unwrap();
    put_manifest(
        c,
        r,
        repo,
        &attachment_tag(subject, "sig"),
        OCI_MANIFEST,
        &manifest,
    )
    .await;
    sha256(&manifest)
}

fn simple_signing_payload(r: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{repo}", r.host)},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap()
}

fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

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
    let signature = key.sign(&pae(IN_TOTO, &statement));
    let envelope = serde_json::to_vec(&json!({
        "payloadType": IN_TOTO,
        "payload": B64.encode(&statement),
        "signatures": [{"keyid": "", "sig": B64.encode(&signature)}],
    }))
    .unwrap();
    let layer = push_blob(c, r, repo, &envelope).await;
    let config = cosign_config(std::slice::from_ref(&layer));
    push_blob(c, r, repo, &config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": DSSE, "digest": layer, "size": envelope.len(),
                    "annotations": {SIG_ANNOTATION: "", "predicateType": PROVENANCE}}],
    }))
    .unwrap();
    put_manifest(
        c,
        r,
        repo,
        &attachment_tag(subject, "att"),
        OCI_MANIFEST,
        &manifest,
    )
    .await;
    sha256(&manifest)
}

async fn coverage(c: &Client, r: &Registry, repo: &str, reference: &str) -> Value {
    let (status, body) = get(c, &r.v2(&format!("{repo}/_signet/attachments/{reference}"))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The one `kind` entry's `verification` of a coverage `attachments` object.
fn verification(attachments: &Value, kind: &str) -> Value {
    let entries = attachments[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind}: {attachments}"));
    assert_eq!(entries.len(), 1, "{attachments}");
    entries[0]["verification"].clone()
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

fn trust_config(roots: &[(&str, &str, &[&str])], policy: &str) -> String {
    let mut out = format!("[trust]\npolicy = \"{policy}\"\n");
    for (name, key, repos) in roots {
        out.push_str(&format!(
            "[[trust.roots]]\nname = \"{name}\"\npublic_key = \"{key}\"\nrepositories = {}\n",
            serde_json::to_string(repos).unwrap()
        ));
    }
    out
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
    let good = cosign_sign(&r, "team/app", "v1", &team).await;
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
    cosign_sign(&r, "team/other", "v1", &stranger).await;
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
    cosign_sign(&r, "elsewhere/app", "v1", &team).await;
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
    let config = keys.path().join("signet.toml");
    std::fs::write(
        &config,
        trust_config(&[("team-key", &team_pub, &["team/*"])], "off"),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(signet_binary())
            .arg("--config")
            .arg(&config)
            .arg("attachments")
            .args(args)
            .arg("--data-dir")
            .arg(&r.data_dir)
            .output()
            .unwrap();
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
    let key = Key::generate();
    let public = key.write_public(keys.path(), "cosign");
    let r = Registry::start_with_config(&trust_config(
        &[("release", &public, &["prod/**"])],
        "enforce",
    ));
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
    cosign_sign(&r, "prod/stranger", "v1", &Key::generate()).await;
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
    let index_digest = cosign_sign(&r, repo, "v1", &key).await;
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
    cosign_sign(&r, repo, "v1", &key).await;
    assert_eq!(pull_status(&c, &r, repo, "v1").await.0, StatusCode::OK);
    let (status, body) = pull_status(&c, &r, repo, &sha256(&arm64)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&body).contains("inherit_from_index is off"));
    // Signing the platform itself (cosign sign --recursive does) lets it through.
    cosign_sign(&r, repo, &sha256(&arm64), &key).await;
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
    let out = Command::new(signet_binary())
        .arg("--config")
        .arg(&config)
        .args(["trust", "check"])
        .output()
        .unwrap();
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
    let out = Command::new(signet_binary())
        .arg("--config")
        .arg(&config)
        .args(["trust", "check"])
        .output()
        .unwrap();
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
    let out = Command::new(signet_binary())
        .arg("--config")
        .arg(&config)
        .args(["trust", "check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}
