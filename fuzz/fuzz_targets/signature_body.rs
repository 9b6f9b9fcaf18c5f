//! The signatures extension's PUT body (what containers/image sends): never panics,
//! and an accepted signature carries a well-formed id and bounded, non-empty content.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_server::ext::signatures::validate;
use signet_storage::digest::Digest;

const MAX_CONTENT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let digest: Digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        .parse()
        .unwrap();
    if let Ok(signature) = validate(data, &digest, MAX_CONTENT) {
        assert_eq!(signature.id.len(), 32);
        assert!(signature
            .id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert!(!signature.content.is_empty());
        assert!(signature.content.len() <= MAX_CONTENT);
    }
});
