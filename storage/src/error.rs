//! The storage layer's errors, by meaning: callers match on the variant, never on text.

use crate::digest::Digest;

pub type StorageResult<T> = Result<T, StorageError>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    /// The bytes received do not hash to the digest the client named.
    #[error("digest mismatch: expected {expected}, computed {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// A manifest names blobs or child manifests the repository does not hold.
    #[error("{} referenced content missing", .0.len())]
    MissingReferences(Vec<Digest>),
    /// A manifest's descriptor declares a size the stored blob or child does not have.
    #[error("descriptor {digest} declares {declared} bytes, the stored content has {stored}")]
    SizeMismatch {
        digest: Digest,
        declared: u64,
        stored: u64,
    },
    /// Someone else changed the same record first (an upload chunk raced another one).
    #[error("concurrent modification: {0}")]
    Conflict(String),
    /// An upload chunk does not start where the session's received bytes end.
    #[error("chunk starts at {start}, but the upload holds {size} bytes")]
    OutOfOrder { start: u64, size: u64 },
    /// The client's request body broke off or could not be read.
    #[error("request body: {0}")]
    BodyRead(String),
    /// An `If-Match`/`If-None-Match` condition did not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("blob store: {0}")]
    Blobs(#[from] object_store::Error),
    #[error("metadata store: {0}")]
    Metadata(#[from] sqlx::Error),
    #[error("metadata migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
    /// Garbage collection is deleting this blob's bytes right now: it cannot be linked
    /// until that is done (an upload waits and retries; a mount falls back to an upload).
    #[error("blob {0} is being deleted by garbage collection")]
    BlobBeingDeleted(Digest),
    /// A push would move, or a delete would remove, a tag an immutable-tag rule protects;
    /// nothing was changed. `rule` names the rule (the store leaves it empty; the
    /// [`crate::registry::Registry`] that applied the rules fills it in).
    #[error("tag {tag} is immutable (rule {rule:?}): it cannot be moved or deleted")]
    TagImmutable { tag: String, rule: String },
}

impl StorageError {
    /// True when a store ran out of room: a full disk or an exhausted quota under the
    /// blob store, or a metadata database that cannot grow (SQLite's `SQLITE_FULL`,
    /// PostgreSQL's `disk_full`). Found anywhere in the chain of causes, since
    /// object_store and sqlx wrap the operating system's error in their own.
    pub fn is_out_of_space(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{QuotaExceeded, StorageFull};
                if matches!(io.kind(), StorageFull | QuotaExceeded) {
                    return true;
                }
            }
            if let Some(sqlx::Error::Database(db)) = e.downcast_ref::<sqlx::Error>() {
                // SQLITE_FULL (13, extended codes keep it in the low byte); 53100.
                let code = db.code();
                let sqlite_full = code
                    .as_deref()
                    .and_then(|c| c.parse::<u32>().ok())
                    .is_some_and(|c| c & 0xff == 13);
                if sqlite_full || code.as_deref() == Some("53100") {
                    return true;
                }
            }
            cause = e.source();
        }
        false
    }

    /// True when every metadata connection stayed busy for the pool's whole acquire
    /// timeout: nothing was done, and the request can be retried.
    pub fn is_busy(&self) -> bool {
        matches!(self, StorageError::Metadata(sqlx::Error::PoolTimedOut))
    }

    /// True when the failure was caused by the client's request, not by the store.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound)
            || matches!(
                self,
                StorageError::Blobs(object_store::Error::NotFound { .. })
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pool_timeout_is_busy() {
        assert!(StorageError::Metadata(sqlx::Error::PoolTimedOut).is_busy());
        assert!(!StorageError::Metadata(sqlx::Error::PoolClosed).is_busy());
        assert!(!StorageError::Other("x".into()).is_busy());
    }
}
