//! Cosign signatures and attestations with a real cosign client — the Rust `sigstore`
//! crate — against the real server: sign, push, pull and verify; multi-arch coverage;
//! appending a second signature under `If-Match`; skopeo copying the `.sig` along;
//! deleting a subject with its attachments; and `signet attachments` over the result.

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{
    self, attachment_tag, cosign_client, cosign_config, cosign_verify_with, coverage,
    dsse_envelope, head_digest, pae, public_key_verifier, push_cosign_manifest, recursive_coverage,
    DSSE, SIG_ANNOTATION, SIMPLESIGNING,
};
use signet_api_tests::oci::{
    error_code, get, push_blob, push_image, put_manifest, OCI_INDEX, OCI_MANIFEST,
};
use signet_api_tests::{client, run, sha256, Registry};
use sigstore::cosign::constraint::PrivateKeySigner;
use sigstore::cosign::verification_constraint::VerificationConstraint;
use sigstore::cosign::{Constraint as _, CosignCapabilities as _, SignatureLayer};
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, SigStoreSigner, Signature, SigningScheme};
use sigstore::registry::{Auth, OciReference};

const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const COSIGN_ATT_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.att.v1+json";
const PROVENANCE: &str = "https://slsa.dev/provenance/v0.2";
const KEY_PASSWORD: &[u8] = b"signet test key";

// ---------------------------------------------------------------------------------
// Keys and the cosign client
// ---------------------------------------------------------------------------------

/// A cosign key pair as the CLI keeps it: an encrypted private key PEM (scrypt +
/// secretbox) and a public key PEM.
struct Key {
    encrypted_pem: String,
    public_pem: String,
}

impl Key {
    fn generate() -> Key {
        let key = cosign::Key::generate();
        let pair = key.signer.to_sigstore_keypair().expect("key pair");
        Key {
            encrypted_pem: pair
                .private_key_to_encrypted_pem(KEY_PASSWORD)
                .expect("encrypt the private key")
                .to_string(),
            public_pem: key.public_pem,
        }
    }

    /// A signer read back from the encrypted PEM, as `cosign sign --key` does.
    fn signer(&self) -> SigStoreSigner {
        SigStoreKeyPair::from_encrypted_pem(self.encrypted_pem.as_bytes(), KEY_PASSWORD)
            .expect("decrypt the private key")
            .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
            .expect("signer")
    }

    fn verification_key(&self) -> CosignVerificationKey {
        CosignVerificationKey::from_pem(
            self.public_pem.as_bytes(),
            &SigningScheme::ECDSA_P256_SHA256_ASN1,
        )
        .expect("verification key")
    }

    fn verifier(&self) -> Box<dyn VerificationConstraint> {
        public_key_verifier(&self.public_pem)
    }
}

fn image_ref(r: &Registry, repo: &str, reference: &str) -> OciReference {
    cosign::image_ref(&r.host, repo, reference)
}

/// Signs `repo` at `reference` the way `cosign sign --key` does with the crate's
/// client: triangulate, a simple-signing payload, sign, push the `.sig` (which the crate
/// replaces). Returns the signed digest and the signature layer.
async fn cosign_sign(r: &Registry, repo: &str, reference: &str, key: &Key) -> String {
    let image = image_ref(r, repo, reference);
    let mut client = cosign_client();
    let (sig_image, digest) = client
        .triangulate(&image, &Auth::Anonymous)
        .await
        .expect("triangulate");
    assert_eq!(
        sig_image.tag(),
        Some(format!("{}.sig", digest.replace(':', "-")).as_str())
    );
    let layer = signed_layer(&image, &digest, key);
    client
        .push_signature(None, &Auth::Anonymous, &sig_image, vec![layer])
        .await
        .expect("push the .sig");
    digest
}

fn signed_layer(image: &OciReference, digest: &str, key: &Key) -> SignatureLayer {
    let mut layer = SignatureLayer::new_unsigned(image, digest).expect("payload");
    let signed = PrivateKeySigner::new_with_signer(key.signer())
        .add_constraint(&mut layer)
        .expect("sign");
    assert!(signed, "the signer signed the layer");
    layer
}

/// Pulls the signatures of `repo` at `reference` and checks them against `key` with
/// the crate: `Ok(number of trusted layers)` or the reason it does not verify.
async fn cosign_verify(
    r: &Registry,
    repo: &str,
    reference: &str,
    key: &Key,
) -> Result<usize, String> {
    cosign_verify_with(&r.host, repo, reference, key.verifier()).await
}

