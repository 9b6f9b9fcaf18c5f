//! Notary Project signatures as notation pushes them, for tests: a signature manifest
//! (an empty config, one JWS or COSE envelope layer, the image as subject) over an
//! envelope made by `signet_verify::notation::testing`, and the `[[trust.roots]]`
//! entry that trusts its CA.

use std::path::Path;

use reqwest::Client;
use serde_json::json;
pub use signet_verify::notation::testing::{self, Signing, TestCa, TestSigner};
pub use signet_verify::notation::{ARTIFACT_TYPE, COSE_MEDIA_TYPE, JWS_MEDIA_TYPE};

use crate::oci::{descriptor, push_blob, put_manifest, OCI_EMPTY, OCI_MANIFEST};
use crate::{sha256, Registry};

pub const ID: &str = "x509.subject: C=US, ST=WA, O=Acme, CN=release";

pub fn acme(ca: &TestCa) -> TestSigner {
    ca.signer(&testing::subject("Acme", "release"), 2020, 2080)
}

pub fn no_timestamp(_: &[u8]) -> Option<Vec<u8>> {
    None
}

/// A signature of the image manifest `manifest` in `media_type`'s encoding by `signer`.
pub fn envelope(signer: &TestSigner, media_type: &str, manifest: &[u8]) -> Vec<u8> {
    let signing = Signing::of_manifest(manifest);
    match media_type {
        JWS_MEDIA_TYPE => testing::jws(signer, &signing, no_timestamp),
        _ => testing::cose(signer, &signing, no_timestamp),
    }
}

/// What `notation sign` pushes: the envelope blob, the empty config and a signature
/// manifest whose subject is `subject`; the manifest's digest.
pub async fn push_signature(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &[u8],
    media_type: &str,
    envelope: &[u8],
) -> String {
    push_blob(c, r, repo, b"{}").await;
    push_blob(c, r, repo, envelope).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor(media_type, envelope)],
        "subject": descriptor(OCI_MANIFEST, subject),
        "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"},
    }))
    .unwrap();
    let digest = sha256(&manifest);
    put_manifest(c, r, repo, &digest, OCI_MANIFEST, &manifest).await;
    digest
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A `[[trust.roots]]` entry trusting `ca_file` for identity `id` on `repos`.
pub fn notation_root(name: &str, ca_file: &str, id: &str, repos: &[&str]) -> String {
    format!(
        "[[trust.roots]]\nname = \"{name}\"\nrepositories = {repos:?}\nnotation_ca = [\"{ca_file}\"]\nnotation_identities = [\"{id}\"]\n"
    )
}
