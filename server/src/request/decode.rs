//! Strict percent-decoding, the only one a request's path and query go through.
//!
//! Strict: a `%` must be followed by two hex digits and the result must be UTF-8, or
//! nothing is decoded at all. A lenient decoder that passes a broken escape through
//! would give two readers two different strings.

use std::borrow::Cow;

/// Decodes `%XX` escapes; with `plus_is_space` (query strings, HTML form encoding) a
/// `+` is a space. `None` when an escape is broken or the bytes are not UTF-8. Text with
/// nothing to decode, most of it, is borrowed.
pub fn percent_decode(raw: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    let escaped = raw.contains('%') || (plus_is_space && raw.contains('+'));
    if !escaped {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_once() {
        assert_eq!(percent_decode("v1", false).unwrap(), "v1");
        assert_eq!(percent_decode("%761", false).unwrap(), "v1");
        assert_eq!(percent_decode("sha256%3Aab", false).unwrap(), "sha256:ab");
        assert_eq!(percent_decode("%2F", false).unwrap(), "/");
        // Once: an escaped escape stays an escape.
        assert_eq!(percent_decode("%2561", false).unwrap(), "%61");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a%2Bb", true).unwrap(), "a+b");
    }

    #[test]
    fn refuses_broken_escapes_and_non_utf8() {
        for raw in ["%", "%6", "%zz", "a%g1", "%ff", "%c3%28"] {
            assert!(percent_decode(raw, false).is_none(), "{raw}");
        }
    }
}
