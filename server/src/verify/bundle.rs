//! Sigstore bundles (v0.1 to v0.3) stored as OCI referrers, cosign v3's default: the
//! referrer's layer is the bundle JSON. Its content is a message signature over the
//! subject manifest or a DSSE envelope around an in-toto statement naming the subject;
//! its verification material is a Fulcio certificate (checked like any keyless
//! signature, with the transparency log entry's SET and inclusion proof) or a public key
//! hint (checked against the key roots).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use signet_storage::{BlobStore, Digest, MetadataStore, Reference, RepoName};
use sigstore::crypto::Signature;

use super::cosign::{pae, read_blob, Unreadable};
use super::keyless::{self, Evidence};
use super::rekor::{Claim, Entry, Hash, InclusionProof};
use super::trust::TrustRoot;
use super::Verdict;

pub const BUNDLE_MEDIA_TYPES: [&str; 3] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];

/// The verdict on the bundle referrer `attachment` of `subject`.
pub async fn verify_referrer(
    roots: &[&TrustRoot],
    meta: &dyn MetadataStore,
    blobs: &BlobStore,
    repo: &str,
    subject: &Digest,
    attachment: &Digest,
) -> anyhow::Result<Verdict> {
    let repo_name: RepoName = repo
        .parse()
        .map_err(|_| anyhow::anyhow!("bad repository"))?;
    let manifest = read_manifest(meta, &repo_name, attachment, "the bundle referrer")
        .await?
        .ok_or_else(|| Unreadable("the bundle referrer (it is gone)".into()))?;
    let manifest: Value = serde_json::from_slice(&manifest)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let Some(layer) = layers
        .iter()
        .find(|l| BUNDLE_MEDIA_TYPES.contains(&l["mediaType"].as_str().unwrap_or_default()))
    else {
        return Ok(Verdict::invalid(
            "malformed: the referrer has no Sigstore bundle layer",
        ));
    };
    let digest: Digest = layer["digest"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|_| anyhow::anyhow!("layer digest"))?;
    let bytes = read_blob(blobs, &digest).await?;
    let bundle: Value = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return Ok(Verdict::invalid(format!("malformed: the bundle: {e}"))),
    };
    if roots.is_empty() {
        return Ok(Verdict::no_trust_root());
    }
    if bundle.get("messageSignature").is_some() {
        // The signed message is the subject manifest itself.
        let signed = read_manifest(meta, &repo_name, subject, "the subject manifest")
            .await?
            .ok_or_else(|| Unreadable("the subject manifest (it is gone)".into()))?;
        return Ok(verify_bundle(roots, &bundle, subject, Some(&signed)));
    }
    Ok(verify_bundle(roots, &bundle, subject, None))
}

async fn read_manifest(
    meta: &dyn MetadataStore,
    repo: &RepoName,
    digest: &Digest,
    what: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    let stored = meta
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await
        .map_err(|e| Unreadable(format!("{what}: {e}")))?;
    Ok(stored.map(|s| s.content.to_vec()))
}

/// The verdict on a parsed bundle; `subject_bytes` is the subject manifest, the signed
/// message of a `messageSignature` bundle.
pub fn verify_bundle(
    roots: &[&TrustRoot],
    bundle: &Value,
    subject: &Digest,
    subject_bytes: Option<&[u8]>,
) -> Verdict {
    match verify_inner(roots, bundle, subject, subject_bytes) {
        Ok(v) => v,
        Err(e) => Verdict::invalid(format!("malformed: {e}")),
    }
}

