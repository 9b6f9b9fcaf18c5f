//! Digest, repository name, tag and reference parsing: never panics, and whatever is
//! accepted prints back exactly as it was written (the registry stores and compares
//! these strings, so a parse that changed them would split one name into two).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signet_fuzz_checks::digest_reference(data));
