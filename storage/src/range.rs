//! HTTP byte ranges: `Range: bytes=a-b` on blob reads, and the `Content-Range`/`Range`
//! forms used by chunked uploads (`a-b`, inclusive, no unit).

/// A request for part of a blob, before the blob's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRangeSpec {
    /// `bytes=a-b` (inclusive) or `bytes=a-` (to the end).
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// An inclusive range resolved against a blob of known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ResolvedRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses a `Range` header value. `None` when it is not a single `bytes` range we
/// understand: HTTP says to ignore such a header and answer with the whole body.
pub fn parse_range_header(value: &str) -> Option<ByteRangeSpec> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return Some(ByteRangeSpec::Suffix(parse_u64(b)?));
    }
    let start = parse_u64(a)?;
    let end = if b.is_empty() {
        None
    } else {
        Some(parse_u64(b)?)
    };
    if end.is_some_and(|e| e < start) {
        return None;
    }
    Some(ByteRangeSpec::From { start, end })
}

impl ByteRangeSpec {
    /// `None` when the range cannot be satisfied for a blob of `size` bytes (→ 416).
    pub fn resolve(self, size: u64) -> Option<ResolvedRange> {
        match self {
            ByteRangeSpec::From { start, end } => {
                if start >= size {
                    return None;
                }
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                Some(ResolvedRange { start, end })
            }
            ByteRangeSpec::Suffix(n) => {
                if n == 0 || size == 0 {
                    return None;
                }
                Some(ResolvedRange {
                    start: size.saturating_sub(n),
                    end: size - 1,
                })
            }
        }
    }
}

/// Parses an upload chunk's `Content-Range: <start>-<end>` (inclusive; the spec's form,
/// also tolerating a leading `bytes ` unit and a trailing `/total`).
pub fn parse_chunk_range(value: &str) -> Option<(u64, u64)> {
    let v = value.trim();
    let v = v.strip_prefix("bytes").map(str::trim_start).unwrap_or(v);
    let v = v.strip_prefix('=').unwrap_or(v);
    let v = v.split_once('/').map_or(v, |(r, _)| r);
    let (a, b) = v.split_once('-')?;
    let (start, end) = (parse_u64(a.trim())?, parse_u64(b.trim())?);
    (end >= start).then_some((start, end))
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 19 {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_headers() {
        assert_eq!(
            parse_range_header("bytes=0-99"),
            Some(ByteRangeSpec::From {
                start: 0,
                end: Some(99)
            })
        );
        assert_eq!(
            parse_range_header("bytes=10-"),
            Some(ByteRangeSpec::From {
                start: 10,
                end: None
            })
        );
        assert_eq!(
            parse_range_header("bytes=-5"),
            Some(ByteRangeSpec::Suffix(5))
        );
        for bad in [
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=a-b",
            "bytes=-",
            "0-1",
        ] {
            assert_eq!(parse_range_header(bad), None, "{bad}");
        }
    }

    #[test]
    fn resolution() {
        let r = |s: &str| parse_range_header(s).unwrap();
        assert_eq!(
            r("bytes=0-99").resolve(50),
            Some(ResolvedRange { start: 0, end: 49 })
        );
        assert_eq!(r("bytes=50-").resolve(50), None);
        assert_eq!(
            r("bytes=-10").resolve(5),
            Some(ResolvedRange { start: 0, end: 4 })
        );
        assert_eq!(r("bytes=-0").resolve(5), None);
        assert_eq!(r("bytes=0-0").resolve(0), None);
        assert_eq!(r("bytes=3-3").resolve(5).unwrap().len(), 1);
    }

    #[test]
    fn chunk_ranges() {
        assert_eq!(parse_chunk_range("0-99"), Some((0, 99)));
        assert_eq!(parse_chunk_range("bytes 100-199/200"), Some((100, 199)));
        assert_eq!(parse_chunk_range("bytes=5-9"), Some((5, 9)));
        assert_eq!(parse_chunk_range("9-5"), None);
        assert_eq!(parse_chunk_range("x-5"), None);
    }
}
