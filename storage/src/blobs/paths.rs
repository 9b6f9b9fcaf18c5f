//! Where every object of the blob store lives: the one place keys are spelled.
//!
//! ```text
//! blobs/<alg>/<first 2 hex>/<hex>         content-addressed bytes
//! uploads/<session>/data                  a chunked upload's file or multipart object
//! uploads/<session>/tail-<n>-<rand>       multipart: bytes after the last full part
//! uploads/<session>/<part>-<rand>         one request body (part staging)
//! uploads/<session>/assembled-<rand>      parts concatenated before they verify
//! ```

use std::path::{Path as LocalPath, PathBuf};

use object_store::path::Path;

use crate::digest::Digest;
use crate::error::{StorageError, StorageResult};

/// The folder of all staging.
const STAGING: &str = "uploads";

/// A blob's content address.
pub fn blob(digest: &Digest) -> Path {
    let hex = digest.hex();
    Path::from(format!(
        "blobs/{}/{}/{}",
        digest.algorithm().name(),
        &hex[..2],
        hex
    ))
}

/// The folder of all staging.
pub fn staging_root() -> Path {
    Path::from(STAGING)
}

/// A session's staging folder.
pub fn session(session: &str) -> Path {
    Path::from(format!("{STAGING}/{session}"))
}

/// The session a staged object belongs to (`None` outside staging).
pub fn session_of(key: &Path) -> Option<String> {
    let mut parts = key.parts();
    let (Some(root), Some(session)) = (parts.next(), parts.next()) else {
        return None;
    };
    (root.as_ref() == STAGING).then(|| session.as_ref().to_string())
}

/// A new key for request body `part_no` of a session.
pub fn part(session: &str, part_no: usize) -> Path {
    Path::from(format!(
        "{STAGING}/{session}/{part_no:06}-{:016x}",
        rand::random::<u64>()
    ))
}

/// A new key for a session's parts concatenated.
pub fn assembled(session: &str) -> Path {
    Path::from(format!(
        "{STAGING}/{session}/assembled-{:016x}",
        rand::random::<u64>()
    ))
}

/// A session's appended file, or its multipart object.
pub fn data(session: &str) -> Path {
    Path::from(format!("{STAGING}/{session}/data"))
}

/// A new key for a multipart session's tail after `uploaded` bytes in parts.
pub fn tail(session: &str, uploaded: u64) -> Path {
    Path::from(format!(
        "{STAGING}/{session}/tail-{uploaded}-{:016x}",
        rand::random::<u64>()
    ))
}

/// The file behind `key` in a local store rooted at `root`.
pub fn local(root: &LocalPath, key: &Path) -> PathBuf {
    root.join(key.as_ref())
}

/// A session's staging folder in a local store. The id comes from a session row, but
/// it becomes a path: anything that could leave the folder is refused.
pub fn local_session(root: &LocalPath, session: &str) -> StorageResult<PathBuf> {
    if session.is_empty() || session.contains(['/', '\\', '.']) {
        return Err(StorageError::Corrupt(format!("upload id {session:?}")));
    }
    Ok(root.join(STAGING).join(session))
}

/// The folder of all staging in a local store.
pub fn local_staging_root(root: &LocalPath) -> PathBuf {
    root.join(STAGING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_session_and_local_paths_stay_inside() {
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(
            blob(&digest).as_ref(),
            format!("blobs/sha256/ab/{}", "ab".repeat(32))
        );
        for key in [data("s1"), tail("s1", 8), part("s1", 0), assembled("s1")] {
            assert_eq!(session_of(&key).as_deref(), Some("s1"), "{key}");
        }
        assert_eq!(session_of(&blob(&digest)), None);
        let root = LocalPath::new("/srv/blobs");
        assert_eq!(
            local_session(root, "s1").unwrap(),
            PathBuf::from("/srv/blobs/uploads/s1")
        );
        for bad in ["", "..", "a/b", "a\\b", "a.b"] {
            assert!(local_session(root, bad).is_err(), "{bad:?}");
        }
    }
}
