//! OCI image layouts that carry images with every attachment across a gap no network
//! crosses: `signet export` writes one (a folder, or a tar of one), `signet import` and
//! sync jobs with `upstream = "oci:/path"` or `"oci-archive:/path.tar"` read one.
//!
//! The layout is a plain OCI image layout (`oci-layout`, `index.json`, `blobs/`), so
//! skopeo (`oci:` and `oci-archive:`), umoci and cosign read it. What Signet adds lives
//! in the annotations of `index.json`'s entries and in one file:
//! - `org.opencontainers.image.ref.name`: `<repository>:<tag>` for each exported tag,
//!   attachment tags (`sha256-<hex>.sig`, `.att`, `.sbom`, referrers fallback tags)
//!   included, so `skopeo copy oci:DIR:team/app:v1` finds the image;
//! - `io.signet.repository`: the repository of every entry, tagged or not (OCI
//!   referrers and manifests exported by digest have no tag);
//! - `kind`: `cosign save`'s convention (`dev.cosignproject.cosign/image`, `imageIndex`,
//!   `sigs`, `atts`);
//! - `signet-signatures.json`: the atomic (simple-signing) signatures, a JSON list of
//!   `{repository, manifest, id, digest}`, each signature's bytes a blob under `blobs/`.
//!
//! A layout another tool wrote has entries whose name is a tag alone (`v1`): they go to
//! the repository the reader is told (`--repository`).

pub mod archive;
pub mod export;
pub mod holdings;
pub mod job;
pub mod sink;
pub mod source;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use signet_storage::Digest;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const REPOSITORY: &str = "io.signet.repository";
pub const KIND: &str = "kind";
pub const SIGNATURES_FILE: &str = "signet-signatures.json";
pub const LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// One atomic signature in `signet-signatures.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtomicEntry {
    pub repository: String,
    /// The manifest it signs.
    pub manifest: Digest,
    /// Its id in the signatures extension.
    pub id: String,
    /// The digest of its bytes, a blob of the layout.
    pub digest: Digest,
}

/// Where a blob lives in a layout.
pub fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().name(), digest.hex())
}

/// A layout: a folder, or a tar of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    Archive(PathBuf),
}

impl Location {
    /// `oci:/path` or `oci-archive:/path.tar` (a sync job's upstream); `None` for
    /// anything else.
    pub fn from_upstream(upstream: &str) -> Option<Location> {
        if let Some(path) = upstream.strip_prefix("oci-archive:") {
            return Some(Location::Archive(PathBuf::from(path)));
        }
        upstream
            .strip_prefix("oci:")
            .map(|path| Location::Dir(PathBuf::from(path)))
    }

    /// A path on the command line: a tar when it is a file or ends in `.tar`.
    pub fn from_path(path: &Path) -> Location {
        let tar = path.is_file() || path.extension().is_some_and(|e| e == "tar");
        if tar {
            Location::Archive(path.to_path_buf())
        } else {
            Location::Dir(path.to_path_buf())
        }
    }

    /// As a sync job's upstream.
    pub fn to_upstream(&self) -> String {
        match self {
            Location::Dir(p) => format!("oci:{}", p.display()),
            Location::Archive(p) => format!("oci-archive:{}", p.display()),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Location::Dir(p) | Location::Archive(p) => p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_from_upstreams_and_paths() {
        assert_eq!(
            Location::from_upstream("oci:/a/b"),
            Some(Location::Dir("/a/b".into()))
        );
        assert_eq!(
            Location::from_upstream("oci-archive:/a/b.tar"),
            Some(Location::Archive("/a/b.tar".into()))
        );
        assert_eq!(Location::from_upstream("https://h"), None);
        let l = Location::from_path(Path::new("/nowhere/x.tar"));
        assert_eq!(l, Location::Archive("/nowhere/x.tar".into()));
        assert_eq!(Location::from_upstream(&l.to_upstream()), Some(l));
    }
}
