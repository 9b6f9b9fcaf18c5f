//! The change token: an opaque value that changes whenever the metadata store commits,
//! from any connection of any process. A cache keeps an answer under the token it read
//! *before* querying the store, and serves it only while the token is unchanged, so an
//! answer is never served after a commit that might change it, whatever the writer.
//!
//! Each engine says how it knows: SQLite reads its WAL-index header
//! ([`super::wal_index`]); an engine with no such signal answers `None`, and callers
//! cache nothing.

use std::sync::Arc;

/// What the store looked like at one moment. Compare two for equality; nothing else is
/// promised about the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ChangeToken(Arc<[u8]>);

impl ChangeToken {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        ChangeToken(Arc::from(bytes))
    }
}

impl std::fmt::Debug for ChangeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChangeToken({} bytes)", self.0.len())
    }
}
