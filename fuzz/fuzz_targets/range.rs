//! `Range` (blob GETs) and `Content-Range` (upload chunks) parsing: never panics, and
//! a resolved range always lies inside the blob.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signet_storage::range::{parse_chunk_range, parse_range_header};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (size, text) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().unwrap());
    let Ok(s) = std::str::from_utf8(text) else {
        return;
    };
    if let Some(spec) = parse_range_header(s) {
        if let Some(r) = spec.resolve(size) {
            assert!(r.start <= r.end, "{s:?} on {size}: {r:?}");
            assert!(r.end < size, "{s:?} on {size}: {r:?} runs past the end");
            assert_eq!(r.len(), r.end - r.start + 1);
            assert!(!r.is_empty());
        }
    }
    if let Some((start, end)) = parse_chunk_range(s) {
        assert!(start <= end, "{s:?}");
    }
});
