//! Verdicts on cosign layers: simple-signing payloads (base64 signature annotation) of
//! `.sig` manifests and DSSE envelopes (in-toto statements) of `.att` manifests, checked
//! with the `sigstore` crate against the keys of the roots covering the repository, or
//! keyless ([`crate::keyless`]) where the layer carries a certificate.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;
use signet_oci::Digest;
use sigstore::crypto::Signature;

use crate::trust::TrustRoot;
use crate::Verdict;

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
pub const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Largest payload or envelope read for verification.
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// The layer media types of cosign signatures and attestations.
pub fn is_signature_layer(media_type: &str) -> bool {
    media_type == SIMPLESIGNING || media_type == DSSE
}

/// The verdict on one cosign layer (`layer`, its descriptor; `bytes`, its content):
/// keyless when it carries a certificate (unless a key root's key made the signature:
/// `cosign sign --key --certificate`), by the key roots otherwise.
pub fn verify_layer(
    roots: &[&TrustRoot],
    repo: &str,
    subject: &Digest,
    layer: &Value,
    media_type: &str,
    bytes: &[u8],
) -> anyhow::Result<Verdict> {
    if !layer["annotations"][crate::keyless::CERT_ANNOTATION].is_string() {
        return verify_with_keys(roots, repo, subject, layer, media_type, bytes);
    }
    // When neither accepts it, the keyless reason is the telling one.
    let keyless =
        crate::keyless::verify_cosign_layer(roots, layer, bytes, repo, subject, media_type);
    if keyless.is_valid() || !roots.iter().any(|r| r.key.is_some()) {
        return Ok(keyless);
    }
    let keyed = verify_with_keys(roots, repo, subject, layer, media_type, bytes)?;
    Ok(
        if keyed.is_valid() || keyless.verdict == crate::VerdictKind::NoTrustRoot {
            keyed
        } else {
            keyless
        },
    )
}

/// The verdict of the key roots on one layer's `bytes`.
fn verify_with_keys(
    roots: &[&TrustRoot],
    repo: &str,
    subject: &Digest,
    layer: &Value,
    media_type: &str,
    bytes: &[u8],
) -> anyhow::Result<Verdict> {
    if media_type == SIMPLESIGNING {
        let Some(sig) = layer["annotations"][SIG_ANNOTATION].as_str() else {
            return Ok(Verdict::invalid(format!(
                "malformed: no {SIG_ANNOTATION} annotation"
            )));
        };
        let Ok(sig) = B64.decode(sig.trim()) else {
            return Ok(Verdict::invalid("malformed: the signature is not base64"));
        };
        let Some(root) = roots.iter().find(|r| {
            r.key
                .as_ref()
                .is_some_and(|k| k.verify_signature(Signature::Raw(&sig), bytes).is_ok())
        }) else {
            return Ok(Verdict::invalid(
                "bad signature: no applicable trust root's key verifies it",
            ));
        };
        let payload: Value = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("simple-signing payload: {e}"))?;
        let named = payload["critical"]["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap_or_default();
        if named != subject.to_string() {
            return Ok(Verdict::invalid(format!(
                "digest mismatch: the payload names {named:?}, the subject is {subject}"
            )));
        }
        let format = crate::reference::SignatureFormat::Cosign;
        if let Err(why) = crate::reference::check(root, format, &payload, repo) {
            return Ok(Verdict::invalid(why));
        }
        return Ok(Verdict::valid(&root.name, None));
    }
    // DSSE envelope.
    let envelope: Value =
        serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("DSSE envelope: {e}"))?;
    let payload_type = envelope["payloadType"].as_str().unwrap_or_default();
    let payload = B64
        .decode(envelope["payload"].as_str().unwrap_or_default())
        .map_err(|_| anyhow::anyhow!("the DSSE payload is not base64"))?;
    let message = pae(payload_type, &payload);
    let mut root = None;
    for s in envelope["signatures"].as_array().into_iter().flatten() {
        let Ok(sig) = B64.decode(s["sig"].as_str().unwrap_or_default()) else {
            continue;
        };
        if let Some(r) = roots.iter().find(|r| {
            r.key
                .as_ref()
                .is_some_and(|k| k.verify_signature(Signature::Raw(&sig), &message).is_ok())
        }) {
            root = Some(r);
            break;
        }
    }
    let Some(root) = root else {
        return Ok(Verdict::invalid(
            "bad signature: no applicable trust root's key verifies the DSSE envelope",
        ));
    };
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|e| anyhow::anyhow!("in-toto statement: {e}"))?;
    let predicate_type = statement["predicateType"].as_str().map(str::to_string);
    let (alg, hex) = (subject.algorithm().name(), subject.hex());
    let names_subject = statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"][alg].as_str() == Some(hex));
    if !names_subject {
        let mut v = Verdict::invalid(format!(
            "digest mismatch: the statement's subjects do not include {subject}"
        ));
        v.predicate_type = predicate_type;
        return Ok(v);
    }
    Ok(Verdict::valid(&root.name, predicate_type))
}

/// DSSE pre-authentication encoding.
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
