//! What each fuzz target checks, as plain functions of the input: the cargo-fuzz
//! targets in `fuzz/` (nightly, libFuzzer) call them, and `tests/corpus.rs` replays
//! every saved input through them on the stable toolchain, in the test command. A
//! check panics when the property fails.

use std::collections::BTreeMap;

use signet_server::ext::signatures::validate;
use signet_storage::attachments::{classify, AttachmentFormat, AttachmentKind, AttachmentTag};
use signet_storage::digest::Digest;
use signet_storage::manifest::{parse_manifest, ManifestKind};
use signet_storage::names::{Reference, RepoName, Tag};
use signet_storage::range::{parse_chunk_range, parse_range_header};

/// A target's check: panics when its property fails for the input.
pub type Check = fn(&[u8]);

/// Every target: its name (the folder of its corpus) and its check.
pub const TARGETS: [(&str, Check); 6] = [
    ("manifest", manifest),
    ("digest_reference", digest_reference),
    ("attachment_tag", attachment_tag),
    ("range", range),
    ("signature_body", signature_body),
    ("notation_envelope", notation_envelope),
];

const CONTENT_TYPES: [Option<&str>; 7] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json; charset=utf-8"),
];

/// Manifest and index parsing: any bytes (the first picks the content type), never a
/// panic; what it accepts is JSON and consistent with itself.
pub fn manifest(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()];
    let Ok(parsed) = parse_manifest(body, content_type) else {
        return;
    };
    assert!(serde_json::from_slice::<serde_json::Value>(body).is_ok());
    let blobs = parsed.required_blobs();
    let children = parsed.required_children();
    assert!(
        blobs.windows(2).all(|w| w[0] < w[1]),
        "sorted, deduplicated"
    );
    assert!(
        children.windows(2).all(|w| w[0] < w[1]),
        "sorted, deduplicated"
    );
    match parsed.kind {
        ManifestKind::Image => assert!(children.is_empty(), "an image has no children"),
        ManifestKind::Index => assert!(blobs.is_empty(), "an index requires no blobs"),
    }
    let _ = parsed.effective_artifact_type();
}

/// Digest, repository name, tag and reference parsing: whatever is accepted prints
/// back exactly as written (the registry stores and compares these strings).
pub fn digest_reference(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s);
        assert_eq!(format!("{}:{}", d.algorithm().name(), d.hex()), s);
        assert_eq!(d.to_string().parse::<Digest>().ok(), Some(d));
    }
    if let Ok(name) = s.parse::<RepoName>() {
        assert_eq!(name.as_str(), s);
    }
    if let Ok(tag) = s.parse::<Tag>() {
        assert_eq!(tag.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 128, "the spec's tag grammar");
    }
    if let Ok(reference) = s.parse::<Reference>() {
        assert_eq!(reference.to_string(), s);
    }
}

/// The attachment tag grammar and referrer classification: a recognised tag is
/// exactly the one its subject and kind spell.
pub fn attachment_tag(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(tag) = AttachmentTag::parse(s) {
        let subject = tag.subject();
        let stem = format!("{}-{}", subject.algorithm().name(), subject.hex());
        let spelled = match &tag {
            AttachmentTag::Cosign { kind, .. } => {
                let suffix = match kind {
                    AttachmentKind::Signature => "sig",
                    AttachmentKind::Attestation => "att",
                    AttachmentKind::Sbom => "sbom",
                    other => panic!("a cosign tag of kind {other}"),
                };
                format!("{stem}.{suffix}")
            }
            AttachmentTag::Fallback { .. } => stem,
        };
        assert_eq!(spelled, s);
    }
    // The same text as an artifact type, with a predicate annotation made of it too.
    let (artifact_type, annotation) = s.split_once('\n').unwrap_or((s, ""));
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "dev.sigstore.bundle.predicateType".to_string(),
        annotation.to_string(),
    );
    let (kind, format) = classify(Some(artifact_type), &annotations);
    assert_eq!(
        format.as_str().parse::<AttachmentFormat>().ok(),
        Some(format)
    );
    assert_eq!(kind.as_str().parse::<AttachmentKind>().ok(), Some(kind));
    let _ = classify(None, &BTreeMap::new());
}

/// `Range` and `Content-Range` parsing (the first 8 bytes are the blob size): a
/// resolved range always lies inside the blob.
pub fn range(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (size, text) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().expect("8 bytes"));
    let Ok(s) = std::str::from_utf8(text) else {
        return;
    };
    if let Some(spec) = parse_range_header(s) {
        if let Some(r) = spec.resolve(size) {
            assert!(r.start <= r.end, "{s:?} on {size}: {r:?}");
            assert!(r.end < size, "{s:?} on {size}: {r:?} runs past the end");
            assert_eq!(r.len(), r.end - r.start + 1);
            assert!(!r.is_empty());
        }
    }
    if let Some((start, end)) = parse_chunk_range(s) {
        assert!(start <= end, "{s:?}");
    }
}

/// The signatures extension's PUT body: an accepted signature carries a well-formed id
/// and bounded, non-empty content.
pub fn signature_body(data: &[u8]) {
    const MAX_CONTENT: usize = 4096;
    let digest: Digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        .parse()
        .expect("a digest");
    if let Ok(signature) = validate(data, &digest, MAX_CONTENT) {
        assert_eq!(signature.id.len(), 32);
        assert!(signature
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(!signature.content.is_empty());
        assert!(signature.content.len() <= MAX_CONTENT);
    }
}

/// Notary Project envelopes (the first byte picks JWS or COSE): reading and verifying
/// any bytes never panics, and what is read has signed bytes and a signature.
pub fn notation_envelope(data: &[u8]) {
    use signet_verify::notation::{self, envelope, COSE_MEDIA_TYPE, JWS_MEDIA_TYPE};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let media_type = if selector % 2 == 0 {
        JWS_MEDIA_TYPE
    } else {
        COSE_MEDIA_TYPE
    };
    if let Ok(parsed) = envelope::parse(media_type, body) {
        assert!(!parsed.signed.is_empty(), "an envelope signs something");
    }
    let digest: Digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
        .parse()
        .expect("a digest");
    let subject = notation::Subject {
        digest: &digest,
        descriptor: Some((1, "application/vnd.oci.image.manifest.v1+json")),
    };
    let verdict = notation::verify(&[], media_type, body, &subject, chrono::Utc::now());
    assert!(!verdict.is_valid(), "no root, no valid verdict");
}