// ---------------------------------------------------------------------------------
// Registry helpers
// ---------------------------------------------------------------------------------

async fn manifest_json(c: &Client, r: &Registry, repo: &str, reference: &str) -> Value {
    let (status, body) = get(c, &r.v2(&format!("{repo}/manifests/{reference}"))).await;
    assert_eq!(status, StatusCode::OK, "GET {repo}:{reference}");
    serde_json::from_slice(&body).unwrap()
}

async fn blob(c: &Client, r: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let (status, body) = get(c, &r.v2(&format!("{repo}/blobs/{digest}"))).await;
    assert_eq!(status, StatusCode::OK, "GET blob {digest}");
    body.to_vec()
}

/// The attachment digests of one kind in a coverage `attachments` object.
fn digests_of(attachments: &Value, kind: &str) -> Vec<String> {
    attachments[kind]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["digest"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// `(digest, artifactType)` of every referrer of `subject`.
async fn referrers(c: &Client, r: &Registry, repo: &str, subject: &str) -> Vec<(String, String)> {
    let (status, body) = get(c, &r.v2(&format!("{repo}/referrers/{subject}"))).await;
    assert_eq!(status, StatusCode::OK, "referrers of {subject}");
    let index: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(index["mediaType"], OCI_INDEX);
    let mut out: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["artifactType"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// An OCI index over the given platform images; returns its bytes.
async fn push_index(
    c: &Client,
    r: &Registry,
    repo: &str,
    tag: &str,
    children: &[(&[u8], &str)],
) -> Vec<u8> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(m, arch)| json!({
            "mediaType": OCI_MANIFEST,
            "digest": sha256(m),
            "size": m.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&index).unwrap();
    put_manifest(c, r, repo, tag, OCI_INDEX, &bytes).await;
    bytes
}

// ---------------------------------------------------------------------------------
// DSSE attestations (cosign attest)
// ---------------------------------------------------------------------------------

/// Pushes a signed in-toto provenance statement about `subject` as the `.att` tag, as
/// `cosign attest --key` does. Returns the `.att` manifest digest.
async fn cosign_attest(c: &Client, r: &Registry, repo: &str, subject: &str, key: &Key) -> String {
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": PROVENANCE,
        "subject": [{
            "name": format!("{}/{repo}", r.host),
            "digest": {"sha256": subject.trim_start_matches("sha256:")},
        }],
        "predicate": {
            "builder": {"id": "https://signet.example/builder"},
            "buildType": "https://signet.example/build/v1",
        },
    }))
    .unwrap();
    let envelope = dsse_envelope(&statement, &key.signer());
    let annotations = json!({SIG_ANNOTATION: "", "predicateType": PROVENANCE});
    let tag = attachment_tag(subject, "att");
    push_cosign_manifest(c, r, repo, &tag, DSSE, &envelope, annotations).await
}

/// Pulls the `.att` of `subject` and verifies every envelope's signature over the DSSE
/// pre-authentication encoding with `key`; returns the statements.
async fn verify_attestations(
    c: &Client,
    r: &Registry,
    repo: &str,
    subject: &str,
    key: &Key,
) -> Result<Vec<Value>, String> {
    let manifest = manifest_json(c, r, repo, &attachment_tag(subject, "att")).await;
    let verification_key = key.verification_key();
    let mut statements = Vec::new();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(layer["mediaType"], DSSE);
        let envelope: Value =
            serde_json::from_slice(&blob(c, r, repo, layer["digest"].as_str().unwrap()).await)
                .unwrap();
        let payload_type = envelope["payloadType"].as_str().unwrap();
        let payload = B64
            .decode(envelope["payload"].as_str().unwrap())
            .map_err(|e| e.to_string())?;
        let sig = B64
            .decode(envelope["signatures"][0]["sig"].as_str().unwrap())
            .map_err(|e| e.to_string())?;
        verification_key
            .verify_signature(Signature::Raw(&sig), &pae(payload_type, &payload))
            .map_err(|e| format!("DSSE signature: {e}"))?;
        let statement: Value = serde_json::from_slice(&payload).unwrap();
        if statement["subject"][0]["digest"]["sha256"] != subject.trim_start_matches("sha256:") {
            return Err(format!("statement about another subject: {statement}"));
        }
        statements.push(statement);
    }
    Ok(statements)
}

