//! `Range` (blob GETs) and `Content-Range` (upload chunks) parsing: never panics, and
//! a resolved range always lies inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signet_fuzz_checks::range(data));
