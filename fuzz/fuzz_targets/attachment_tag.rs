//! The attachment tag grammar (`sha256-<hex>.sig|.att|.sbom` and the referrers
//! fallback `sha256-<hex>`) and the classification of referrers: never panics, and a
//! recognised tag is exactly the one its subject and kind spell.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signet_fuzz_checks::attachment_tag(data));