fn verify_inner(
    roots: &[&TrustRoot],
    bundle: &Value,
    subject: &Digest,
    subject_bytes: Option<&[u8]>,
) -> Result<Verdict, String> {
    let media_type = bundle["mediaType"].as_str().unwrap_or_default();
    if !BUNDLE_MEDIA_TYPES.contains(&media_type) {
        return Err(format!("unsupported bundle mediaType {media_type:?}"));
    }
    let material = &bundle["verificationMaterial"];
    let entry = material["tlogEntries"]
        .as_array()
        .and_then(|e| e.first())
        .map(tlog_entry)
        .transpose()?;

    // What was signed, and the claim the log entry must record.
    let (signed, signature, payload): (Vec<u8>, Vec<u8>, Option<Vec<u8>>) =
        if let Some(ms) = bundle.get("messageSignature") {
            let alg = ms["messageDigest"]["algorithm"]
                .as_str()
                .unwrap_or_default();
            let digest = b64(&ms["messageDigest"]["digest"], "messageDigest.digest")?;
            let signature = b64(&ms["signature"], "messageSignature.signature")?;
            if alg != "SHA2_256" || subject.algorithm().name() != "sha256" {
                return Ok(Verdict::invalid(format!(
                    "digest mismatch: the bundle signs a {alg} digest, the subject is {subject}"
                )));
            }
            if hex::encode(&digest) != subject.hex() {
                return Ok(Verdict::invalid(format!(
                    "digest mismatch: the bundle signs sha256:{}, the subject is {subject}",
                    hex::encode(&digest)
                )));
            }
            let signed = subject_bytes
                .ok_or("the subject manifest is needed to check a message signature")?;
            (signed.to_vec(), signature, None)
        } else if let Some(env) = bundle.get("dsseEnvelope") {
            let payload = b64(&env["payload"], "dsseEnvelope.payload")?;
            let payload_type = env["payloadType"].as_str().unwrap_or_default();
            let signature = b64(
                &env["signatures"][0]["sig"],
                "dsseEnvelope.signatures[0].sig",
            )?;
            (pae(payload_type, &payload), signature, Some(payload))
        } else {
            return Err("the bundle has neither messageSignature nor dsseEnvelope".into());
        };
    let message_digest: Hash = sha256(&signed);
    let claim = match &payload {
        Some(p) => Claim::Dsse {
            payload: p,
            signature: &signature,
        },
        None => Claim::Message {
            digest: message_digest,
            signature: &signature,
        },
    };

    let certificate = if let Some(raw) = material["certificate"]["rawBytes"].as_str() {
        Some((
            B64.decode(raw)
                .map_err(|_| "certificate.rawBytes is not base64")?,
            Vec::new(),
        ))
    } else if let Some(certs) = material["x509CertificateChain"]["certificates"].as_array() {
        let mut ders = certs
            .iter()
            .map(|c| b64(&c["rawBytes"], "x509CertificateChain certificate"))
            .collect::<Result<Vec<_>, _>>()?;
        if ders.is_empty() {
            return Err("x509CertificateChain has no certificates".into());
        }
        let leaf = ders.remove(0);
        Some((leaf, ders))
    } else {
        None
    };

    let verdict = match certificate {
        Some((leaf_der, chain)) => {
            let ev = Evidence {
                leaf_der,
                chain: chain.into_iter().map(CertificateDer::from).collect(),
                entry,
                signed: &signed,
                signature: &signature,
                claim,
            };
            keyless::verify(roots, &ev)
        }
        None if material.get("publicKey").is_some() => {
            // A key root's key: the transparency log is not consulted (a key root has
            // no trusted log), the signature alone decides, as for `.sig` layers.
            let keyed: Vec<&&TrustRoot> = roots.iter().filter(|r| r.key.is_some()).collect();
            if keyed.is_empty() {
                return Ok(Verdict::no_trust_root());
            }
            match keyed.iter().find(|r| {
                r.key.as_ref().is_some_and(|k| {
                    k.verify_signature(Signature::Raw(&signature), &signed)
                        .is_ok()
                })
            }) {
                Some(r) => Verdict::valid(&r.name, None),
                None => Verdict::invalid(
                    "bad signature: no applicable trust root's key verifies the bundle",
                ),
            }
        }
        None => return Err("the bundle has no certificate or public key".into()),
    };
    Ok(match payload {
        Some(p) => keyless::statement_verdict(verdict, &p, subject),
        None => verdict,
    })
}

fn sha256(bytes: &[u8]) -> Hash {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

fn b64(v: &Value, what: &str) -> Result<Vec<u8>, String> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .ok_or_else(|| format!("{what} is not base64"))
}

/// protobuf JSON writes 64-bit integers as strings; accept numbers too.
fn int(v: &Value, what: &str) -> Result<i64, String> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("{what} is not an integer"))
}

fn tlog_entry(v: &Value) -> Result<Entry, String> {
    let set = match v["inclusionPromise"]["signedEntryTimestamp"].as_str() {
        Some(_) => Some(b64(
            &v["inclusionPromise"]["signedEntryTimestamp"],
            "inclusionPromise.signedEntryTimestamp",
        )?),
        None => None,
    };
    let proof = match v.get("inclusionProof") {
        None => None,
        Some(p) => {
            let root: Hash = b64(&p["rootHash"], "inclusionProof.rootHash")?
                .try_into()
                .map_err(|_| "inclusionProof.rootHash is not 32 bytes")?;
            let hashes = p["hashes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    b64(h, "inclusionProof.hashes")?
                        .try_into()
                        .map_err(|_| "an inclusionProof hash is not 32 bytes".to_string())
                })
                .collect::<Result<Vec<Hash>, String>>()?;
            let index = int(&p["logIndex"], "inclusionProof.logIndex")?;
            let size = int(&p["treeSize"], "inclusionProof.treeSize")?;
            Some(InclusionProof {
                log_index: u64::try_from(index).map_err(|_| "negative inclusionProof.logIndex")?,
                tree_size: u64::try_from(size).map_err(|_| "negative inclusionProof.treeSize")?,
                root,
                hashes,
                checkpoint: p["checkpoint"]["envelope"]
                    .as_str()
                    .ok_or("inclusionProof.checkpoint.envelope is missing")?
                    .to_string(),
            })
        }
    };
    Ok(Entry {
        body: b64(&v["canonicalizedBody"], "tlogEntries[0].canonicalizedBody")?,
        integrated_time: int(&v["integratedTime"], "tlogEntries[0].integratedTime")?,
        log_index: int(&v["logIndex"], "tlogEntries[0].logIndex")?,
        log_id: b64(&v["logId"]["keyId"], "tlogEntries[0].logId.keyId")?,
        set,
        proof,
    })
}
