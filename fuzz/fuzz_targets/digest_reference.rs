//! Digest, repository name, tag and reference parsing: never panics, and whatever is
//! accepted prints back exactly as it was written (the registry stores and compares
//! these strings, so a parse that changed them would split one name into two).
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_storage::digest::Digest;
use signet_storage::names::{Reference, RepoName, Tag};

fuzz_target!(|data: &[u8]| {
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
        assert!(s.len() <= 255 || name.as_str().len() == s.len());
    }
    if let Ok(tag) = s.parse::<Tag>() {
        assert_eq!(tag.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 128, "the spec's tag grammar");
    }
    if let Ok(reference) = s.parse::<Reference>() {
        assert_eq!(reference.to_string(), s);
    }
});
