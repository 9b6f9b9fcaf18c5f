//! Cosign fixtures for the verification tests: key pairs made with the `sigstore`
//! crate, `.sig` and `.att` attachments built by hand exactly as `cosign sign --key`
//! and `cosign attest --key` lay them out (so a test can tamper with any part), the
//! crate's own client for signing and verifying, trust configurations, and readers of
//! the coverage extension's verdicts.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sigstore::cosign::constraint::PrivateKeySigner;
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{
    verify_constraints, ClientBuilder, Constraint as _, CosignCapabilities as _, SignatureLayer,
};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{SigStoreSigner, SigningScheme};
use sigstore::registry::{Auth, ClientConfig, ClientProtocol, OciReference};

use crate::oci::{get, push_blob, put_manifest, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use crate::{sha256, Registry};

/// The layer type of a cosign signature's payload.
pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer type of a cosign attestation (and of a DSSE envelope generally).
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
/// The payload type of an in-toto statement in a DSSE envelope.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The annotation that carries a `.sig` layer's base64 signature.
pub const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The empty config of OCI artifacts.
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The one signing scheme cosign uses for generated keys.
const SCHEME: SigningScheme = SigningScheme::ECDSA_P256_SHA256_ASN1;

/// A cosign key pair (ECDSA P-256) made with the `sigstore` crate.
pub struct Key {
    pub signer: SigStoreSigner,
    pub public_pem: String,
}

impl Key {
    pub fn generate() -> Key {
        let signer = SCHEME.create_signer().expect("generate a key pair");
        let public_pem = signer
            .to_sigstore_keypair()
            .expect("key pair")
            .public_key_to_pem()
            .expect("public key PEM");
        Key { signer, public_pem }
    }

    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.signer.sign(bytes).expect("sign")
    }

    /// Writes the public key as `cosign.pub` would be (`<dir>/<name>.pub`); its path.
    pub fn write_public(&self, dir: &Path, name: &str) -> String {
        let path = dir.join(format!("{name}.pub"));
        std::fs::write(&path, &self.public_pem).expect("write the public key");
        path.display().to_string()
    }

    /// The crate's signer is not `Clone`: a second one from the key pair's PEM.
    pub fn clone_signer(&self) -> SigStoreSigner {
        let pem = self
            .signer
            .to_sigstore_keypair()
            .and_then(|pair| pair.private_key_to_pem())
            .expect("private key PEM");
        SigStoreKeyPair::from_pem(pem.as_bytes())
            .and_then(|pair| pair.to_sigstore_signer(&SCHEME))
            .expect("signer from PEM")
    }

    /// `cosign verify --key`'s constraint for this key.
    pub fn verifier(&self) -> Box<dyn VerificationConstraint> {
        public_key_verifier(&self.public_pem)
    }
}

/// `cosign verify --key`'s constraint for the public key `public_pem`.
pub fn public_key_verifier(public_pem: &str) -> Box<dyn VerificationConstraint> {
    Box::new(PublicKeyVerifier::new(public_pem.as_bytes(), &SCHEME).expect("public key verifier"))
}

/// The tag cosign gives an attachment of `subject`: `sha256-<hex>.<suffix>`.
pub fn attachment_tag(subject: &str, suffix: &str) -> String {
    format!("{}.{suffix}", subject.replace(':', "-"))
}

/// The image config cosign writes for its attachment manifests.
pub fn cosign_config(layer_digests: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }))
    .unwrap()
}

/// Pushes a cosign attachment manifest of one layer (`layer_type`, `layer`, with
/// `annotations`) under `tag`; returns the manifest's digest.
pub async fn push_cosign_manifest(
    c: &Client,
    r: &Registry,
    repo: &str,
    tag: &str,
    layer_type: &str,
    layer: &[u8],
    annotations: Value,
) -> String {
    let layer_digest = push_blob(c, r, repo, layer).await;
    let config = cosign_config(std::slice::from_ref(&layer_digest));
    push_blob(c, r, repo, &config).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer.len(),
                    "annotations": annotations}],
    }))
    .unwrap();
    put_manifest(c, r, repo, tag, OCI_MANIFEST, &manifest).await;
    sha256(&manifest)
}

