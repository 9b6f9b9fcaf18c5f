//! The signatures extension's PUT body (what containers/image sends): never panics,
//! and an accepted signature carries a well-formed id and bounded, non-empty content.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signet_fuzz_checks::signature_body(data));
