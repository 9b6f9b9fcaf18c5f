//! Verdicts on one attachment: cosign `.sig` manifests (simple-signing payload layers,
//! base64 signature annotation) and DSSE `.att` manifests (in-toto statements), checked
//! with the `sigstore` crate against the keys of the roots covering the repository.
//! Sigstore bundles go to [`super::bundle`], atomic GPG signatures to [`super::gpg`];
//! notation signatures are reported `unsupported`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::TryStreamExt;
use serde_json::Value;
use signet_storage::{BlobStore, Digest, MetadataStore, Reference, RepoName};
use sigstore::crypto::Signature;

use super::trust::{Trust, TrustRoot};
use super::Verdict;

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
pub const SIG_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Largest payload or envelope read for verification.
const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// A storage read failed: the verdict says so but is not cached (it may be transient).
#[derive(Debug, thiserror::Error)]
#[error("could not read {0}")]
pub struct Unreadable(pub String);

/// The attachment was deleted (by a client or GC) between being listed and being read:
/// an ordinary race, not a storage fault.
#[derive(Debug, thiserror::Error)]
#[error("the attachment manifest is gone")]
pub struct Gone;

/// The verdict, and whether it may be cached (false after a storage read failure).
pub async fn verify_attachment(
    trust: &Trust,
    meta: &dyn MetadataStore,
    blobs: &BlobStore,
    repo: &str,
    subject: &Digest,
    attachment: &Digest,
    format: &str,
) -> (Verdict, bool) {
    let unsupported = |why: String| (Verdict::unsupported(why), true);
    match format {
        "cosign" | "oci" => {}
        "sigstore-bundle" => {
            let roots: Vec<&TrustRoot> = trust.roots_for(repo).collect();
            let result =
                super::bundle::verify_referrer(&roots, meta, blobs, repo, subject, attachment)
                    .await;
            return settle(result, repo, attachment);
        }
        "notation" => return unsupported("notation signatures are not verified yet".into()),
        "atomic" => {
            return super::gpg::verify_attachment(trust, meta, repo, subject, attachment).await
        }
        other => return unsupported(format!("format {other:?} is not verified")),
    }
    let roots: Vec<&TrustRoot> = trust.roots_for(repo).collect();
    let result = verify_manifest(&roots, meta, blobs, repo, subject, attachment).await;
    settle(result, repo, attachment)
}

/// A verification's outcome as a verdict, and whether it may be kept: not after the
/// attachment vanished meanwhile (an ordinary race with a delete or GC) or a storage
/// read failed (maybe transient); bytes that do not parse are `malformed` for good.
fn settle(result: anyhow::Result<Verdict>, repo: &str, attachment: &Digest) -> (Verdict, bool) {
    match result {
        Ok(v) => (v, true),
        Err(e) if e.is::<Gone>() => {
            tracing::debug!(%repo, %attachment, "verification skipped: the attachment is gone");
            (Verdict::invalid(e.to_string()), false)
        }
        Err(e) if e.is::<Unreadable>() => {
            tracing::warn!(%repo, %attachment, error = %e, "verification could not read the attachment");
            (Verdict::invalid(e.to_string()), false)
        }
        Err(e) => (Verdict::invalid(format!("malformed: {e}")), true),
    }
}

async fn verify_manifest(
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
    let Some(stored) = meta
        .get_manifest(&repo_name, &Reference::Digest(attachment.clone()))
        .await
        .map_err(|e| Unreadable(format!("the attachment manifest: {e}")))?
    else {
        return Err(Gone.into());
    };
    let manifest: Value = serde_json::from_slice(&stored.content)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let mut first_invalid = None;
    let mut recognised = false;
    for layer in &layers {
        let media_type = layer["mediaType"].as_str().unwrap_or_default();
        if media_type != SIMPLESIGNING && media_type != DSSE {
            continue;
        }
        recognised = true;
        if roots.is_empty() {
            continue;
        }
        let verdict = match verify_layer(roots, blobs, repo, subject, layer, media_type).await {
            Ok(v) => v,
            Err(e) if e.is::<Unreadable>() => return Err(e),
            Err(e) => Verdict::invalid(format!("malformed: {e}")),
        };
        if verdict.is_valid() {
            return Ok(verdict);
        }
        first_invalid.get_or_insert(verdict);
    }
    if !recognised {
        return Ok(Verdict::unsupported(
            "no cosign simple-signing or DSSE layer (other formats are not verified yet)",
        ));
    }
    if roots.is_empty() {
        return Ok(Verdict::no_trust_root());
    }
    Ok(first_invalid.unwrap_or_else(|| Verdict::invalid("no signature")))
}

async fn verify_layer(
    roots: &[&TrustRoot],
    blobs: &BlobStore,
    repo: &str,
    subject: &Digest,
    layer: &Value,
    media_type: &str,
) -> anyhow::Result<Verdict> {
    let digest: Digest = layer["digest"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|_| anyhow::anyhow!("layer digest"))?;
    let bytes = read_blob(blobs, &digest).await?;
    if !layer["annotations"][super::keyless::CERT_ANNOTATION].is_string() {
        return verify_with_keys(roots, repo, subject, layer, media_type, &bytes);
    }
    // A certificate: keyless (Fulcio), unless a key root's key made the signature
    // (`cosign sign --key --certificate`). When neither accepts it, the keyless reason
    // is the telling one.
    let keyless =
        super::keyless::verify_cosign_layer(roots, layer, &bytes, repo, subject, media_type);
    if keyless.is_valid() || !roots.iter().any(|r| r.key.is_some()) {
        return Ok(keyless);
    }
    let keyed = verify_with_keys(roots, repo, subject, layer, media_type, &bytes)?;
    Ok(
        if keyed.is_valid() || keyless.verdict == super::VerdictKind::NoTrustRoot {
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
        let format = super::reference::SignatureFormat::Cosign;
        if let Err(why) = super::reference::check(root, format, &payload, repo) {
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

pub(super) async fn read_blob(blobs: &BlobStore, digest: &Digest) -> anyhow::Result<Vec<u8>> {
    let body = blobs
        .get(digest, None)
        .await
        .map_err(|e| Unreadable(format!("layer {digest}: {e}")))?;
    if body.size as usize > MAX_PAYLOAD {
        anyhow::bail!("the layer {digest} is too large to verify");
    }
    let chunks: Vec<bytes::Bytes> = body
        .stream
        .try_collect()
        .await
        .map_err(|e| Unreadable(format!("layer {digest}: {e}")))?;
    Ok(chunks.concat())
}
