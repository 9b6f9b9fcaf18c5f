//! Notary Project envelopes, JWS and COSE: reading and verifying any bytes never
//! panics, and nothing verifies without a trust root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| signet_fuzz_checks::notation_envelope(data));
