//! The OCI vocabulary every other crate speaks, and nothing else: digests and their
//! hashers, repository names, tags and references with exactly the distribution-spec
//! grammar, the one grammar of repository patterns (access rules, trust roots, sync
//! selection), and what makes a manifest an attachment of another. Pure functions over
//! strings and bytes: no I/O, no storage, no HTTP.
#![forbid(unsafe_code)]

pub mod attachments;
pub mod digest;
pub mod names;
pub mod pattern;

pub use digest::{Algorithm, Digest, DigestError, DigestHasher};
pub use names::{Reference, RepoName, Tag};
pub use pattern::RepoPattern;
