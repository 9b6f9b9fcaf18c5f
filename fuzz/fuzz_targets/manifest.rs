//! Manifest and index parsing: any bytes, under any of the content types clients send.
//! Never panics; what it accepts is consistent with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signet_fuzz_checks::manifest(data));