// ---------------------------------------------------------------------------------
// Running client commands with a time bound
// ---------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn cosign_signature_and_attestation_round_trip_and_are_indexed() {
    let r = Registry::start();
    let c = client();
    let repo = "team/app";
    let image = push_image(&c, &r, repo, "v1", &[b"layer of the signed image"]).await;
    let digest = sha256(&image);
    let key = Key::generate();

    // Nothing is signed yet: the crate finds nothing to trust.
    assert!(cosign_verify(&r, repo, "v1", &key).await.is_err());

    let signed = cosign_sign(&r, repo, "v1", &key).await;
    assert_eq!(signed, digest, "the crate signed the digest of the tag");

    // The .sig is what cosign writes.
    let sig_tag = attachment_tag(&digest, "sig");
    let sig = manifest_json(&c, &r, repo, &sig_tag).await;
    assert_eq!(sig["mediaType"], OCI_MANIFEST);
    let layers = sig["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], SIMPLESIGNING);
    assert!(layers[0]["annotations"][SIG_ANNOTATION].is_string());
    let payload: Value =
        serde_json::from_slice(&blob(&c, &r, repo, layers[0]["digest"].as_str().unwrap()).await)
            .unwrap();
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        digest.as_str()
    );
    assert_eq!(
        payload["critical"]["type"],
        "cosign container image signature"
    );

    // Pulled back and verified with the public key, by tag and by digest; another key
    // does not verify it.
    assert_eq!(cosign_verify(&r, repo, "v1", &key).await, Ok(1));
    assert_eq!(cosign_verify(&r, repo, &digest, &key).await, Ok(1));
    assert!(cosign_verify(&r, repo, "v1", &Key::generate())
        .await
        .is_err());

    // Signet indexed it: the referrers API lists the tag attachment, and coverage
    // reports it as a signature that arrived by tag.
    let sig_digest = head_digest(&c, &r, repo, &sig_tag)
        .await
        .expect(".sig exists");
    assert_eq!(
        referrers(&c, &r, repo, &digest).await,
        vec![(sig_digest.clone(), COSIGN_SIG_ARTIFACT.to_string())]
    );
    let report = coverage(&c, &r, repo, &digest).await;
    assert_eq!(report["repository"], repo);
    assert_eq!(report["digest"], digest.as_str());
    assert_eq!(report["mediaType"], OCI_MANIFEST);
    let sigs = report["attachments"]["signature"].as_array().unwrap();
    assert_eq!(sigs.len(), 1, "{report}");
    assert_eq!(sigs[0]["digest"], sig_digest.as_str());
    assert_eq!(sigs[0]["kind"], "signature");
    assert_eq!(sigs[0]["source"], "tag");
    assert_eq!(sigs[0]["format"], "cosign");
    assert_eq!(sigs[0]["tag"], sig_tag.as_str());
    assert!(digests_of(&report["attachments"], "attestation").is_empty());
    // By tag too.
    assert_eq!(
        coverage(&c, &r, repo, "v1").await["attachments"],
        report["attachments"]
    );

    // A DSSE attestation pushed as the .att tag, as cosign attest does.
    let att_digest = cosign_attest(&c, &r, repo, &digest, &key).await;
    let statements = verify_attestations(&c, &r, repo, &digest, &key)
        .await
        .expect("the attestation verifies");
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["predicateType"], PROVENANCE);
    assert!(verify_attestations(&c, &r, repo, &digest, &Key::generate())
        .await
        .is_err());
    assert_eq!(referrers(&c, &r, repo, &digest).await, {
        let mut v = vec![
            (sig_digest.clone(), COSIGN_SIG_ARTIFACT.to_string()),
            (att_digest.clone(), COSIGN_ATT_ARTIFACT.to_string()),
        ];
        v.sort();
        v
    });
    let (status, body) = get(
        &c,
        &r.v2(&format!(
            "{repo}/referrers/{digest}?artifactType={}",
            // `+` in a query string is a space: encode it, as clients do.
            COSIGN_ATT_ARTIFACT.replace('+', "%2B")
        )),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let filtered: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(filtered["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["manifests"][0]["digest"], att_digest.as_str());

    let report = coverage(&c, &r, repo, &digest).await;
    let atts = report["attachments"]["attestation"].as_array().unwrap();
    assert_eq!(atts.len(), 1, "{report}");
    assert_eq!(atts[0]["digest"], att_digest.as_str());
    assert_eq!(atts[0]["kind"], "attestation");
    assert_eq!(atts[0]["source"], "tag");
    assert_eq!(atts[0]["format"], "cosign");
    assert_eq!(atts[0]["tag"], attachment_tag(&digest, "att").as_str());
    assert_eq!(
        digests_of(&report["attachments"], "signature"),
        vec![sig_digest]
    );

    // The signature still verifies beside the attestation.
    assert_eq!(cosign_verify(&r, repo, "v1", &key).await, Ok(1));
}

#[tokio::test]
async fn signing_a_multi_arch_index_covers_its_platforms_and_recursive_signing_adds_theirs() {
    let r = Registry::start();
    let c = client();
    let repo = "team/multi";
    let amd64 = push_image(&c, &r, repo, "amd64", &[b"amd64 layer"]).await;
    let arm64 = push_image(&c, &r, repo, "arm64", &[b"arm64 layer"]).await;
    let index = push_index(&c, &r, repo, "v1", &[(&amd64, "amd64"), (&arm64, "arm64")]).await;
    let index_digest = sha256(&index);
    let children = [sha256(&amd64), sha256(&arm64)];
    let key = Key::generate();

    // Before signing: no coverage anywhere, but the index already covers its children.
    for child in &children {
        let report = coverage(&c, &r, repo, child).await;
        assert!(digests_of(&report["attachments"], "signature").is_empty());
        let covered = report["coveredBy"].as_array().unwrap();
        assert_eq!(covered.len(), 1, "{report}");
        assert!(digests_of(&covered[0]["attachments"], "signature").is_empty());
    }

    // Sign only the index.
    assert_eq!(cosign_sign(&r, repo, "v1", &key).await, index_digest);
    let index_sig = head_digest(&c, &r, repo, &attachment_tag(&index_digest, "sig"))
        .await
        .expect("index .sig");
    assert_eq!(cosign_verify(&r, repo, "v1", &key).await, Ok(1));
    for child in &children {
        // The platform itself carries no signature...
        assert!(cosign_verify(&r, repo, child, &key).await.is_err());
        let report = coverage(&c, &r, repo, child).await;
        assert!(
            digests_of(&report["attachments"], "signature").is_empty(),
            "{report}"
        );
        // ...but is covered by the signed index, through the path [index, child].
        let covered = report["coveredBy"].as_array().unwrap();
        assert_eq!(covered.len(), 1, "{report}");
        assert_eq!(covered[0]["index"], index_digest.as_str());
        assert_eq!(covered[0]["path"], json!([index_digest, child]));
        assert_eq!(
            digests_of(&covered[0]["attachments"], "signature"),
            vec![index_sig.clone()]
        );
        assert_eq!(covered[0]["attachments"]["signature"][0]["source"], "tag");
    }

    // cosign sign --recursive: each child gets its own signature.
    let mut child_sigs = Vec::new();
    for child in &children {
        assert_eq!(&cosign_sign(&r, repo, child, &key).await, child);
        assert_eq!(cosign_verify(&r, repo, child, &key).await, Ok(1));
        child_sigs.push(
            head_digest(&c, &r, repo, &attachment_tag(child, "sig"))
                .await
                .expect("child .sig"),
        );
    }
    for (child, sig) in children.iter().zip(&child_sigs) {
        let report = coverage(&c, &r, repo, child).await;
        assert_eq!(
            digests_of(&report["attachments"], "signature"),
            vec![sig.clone()]
        );
        assert_eq!(
            digests_of(&report["coveredBy"][0]["attachments"], "signature"),
            vec![index_sig.clone()]
        );
    }

    // Recursive coverage of the index lists each child with its platform and signature.
    let report = recursive_coverage(&c, &r, repo, &index_digest).await;
    assert_eq!(report["mediaType"], OCI_INDEX);
    assert_eq!(
        digests_of(&report["attachments"], "signature"),
        vec![index_sig.clone()]
    );
    assert_eq!(report["coveredBy"], json!([]));
    let listed = report["children"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{report}");
    for ((entry, child), (sig, arch)) in listed
        .iter()
        .zip(&children)
        .zip(child_sigs.iter().zip(["amd64", "arm64"]))
    {
        assert_eq!(entry["digest"], child.as_str());
        assert_eq!(entry["platform"]["architecture"], arch);
        assert_eq!(entry["platform"]["os"], "linux");
        assert_eq!(
            digests_of(&entry["attachments"], "signature"),
            vec![sig.clone()]
        );
    }
    // Without `recursive`, no children.
    assert!(coverage(&c, &r, repo, &index_digest).await["children"]
        .as_array()
        .is_none_or(|a| a.is_empty()));

    // signet attachments --recursive, run beside the live server, names every signature.
    let out = run(&mut r.cli(&[
        "attachments",
        &format!("{repo}@{index_digest}"),
        "--recursive",
    ]));
    assert!(out.contains(&index_digest), "{out}");
    assert!(out.contains(&format!("signature {index_sig}")), "{out}");
    for (child, sig) in children.iter().zip(&child_sigs) {
        assert!(out.contains(child.as_str()), "{out}");
        assert!(out.contains(&format!("signature {sig}")), "{out}");
    }
    assert!(
        out.contains("linux/amd64") && out.contains("linux/arm64"),
        "{out}"
    );
    // Each child shows its own signature and, under "covered by", the index's.
    let index_sig_lines = out
        .lines()
        .filter(|l| l.contains(&format!("signature {index_sig}")))
        .count();
    assert_eq!(
        index_sig_lines, 3,
        "on the index and under each child:\n{out}"
    );
    let sig_lines = out
        .lines()
        .filter(|l| l.contains("signature sha256:"))
        .count();
    assert_eq!(sig_lines, 5, "{out}");

    // --json is the endpoint's report.
    let out = run(&mut r.cli(&["attachments", &format!("{repo}@{}", children[0]), "--json"]));
    let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        digests_of(&json["attachments"], "signature"),
        vec![child_sigs[0].clone()]
    );
    assert_eq!(json["coveredBy"][0]["index"], index_digest.as_str());
}

#[tokio::test]
async fn a_second_signature_appends_under_if_match_and_a_stale_writer_gets_412() {
    let r = Registry::start();
    let c = client();
    let repo = "team/two-signers";
    let image = push_image(&c, &r, repo, "v1", &[b"an image two teams sign"]).await;
    let digest = sha256(&image);
    let (alice, bob, carol) = (Key::generate(), Key::generate(), Key::generate());

    cosign_sign(&r, repo, "v1", &alice).await;
    let sig_tag = attachment_tag(&digest, "sig");
    let sig_url = r.v2(&format!("{repo}/manifests/{sig_tag}"));

    // Read the .sig as cosign does before appending: its bytes and its ETag.
    let resp = c.get(&sig_url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["ETag"].to_str().unwrap().to_string();
    let first = resp.bytes().await.unwrap();
    let first_digest = sha256(&first);
    assert_eq!(etag, format!("\"{first_digest}\""));

    // Two writers prepare an append from the same state: bob and carol.
    let image_ref = image_ref(&r, repo, "v1");
    let append = |key: &Key| {
        let layer = signed_layer(&image_ref, &digest, key);
        (layer.raw_data.clone(), layer.signature.clone().unwrap())
    };
    let (bob_payload, bob_sig) = append(&bob);
    let (carol_payload, carol_sig) = append(&carol);
    let appended = |payload: &[u8], sig: &str| -> (Vec<u8>, Vec<u8>) {
        let mut m: Value = serde_json::from_slice(&first).unwrap();
        let layers = m["layers"].as_array_mut().unwrap();
        layers.push(json!({
            "mediaType": SIMPLESIGNING,
            "digest": sha256(payload),
            "size": payload.len(),
            "annotations": {SIG_ANNOTATION: sig},
        }));
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect();
        let config = cosign_config(&diff_ids);
        m["config"]["digest"] = json!(sha256(&config));
        m["config"]["size"] = json!(config.len());
        (serde_json::to_vec(&m).unwrap(), config)
    };
    let (bob_manifest, bob_config) = appended(&bob_payload, &bob_sig);
    let (carol_manifest, carol_config) = appended(&carol_payload, &carol_sig);
    for b in [&bob_payload, &bob_config, &carol_payload, &carol_config] {
        push_blob(&c, &r, repo, b).await;
    }
    let put = |body: Vec<u8>, if_match: String| {
        c.put(&sig_url)
            .header("Content-Type", OCI_MANIFEST)
            .header("If-Match", if_match)
            .body(body)
            .send()
    };

    // Bob's append lands with the current digest.
    let resp = put(bob_manifest.clone(), etag.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["Docker-Content-Digest"].to_str().unwrap(),
        sha256(&bob_manifest)
    );

    // Carol, still holding the old digest, is refused and changes nothing.
    let resp = put(carol_manifest.clone(), etag.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    let (status, now) = get(&c, &sig_url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(now.to_vec(), bob_manifest, "the .sig is bob's append");
    assert_eq!(
        resp_digest_of(&c, &r, repo, &sig_tag).await,
        sha256(&bob_manifest)
    );

    // Both signatures verify; carol's was never written.
    assert_eq!(cosign_verify(&r, repo, "v1", &alice).await, Ok(2));
    assert_eq!(cosign_verify(&r, repo, "v1", &bob).await, Ok(2));
    assert!(cosign_verify(&r, repo, "v1", &carol).await.is_err());

    // Carol retries as cosign would: re-read, append to the current state, If-Match it.
    let mut m: Value = serde_json::from_slice(&bob_manifest).unwrap();
    m["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": SIMPLESIGNING,
        "digest": sha256(&carol_payload),
        "size": carol_payload.len(),
        "annotations": {SIG_ANNOTATION: carol_sig},
    }));
    let diff_ids: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let config = cosign_config(&diff_ids);
    push_blob(&c, &r, repo, &config).await;
    m["config"]["digest"] = json!(sha256(&config));
    m["config"]["size"] = json!(config.len());
    let third = serde_json::to_vec(&m).unwrap();
    let resp = put(third.clone(), format!("\"{}\"", sha256(&bob_manifest)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    for key in [&alice, &bob, &carol] {
        assert_eq!(cosign_verify(&r, repo, "v1", key).await, Ok(3));
    }

    // If-None-Match: * refuses to overwrite an existing .sig.
    let resp = c
        .put(&sig_url)
        .header("Content-Type", OCI_MANIFEST)
        .header("If-None-Match", "*")
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(resp_digest_of(&c, &r, repo, &sig_tag).await, sha256(&third));

    // Coverage still reports one signature attachment: the .sig manifest now in place.
    let report = coverage(&c, &r, repo, &digest).await;
    assert_eq!(
        digests_of(&report["attachments"], "signature"),
        vec![sha256(&third)]
    );
}

async fn resp_digest_of(c: &Client, r: &Registry, repo: &str, reference: &str) -> String {
    head_digest(c, r, repo, reference)
        .await
        .unwrap_or_else(|| panic!("{repo}:{reference} is missing"))
}

/// skopeo with a registries.d telling containers/image to read and write sigstore
/// attachments.
fn skopeo(dir: &Path) -> Command {
    let registries_d = dir.join("registries.d");
    std::fs::create_dir_all(&registries_d).unwrap();
    std::fs::write(
        registries_d.join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    signet_api_tests::skopeo(dir)
}

/// `(mediaType, digest, annotations)` of each layer of a manifest.
fn layer_summary(manifest: &Value) -> Vec<(String, String, Value)> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["mediaType"].as_str().unwrap().to_string(),
                l["digest"].as_str().unwrap().to_string(),
                l["annotations"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn skopeo_copies_the_cosign_signature_along_and_it_still_verifies() {
    let r = Registry::start();
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let image = push_image(&c, &r, "src/app", "v1", &[b"an image skopeo copies"]).await;
    let digest = sha256(&image);
    let key = Key::generate();
    cosign_sign(&r, "src/app", "v1", &key).await;
    cosign_attest(&c, &r, "src/app", &digest, &key).await;
    let sig_tag = attachment_tag(&digest, "sig");

    // A missing .sig is 404 MANIFEST_UNKNOWN (skopeo reads that as "no signatures").
    let unsigned_sig = attachment_tag(&sha256(b"nothing signed this"), "sig");
    let (status, body) = get(&c, &r.v2(&format!("src/app/manifests/{unsigned_sig}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");

    // An unsigned image copies: skopeo takes the 404 for "no signatures".
    push_image(&c, &r, "src/plain", "v1", &[b"an unsigned image"]).await;
    run(skopeo(dir.path()).args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/src/plain:v1", r.host),
        &format!("docker://{}/dst/plain:v1", r.host),
    ]));
    assert!(head_digest(&c, &r, "dst/plain", "v1").await.is_some());

    // The signed one copies with its .sig.
    run(skopeo(dir.path()).args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/src/app:v1", r.host),
        &format!("docker://{}/dst/app:v1", r.host),
    ]));
    assert_eq!(
        head_digest(&c, &r, "dst/app", "v1").await.as_deref(),
        Some(digest.as_str()),
        "the image is copied unchanged"
    );
    let src_sig = manifest_json(&c, &r, "src/app", &sig_tag).await;
    let dst_sig = manifest_json(&c, &r, "dst/app", &sig_tag).await;
    assert_eq!(dst_sig["mediaType"], OCI_MANIFEST);
    assert_eq!(layer_summary(&dst_sig), layer_summary(&src_sig));
    for (_, layer, _) in layer_summary(&dst_sig) {
        assert_eq!(
            blob(&c, &r, "dst/app", &layer).await,
            blob(&c, &r, "src/app", &layer).await
        );
    }

    // It verifies at the destination with the crate, and Signet indexed it there.
    assert_eq!(cosign_verify(&r, "dst/app", "v1", &key).await, Ok(1));
    assert!(cosign_verify(&r, "dst/app", "v1", &Key::generate())
        .await
        .is_err());
    let dst_sig_digest = head_digest(&c, &r, "dst/app", &sig_tag).await.unwrap();
    let report = coverage(&c, &r, "dst/app", &digest).await;
    let sigs = report["attachments"]["signature"].as_array().unwrap();
    assert_eq!(sigs.len(), 1, "{report}");
    assert_eq!(sigs[0]["digest"], dst_sig_digest.as_str());
    assert_eq!(sigs[0]["source"], "tag");
    assert!(referrers(&c, &r, "dst/app", &digest)
        .await
        .contains(&(dst_sig_digest.clone(), COSIGN_SIG_ARTIFACT.to_string())));

    // The copy left the source's signature as it was.
    assert_eq!(cosign_verify(&r, "src/app", "v1", &key).await, Ok(1));

    // A second signer replaces the source's .sig (the crate replaces); copying again
    // makes skopeo append the new signature to the destination's .sig: the tag moves
    // and both signatures verify there.
    let second = Key::generate();
    cosign_sign(&r, "src/app", "v1", &second).await;
    assert!(cosign_verify(&r, "src/app", "v1", &key).await.is_err());
    run(skopeo(dir.path()).args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/src/app:v1", r.host),
        &format!("docker://{}/dst/app:v1", r.host),
    ]));
    let appended = manifest_json(&c, &r, "dst/app", &sig_tag).await;
    assert_eq!(
        appended["layers"].as_array().unwrap().len(),
        2,
        "{appended}"
    );
    assert_eq!(appended["layers"][0], dst_sig["layers"][0]);
    assert_eq!(cosign_verify(&r, "dst/app", "v1", &key).await, Ok(2));
    assert_eq!(cosign_verify(&r, "dst/app", "v1", &second).await, Ok(2));
    let moved = head_digest(&c, &r, "dst/app", &sig_tag).await.unwrap();
    assert_ne!(moved, dst_sig_digest, "the .sig tag moved");
    let report = coverage(&c, &r, "dst/app", &digest).await;
    assert_eq!(
        digests_of(&report["attachments"], "signature"),
        vec![moved],
        "one .sig attachment, the one the tag now names"
    );
}

#[tokio::test]
async fn deleting_a_subject_deletes_its_attachments_and_deleting_an_attachment_keeps_the_subject() {
    let r = Registry::start();
    let c = client();
    let repo = "team/lifecycle";
    let key = Key::generate();
    let image = push_image(&c, &r, repo, "v1", &[b"the image to delete"]).await;
    let digest = sha256(&image);
    let other = push_image(&c, &r, repo, "v2", &[b"an image to keep"]).await;
    let other_digest = sha256(&other);
    cosign_sign(&r, repo, "v1", &key).await;
    cosign_sign(&r, repo, "v2", &key).await;
    let att = cosign_attest(&c, &r, repo, &digest, &key).await;
    let other_att = cosign_attest(&c, &r, repo, &other_digest, &key).await;
    let sig = head_digest(&c, &r, repo, &attachment_tag(&digest, "sig"))
        .await
        .unwrap();

    // An OCI referrer with a subject, too.
    let empty = b"{}";
    push_blob(&c, &r, repo, empty).await;
    let sbom = br#"{"spdxVersion":"SPDX-2.3","name":"lifecycle"}"#;
    push_blob(&c, &r, repo, sbom).await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2},
        "layers": [{"mediaType": "application/spdx+json", "digest": sha256(sbom), "size": sbom.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": image.len()},
    }))
    .unwrap();
    let referrer_digest = sha256(&referrer);
    put_manifest(&c, &r, repo, &referrer_digest, OCI_MANIFEST, &referrer).await;
    assert_eq!(referrers(&c, &r, repo, &digest).await.len(), 3);

    // Deleting an attachment (the other image's .att, by digest) leaves its subject.
    let resp = c
        .delete(r.v2(&format!("{repo}/manifests/{other_att}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        head_digest(&c, &r, repo, "v2").await.as_deref(),
        Some(other_digest.as_str())
    );
    assert_eq!(
        head_digest(&c, &r, repo, &attachment_tag(&other_digest, "att")).await,
        None
    );
    assert_eq!(cosign_verify(&r, repo, "v2", &key).await, Ok(1));
    let report = coverage(&c, &r, repo, &other_digest).await;
    assert!(digests_of(&report["attachments"], "attestation").is_empty());
    assert_eq!(digests_of(&report["attachments"], "signature").len(), 1);
    // Deleting the referrer by digest leaves the subject and its cosign attachments.
    let resp = c
        .delete(r.v2(&format!("{repo}/manifests/{referrer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        head_digest(&c, &r, repo, "v1").await.as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(referrers(&c, &r, repo, &digest).await.len(), 2);
    // Put it back for the subject deletion below.
    put_manifest(&c, &r, repo, &referrer_digest, OCI_MANIFEST, &referrer).await;

    // Untagging a .sig (DELETE by tag) detaches the signature and keeps the subject.
    let third = push_image(&c, &r, repo, "v3", &[b"an image whose .sig is untagged"]).await;
    let third_digest = sha256(&third);
    cosign_sign(&r, repo, "v3", &key).await;
    assert_eq!(cosign_verify(&r, repo, "v3", &key).await, Ok(1));
    let resp = c
        .delete(r.v2(&format!(
            "{repo}/manifests/{}",
            attachment_tag(&third_digest, "sig")
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        head_digest(&c, &r, repo, "v3").await.as_deref(),
        Some(third_digest.as_str())
    );
    assert!(cosign_verify(&r, repo, "v3", &key).await.is_err());
    let report = coverage(&c, &r, repo, &third_digest).await;
    assert!(
        digests_of(&report["attachments"], "signature").is_empty(),
        "an untagged .sig is no longer attached: {report}"
    );
    assert_eq!(referrers(&c, &r, repo, &third_digest).await, vec![]);

    // Deleting the signed image by digest removes its .sig, .att and referrer.
    let resp = c
        .delete(r.v2(&format!("{repo}/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    for reference in [
        digest.clone(),
        "v1".to_string(),
        attachment_tag(&digest, "sig"),
        attachment_tag(&digest, "att"),
        sig.clone(),
        att.clone(),
        referrer_digest.clone(),
    ] {
        let (status, body) = get(&c, &r.v2(&format!("{repo}/manifests/{reference}"))).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{reference} after the delete"
        );
        assert_eq!(error_code(&body), "MANIFEST_UNKNOWN");
    }
    let (status, body) = get(&c, &r.v2(&format!("{repo}/referrers/{digest}"))).await;
    if status == StatusCode::OK {
        let index: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            index["manifests"],
            json!([]),
            "referrers of a deleted subject"
        );
    } else {
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, body) = get(&c, &r.v2(&format!("{repo}/tags/list"))).await;
    assert_eq!(status, StatusCode::OK);
    let tags: Value = serde_json::from_slice(&body).unwrap();
    let tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut expected = vec![
        "v2".to_string(),
        "v3".to_string(),
        attachment_tag(&other_digest, "sig"),
    ];
    expected.sort();
    let mut tags: Vec<String> = tags.into_iter().map(String::from).collect();
    tags.sort();
    assert_eq!(tags, expected);
    let (status, _) = get(&c, &r.v2(&format!("{repo}/_signet/attachments/{digest}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The other image is untouched and still verifies.
    assert_eq!(cosign_verify(&r, repo, "v2", &key).await, Ok(1));
    let report = coverage(&c, &r, repo, "v2").await;
    assert_eq!(digests_of(&report["attachments"], "signature").len(), 1);
}
