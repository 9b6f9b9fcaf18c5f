//! The attachment tag grammar (`sha256-<hex>.sig|.att|.sbom` and the referrers
//! fallback `sha256-<hex>`) and the classification of referrers: never panics, and a
//! recognised tag is exactly the one its subject and kind spell.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use signet_storage::attachments::{classify, AttachmentKind, AttachmentTag};

fuzz_target!(|data: &[u8]| {
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
    assert!(!format.is_empty());
    assert_eq!(kind.as_str().parse::<AttachmentKind>().ok(), Some(kind));
    let _ = classify(None, &BTreeMap::new());
});