/// Pushes an OCI 1.1 referrer of `subject` (a descriptor) as
/// `oras attach` and cosign v3 push one: an empty config and one `layer` whose media
/// type is the `artifact_type`, with the manifest `annotations` (`Value::Null` for
/// none). Returns the referrer's digest.
pub async fn push_referrer(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: Value,
    artifact_type: &str,
    layer: &[u8],
    annotations: Value,
) -> String {
    let layer_digest = push_blob(c, r, repo, layer).await;
    push_blob(c, r, repo, b"{}").await;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": artifact_type, "digest": layer_digest, "size": layer.len()}],
        "subject": subject,
    });
    if !annotations.is_null() {
        manifest["annotations"] = annotations;
    }
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = sha256(&manifest);
    put_manifest(c, r, repo, &digest, OCI_MANIFEST, &manifest).await;
    digest
}

/// The simple-signing payload `cosign sign` signs: `digest` of `<host>/<repo>`.
pub fn simple_signing_payload(r: &Registry, repo: &str, digest: &str) -> Vec<u8> {
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

/// Pushes the `.sig` of `subject`: one simple-signing layer holding `payload` with
/// the base64 signature `sig_b64`. Returns the `.sig` manifest's digest.
pub async fn push_sig(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &str,
    payload: &[u8],
    sig_b64: &str,
) -> String {
    let tag = attachment_tag(subject, "sig");
    let annotations = json!({ SIG_ANNOTATION: sig_b64 });
    push_cosign_manifest(c, r, repo, &tag, SIMPLESIGNING, payload, annotations).await
}

/// `cosign sign --key` by hand: `key` signs `payload`, pushed as the `.sig` of
/// `subject`. Returns the `.sig` manifest's digest.
pub async fn sign_payload(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &str,
    payload: &[u8],
    key: &Key,
) -> String {
    let sig = B64.encode(key.sign(payload));
    push_sig(c, r, repo, subject, payload, &sig).await
}

/// DSSE's pre-authentication encoding, what a DSSE signature signs.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope over the in-toto `statement`, signed by `signer`.
pub fn dsse_envelope(statement: &[u8], signer: &SigStoreSigner) -> Vec<u8> {
    let signature = signer
        .sign(&pae(IN_TOTO, statement))
        .expect("sign the DSSE envelope");
    serde_json::to_vec(&json!({
        "payloadType": IN_TOTO,
        "payload": B64.encode(statement),
        "signatures": [{"keyid": "", "sig": B64.encode(&signature)}],
    }))
    .unwrap()
}

/// `cosign attest --key` by hand: a DSSE envelope over `statement` signed by `key`,
/// pushed as the `.att` of `subject` with `annotations` on its layer. Returns the
/// `.att` manifest's digest.
pub async fn push_attestation(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &str,
    statement: &[u8],
    annotations: Value,
    key: &Key,
) -> String {
    let envelope = dsse_envelope(statement, &key.signer);
    let tag = attachment_tag(subject, "att");
    push_cosign_manifest(c, r, repo, &tag, DSSE, &envelope, annotations).await
}

/// The crate's cosign client for a plain-HTTP registry.
pub fn cosign_client() -> sigstore::cosign::Client {
    let config = ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    };
    ClientBuilder::default()
        .with_oci_client_config(config)
        .build()
        .expect("cosign client")
}

/// `<host>/<repo>:<tag>` or `<host>/<repo>@<digest>`.
pub fn image_ref(host: &str, repo: &str, reference: &str) -> OciReference {
    let sep = if reference.contains(':') { '@' } else { ':' };
    format!("{host}/{repo}{sep}{reference}")
        .parse()
        .expect("image reference")
}

/// `cosign sign --key` with the crate's client against the registry at `host`:
/// triangulate, sign a simple-signing layer, push the `.sig`. Returns the signed
/// digest.
pub async fn cosign_sign(host: &str, repo: &str, reference: &str, key: &Key) -> String {
    let image = image_ref(host, repo, reference);
    let mut client = cosign_client();
    let (sig_image, digest) = client
        .triangulate(&image, &Auth::Anonymous)
        .await
        .expect("triangulate");
    let mut layer = SignatureLayer::new_unsigned(&image, &digest).expect("payload");
    let signed = PrivateKeySigner::new_with_signer(key.clone_signer())
        .add_constraint(&mut layer)
        .expect("sign");
    assert!(signed, "the signer signed the layer");
    client
        .push_signature(None, &Auth::Anonymous, &sig_image, vec![layer])
        .await
        .expect("push the .sig");
    digest
}

