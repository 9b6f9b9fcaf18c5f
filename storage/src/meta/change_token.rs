//! The change token: an opaque value that changes whenever the metadata store commits,
//! from any connection of any process. A cache keeps an answer under the token it read
//! *before* querying the store, and serves it only while the token is unchanged, so an
//! answer is never served after a commit that might change it, whatever the writer.
//!
//! Each engine says how it knows: SQLite reads its WAL-index header
//! ([`super::wal_index`]); an engine with no such signal answers `None`, and callers
//! cache nothing.

/// The longest token an engine makes: SQLite's WAL-index header (two copies of its 48
/// bytes).
const MAX_BYTES: usize = 96;

/// What the store looked like at one moment. Compare two for equality; nothing else is
/// promised about the bytes. Held inline: one is read for every cached request, and
/// copying a hundred bytes costs less than allocating and sharing them.
#[derive(Clone, PartialEq, Eq)]
pub struct ChangeToken {
    len: u8,
    bytes: [u8; MAX_BYTES],
}

impl ChangeToken {
    /// A token of `bytes`, at most [`MAX_BYTES`] of them (each engine's is of a fixed
    /// size, below that).
    pub(crate) fn new(bytes: &[u8]) -> Self {
        assert!(
            bytes.len() <= MAX_BYTES,
            "a change token of {} bytes",
            bytes.len()
        );
        let mut token = ChangeToken {
            len: bytes.len() as u8,
            bytes: [0; MAX_BYTES],
        };
        token.bytes[..bytes.len()].copy_from_slice(bytes);
        token
    }
}

impl std::fmt::Debug for ChangeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChangeToken({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_equal_exactly_when_their_bytes_are() {
        let header = [7u8; MAX_BYTES];
        assert_eq!(ChangeToken::new(&header), ChangeToken::new(&header));
        let mut changed = header;
        changed[MAX_BYTES - 1] = 8;
        assert_ne!(ChangeToken::new(&header), ChangeToken::new(&changed));
        // A shorter token is not the longer one's prefix padded with zeros.
        assert_ne!(ChangeToken::new(&[0u8; 8]), ChangeToken::new(&[0u8; 9]));
        assert_eq!(
            ChangeToken::new(&42u64.to_le_bytes()),
            ChangeToken::new(&42u64.to_le_bytes())
        );
    }

    #[test]
    #[should_panic(expected = "a change token of 97 bytes")]
    fn a_longer_token_is_a_programming_error() {
        ChangeToken::new(&[0u8; MAX_BYTES + 1]);
    }
}
