//! Manifest and index parsing: any bytes, under any of the content types clients send.
//! Never panics; what it accepts is consistent with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_storage::manifest::{parse_manifest, ManifestKind};

const CONTENT_TYPES: [Option<&str>; 7] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
    Some("application/json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()];
    let Ok(parsed) = parse_manifest(body, content_type) else {
        return;
    };
    // Accepted bytes are JSON, and what the registry derives from them holds together.
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
});
