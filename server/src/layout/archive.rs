//! Reading a layout's files, from a folder or from a tar (whose entries are found once,
//! by offset, so a blob is read in place without unpacking the tar).

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use signet_storage::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{blob_path, Location, INDEX_FILE, LAYOUT_FILE};
use crate::sync::upstream::BlobStream;

/// The largest file read whole (index.json, a manifest, a signature).
const MAX_SMALL_FILE: u64 = 64 << 20;

/// A layout opened for reading.
pub struct Archive {
    files: Files,
}

enum Files {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        /// Entry name → (offset of its bytes, size).
        entries: HashMap<String, (u64, u64)>,
    },
}

impl Archive {
    /// Opens the layout at `location`: a folder, or a tar whose entries are listed once
    /// (a truncated tar is refused here, naming the entry it cuts).
    pub async fn open(location: &Location) -> anyhow::Result<Archive> {
        let files = match location {
            Location::Dir(path) => Files::Dir(path.clone()),
            Location::Archive(path) => {
                let path = path.clone();
                let scanned = path.clone();
                let entries = tokio::task::spawn_blocking(move || scan_tar(&scanned))
                    .await
                    .context("scanning the tar")??;
                Files::Tar { path, entries }
            }
        };
        let archive = Archive { files };
        if archive.size(LAYOUT_FILE).await?.is_none() {
            bail!(
                "{}: not an OCI image layout (no {LAYOUT_FILE})",
                location.path().display()
            );
        }
        Ok(archive)
    }

    /// The size of the file `name`, `None` when absent.
    pub async fn size(&self, name: &str) -> anyhow::Result<Option<u64>> {
        match &self.files {
            Files::Dir(root) => match tokio::fs::metadata(root.join(name)).await {
                Ok(m) if m.is_file() => Ok(Some(m.len())),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| name.to_string()),
            },
            Files::Tar { entries, .. } => Ok(entries.get(name).map(|(_, size)| *size)),
        }
    }

    /// The whole file `name` (a small one: index.json, a manifest, a signature).
    pub async fn read(&self, name: &str) -> anyhow::Result<Bytes> {
        let size = self
            .size(name)
            .await?
            .ok_or_else(|| anyhow!("{name}: missing from the layout"))?;
        if size > MAX_SMALL_FILE {
            bail!("{name}: {size} bytes, too large to be a manifest or an index");
        }
        let mut out = Vec::with_capacity(size as usize);
        let mut stream = self.stream(name).await?;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.with_context(|| format!("reading {name}"))?);
        }
        if out.len() as u64 != size {
            bail!("{name}: {} of its {size} bytes could be read", out.len());
        }
        Ok(Bytes::from(out))
    }

    /// The blob `digest`, read whole and checked against its digest.
    pub async fn verified(&self, digest: &Digest) -> anyhow::Result<Bytes> {
        let name = blob_path(digest);
        let bytes = self.read(&name).await?;
        if Digest::of(digest.algorithm(), &bytes) != *digest {
            bail!("{name}: its content does not match its digest");
        }
        Ok(bytes)
    }

    /// The file `name` as a stream of chunks.
    pub async fn stream(&self, name: &str) -> anyhow::Result<BlobStream> {
        let (path, offset, size) = match &self.files {
            Files::Dir(root) => {
                let path = root.join(name);
                let size = tokio::fs::metadata(&path)
                    .await
                    .with_context(|| format!("{name}: missing from the layout"))?
                    .len();
                (path, 0, size)
            }
            Files::Tar { path, entries } => {
                let (offset, size) = *entries
                    .get(name)
                    .ok_or_else(|| anyhow!("{name}: missing from the layout"))?;
                (path.clone(), offset, size)
            }
        };
        let mut file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("{}", path.display()))?;
        file.seek(SeekFrom::Start(offset)).await?;
        let reader = file.take(size);
        Ok(ReaderStream::with_capacity(reader, 1 << 20)
            .map_err(std::io::Error::other)
            .boxed())
    }

    /// index.json.
    pub async fn index(&self) -> anyhow::Result<serde_json::Value> {
        let bytes = self.read(INDEX_FILE).await?;
        serde_json::from_slice(&bytes).with_context(|| format!("{INDEX_FILE} is not JSON"))
    }
}

/// Lists a tar's regular files by name, with the offset and size of their bytes.
fn scan_tar(path: &Path) -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let length = file.metadata()?.len();
    let mut archive = tar::Archive::new(file);
    let mut entries = HashMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("{}: not a tar", path.display()))?
    {
        let entry = entry.with_context(|| format!("{}: a damaged tar", path.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let (offset, size) = (entry.raw_file_position(), entry.size());
        if offset + size > length {
            bail!(
                "{}: truncated: {name} needs {size} bytes, {} remain",
                path.display(),
                length.saturating_sub(offset)
            );
        }
        entries.insert(name, (offset, size));
    }
    Ok(entries)
}