/// `cosign verify` with the crate: pulls the signatures of `repo` at `reference` and
/// checks them against `constraint`; the number of trusted layers, or why not.
pub async fn cosign_verify_with(
    host: &str,
    repo: &str,
    reference: &str,
    constraint: Box<dyn VerificationConstraint>,
) -> Result<usize, String> {
    let layers = cosign_client()
        .trusted_signature_layers(&Auth::Anonymous, &image_ref(host, repo, reference))
        .await
        .map_err(|e| format!("pull signatures: {e}"))?;
    if layers.is_empty() {
        return Err("no signature layers".into());
    }
    verify_constraints(&layers, [constraint].iter()).map_err(|e| {
        format!(
            "{} unsatisfied constraint(s)",
            e.unsatisfied_constraints.len()
        )
    })?;
    Ok(layers.len())
}

/// A `[[trust.roots]]` entry: the cosign public key at `key` trusted for `repos`
/// (every repository when empty). More keys of the root may follow it.
pub fn trust_root(name: &str, key: &str, repos: &[&str]) -> String {
    format!(
        "[[trust.roots]]\nname = \"{name}\"\npublic_key = \"{key}\"\nrepositories = {}\n",
        serde_json::to_string(repos).unwrap()
    )
}

/// A `[[trust.roots]]` entry trusting the OpenPGP public key at `key` (atomic
/// signatures) for `repos` (every repository when empty).
pub fn gpg_trust_root(name: &str, key: &Path, repos: &[&str]) -> String {
    let mut out = format!("[[trust.roots]]\nname = \"{name}\"\n");
    if !repos.is_empty() {
        out.push_str(&format!(
            "repositories = {}\n",
            serde_json::to_string(repos).unwrap()
        ));
    }
    out.push_str(&format!("gpg_keys = [\"{}\"]\n", key.display()));
    out
}

/// A `[trust]` section with `policy` and one cosign public-key root per
/// `(name, public key path, repositories)`.
pub fn trust_config(roots: &[(&str, &str, &[&str])], policy: &str) -> String {
    let mut out = format!("[trust]\npolicy = \"{policy}\"\n");
    for (name, key, repos) in roots {
        out.push_str(&trust_root(name, key, repos));
    }
    out
}

/// The coverage report (`_signet/attachments`) of `repo` at `reference`.
pub async fn coverage(c: &Client, r: &Registry, repo: &str, reference: &str) -> Value {
    let (status, body) = get(c, &r.v2(&format!("{repo}/_signet/attachments/{reference}"))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The coverage report of `repo` at `reference` with its children's (an index's
/// platforms) attachments too (`?recursive=true`).
pub async fn recursive_coverage(c: &Client, r: &Registry, repo: &str, reference: &str) -> Value {
    coverage(c, r, repo, &format!("{reference}?recursive=true")).await
}

/// The one `kind` entry's `verification` of a coverage `attachments` object.
pub fn verification(attachments: &Value, kind: &str) -> Value {
    let entries = attachments[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind}: {attachments}"));
    assert_eq!(entries.len(), 1, "{attachments}");
    entries[0]["verification"].clone()
}

/// The `verification` of the `kind` attachment whose digest is `digest`, in the
/// coverage report of `repo` at `reference`.
pub async fn verdict_of(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: &str,
    kind: &str,
    digest: &str,
) -> Value {
    let report = coverage(c, r, repo, reference).await;
    let entries = report["attachments"][kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind}: {report}"));
    let entry = entries
        .iter()
        .find(|e| e["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not in {report}"));
    entry["verification"].clone()
}

/// `signet --config <config> trust check`, its output whatever the exit status.
pub fn trust_check(config: &Path) -> std::process::Output {
    std::process::Command::new(crate::signet_binary())
        .arg("--config")
        .arg(config)
        .args(["trust", "check"])
        .output()
        .expect("run signet trust check")
}

/// The digest `reference` of `repo` names, by HEAD (which a signature policy always
/// answers); `None` when the registry has no such manifest.
pub async fn head_digest(c: &Client, r: &Registry, repo: &str, reference: &str) -> Option<String> {
    let resp = c
        .head(r.v2(&format!("{repo}/manifests/{reference}")))
        .header(
            "Accept",
            format!(
                "{OCI_MANIFEST}, {OCI_INDEX}, application/vnd.docker.distribution.manifest.v2+json"
            ),
        )
        .send()
        .await
        .expect("HEAD the manifest");
    match resp.status() {
        StatusCode::OK => Some(
            resp.headers()["Docker-Content-Digest"]
                .to_str()
                .unwrap()
                .to_string(),
        ),
        StatusCode::NOT_FOUND => None,
        other => panic!("HEAD {repo}:{reference}: {other}"),
    }
}
