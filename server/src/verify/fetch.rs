//! What verification reads from the stores: an attachment's manifest and layer blobs,
//! a bundle referrer and the subject it signs, an atomic signature's bytes. The verdicts
//! themselves are [`signet_verify`]'s, pure functions of those bytes; here is only
//! where the bytes come from, and what a failed read means for the verdict (not kept:
//! it may be transient, or the attachment was deleted meanwhile).

use futures::TryStreamExt;
use serde_json::Value;
use signet_storage::attachments::AttachmentFormat;
use signet_storage::meta::{AtomicSignatures, Manifests, StoredManifest};
use signet_storage::{BlobStore, Digest, MetadataStore, Reference, RepoName};
use signet_verify::trust::{Trust, TrustRoot};
use signet_verify::{bundle, cosign, gpg, notation, Verdict};

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
    format: AttachmentFormat,
) -> (Verdict, bool) {
    match format {
        AttachmentFormat::Cosign | AttachmentFormat::Oci => {}
        AttachmentFormat::SigstoreBundle => {
            let roots: Vec<&TrustRoot> = trust.roots_for(repo).collect();
            let result = verify_referrer(&roots, meta, blobs, repo, subject, attachment).await;
            return settle(result, repo, attachment);
        }
        AttachmentFormat::Notation => {
            let roots: Vec<&TrustRoot> = trust.roots_for(repo).collect();
            let result = verify_notation(&roots, meta, blobs, repo, subject, attachment).await;
            return settle(result, repo, attachment);
        }
        AttachmentFormat::Atomic => {
            return verify_atomic(trust, meta, repo, subject, attachment).await
        }
        AttachmentFormat::InToto => {
            let result = statements(meta, repo, attachment).await;
            return settle(result, repo, attachment);
        }
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
    meta: &dyn Manifests,
    blobs: &BlobStore,
    repo: &str,
    subject: &Digest,
    attachment: &Digest,
) -> anyhow::Result<Verdict> {
    let (_, layers) = attachment_layers(meta, repo, attachment, "the attachment manifest").await?;
    let mut first_invalid = None;
    let mut recognised = false;
    for layer in &layers {
        let media_type = layer["mediaType"].as_str().unwrap_or_default();
        if !cosign::is_signature_layer(media_type) {
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
    let bytes = read_blob(blobs, &layer_digest(layer)?).await?;
    cosign::verify_layer(roots, repo, subject, layer, media_type, &bytes)
}
/// The verdict on the bundle referrer `attachment` of `subject`.
async fn verify_referrer(
    roots: &[&TrustRoot],
    meta: &dyn Manifests,
    blobs: &BlobStore,
    repo: &str,
    subject: &Digest,
    attachment: &Digest,
) -> anyhow::Result<Verdict> {
    let (repo_name, layers) =
        attachment_layers(meta, repo, attachment, "the bundle referrer").await?;
    let Some(layer) = layers.iter().find(|l| {
        bundle::BUNDLE_MEDIA_TYPES.contains(&l["mediaType"].as_str().unwrap_or_default())
    }) else {
        return Ok(Verdict::invalid(
            "malformed: the referrer has no Sigstore bundle layer",
        ));
    };
    let bytes = read_blob(blobs, &layer_digest(layer)?).await?;
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
        return Ok(bundle::verify_bundle(
            roots,
            &bundle,
            subject,
            Some(&signed),
        ));
    }
    Ok(bundle::verify_bundle(roots, &bundle, subject, None))
}

/// The layers of the attachment manifest `attachment` in `repo` (`what` names it in a
/// read failure), with the parsed repository name; [`Gone`] when it was deleted.
async fn attachment_layers(
    meta: &dyn Manifests,
    repo: &str,
    attachment: &Digest,
    what: &str,
) -> anyhow::Result<(RepoName, Vec<Value>)> {
    let repo_name: RepoName = repo
        .parse()
        .map_err(|_| anyhow::anyhow!("bad repository"))?;
    let manifest = read_manifest(meta, &repo_name, attachment, what)
        .await?
        .ok_or(Gone)?;
    let manifest: Value = serde_json::from_slice(&manifest)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    Ok((repo_name, layers))
}

/// The verdict on the Notary Project signature `attachment` of `subject`: its one
/// envelope layer (JWS or COSE), verified by [`notation::verify`].
async fn verify_notation(
    roots: &[&TrustRoot],
    meta: &dyn Manifests,
    blobs: &BlobStore,
    repo: &str,
    subject: &Digest,
    attachment: &Digest,
) -> anyhow::Result<Verdict> {
    let (repo_name, layers) =
        attachment_layers(meta, repo, attachment, "the notation signature").await?;
    // A signature manifest holds its envelope and nothing else.
    let [layer] = layers.as_slice() else {
        return Ok(Verdict::invalid(
            "malformed: a notation signature has exactly one layer, its envelope",
        ));
    };
    let media_type = layer["mediaType"].as_str().unwrap_or_default();
    if media_type != notation::JWS_MEDIA_TYPE && media_type != notation::COSE_MEDIA_TYPE {
        return Ok(Verdict::invalid(format!(
            "malformed: {media_type:?} is not a JWS or COSE envelope"
        )));
    }
    let bytes = read_blob(blobs, &layer_digest(layer)?).await?;
    // The payload must describe the subject as stored: its size and media type.
    let stored = read_stored_manifest(meta, &repo_name, subject, "the signed manifest")
        .await?
        .ok_or(Gone)?;
    let subject = notation::Subject {
        digest: subject,
        descriptor: Some((stored.content.len() as u64, &stored.media_type)),
    };
    Ok(notation::verify(
        roots,
        media_type,
        &bytes,
        &subject,
        chrono::Utc::now(),
    ))
}

/// An attestation manifest of unsigned in-toto statements (BuildKit's): nothing to
/// verify; the verdict says so and names what the first statement states. (The policy
/// counts it through the signatures of the index that carries it.)
async fn statements(
    meta: &dyn Manifests,
    repo: &str,
    attachment: &Digest,
) -> anyhow::Result<Verdict> {
    let repo_name: RepoName = repo
        .parse()
        .map_err(|_| anyhow::anyhow!("bad repository"))?;
    let content = read_manifest(meta, &repo_name, attachment, "the attestation manifest")
        .await?
        .ok_or(Gone)?;
    let predicate_types = signet_storage::manifest::statement_predicate_types(&content);
    Ok(Verdict::unsigned(predicate_types.into_iter().next()))
}

/// A layer descriptor's digest.
fn layer_digest(layer: &Value) -> anyhow::Result<Digest> {
    layer["digest"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|_| anyhow::anyhow!("layer digest"))
}

async fn read_manifest(
    meta: &dyn Manifests,
    repo: &RepoName,
    digest: &Digest,
    what: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    let stored = read_stored_manifest(meta, repo, digest, what).await?;
    Ok(stored.map(|s| s.content.to_vec()))
}

/// A manifest as stored (bytes and media type); a failed read is [`Unreadable`].
async fn read_stored_manifest(
    meta: &dyn Manifests,
    repo: &RepoName,
    digest: &Digest,
    what: &str,
) -> anyhow::Result<Option<StoredManifest>> {
    Ok(meta
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await
        .map_err(|e| Unreadable(format!("{what}: {e}")))?)
}

/// The verdict on the atomic signature whose content hashes to `attachment`, on
/// `subject` in `repo`; the bool says whether it may be cached.
async fn verify_atomic(
    trust: &Trust,
    meta: &dyn AtomicSignatures,
    repo: &str,
    subject: &Digest,
    attachment: &Digest,
) -> (Verdict, bool) {
    let roots: Vec<&TrustRoot> = trust
        .roots_for(repo)
        .filter(|r| !r.gpg_keys.is_empty())
        .collect();
    let Ok(repo_name) = repo.parse::<RepoName>() else {
        return (Verdict::invalid("malformed: bad repository"), true);
    };
    let stored = match meta.list_atomic_signatures(&repo_name, subject).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%repo, %attachment, error = %e, "verification could not read the atomic signature");
            return (
                Verdict::invalid(format!("could not read the atomic signature: {e}")),
                false,
            );
        }
    };
    let Some(signature) = stored
        .iter()
        .find(|s| Digest::sha256_of(&s.content) == *attachment)
    else {
        return (
            Verdict::invalid("could not read the atomic signature (it is gone)"),
            false,
        );
    };
    if roots.is_empty() {
        return (Verdict::no_trust_root(), true);
    }
    (
        gpg::verify_content(&roots, repo, subject, &signature.content),
        true,
    )
}

/// A layer's bytes, refused above [`cosign::MAX_PAYLOAD`].
async fn read_blob(blobs: &BlobStore, digest: &Digest) -> anyhow::Result<Vec<u8>> {
    let body = blobs
        .get(digest, None)
        .await
        .map_err(|e| Unreadable(format!("layer {digest}: {e}")))?;
    if body.size as usize > cosign::MAX_PAYLOAD {
        anyhow::bail!("the layer {digest} is too large to verify");
    }
    let chunks: Vec<bytes::Bytes> = body
        .stream
        .try_collect()
        .await
        .map_err(|e| Unreadable(format!("layer {digest}: {e}")))?;
    Ok(chunks.concat())
}
