//! Writing a layout: into a folder (a blob already there, of its size, is not written
//! again, so exporting into the same folder again adds only what changed) or as a tar
//! streamed to a file (each blob once). Blob bytes stream through in chunks: memory
//! stays flat whatever the blob sizes. index.json is written last, so a layout cut off
//! midway lists nothing it lacks.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use signet_storage::Digest;
use tokio::io::AsyncWriteExt;

use super::{blob_path, Location, INDEX_FILE, LAYOUT_FILE, LAYOUT_VERSION};

const TAR_BLOCK: usize = 512;
const FLUSHES_IN_FLIGHT: usize = 4;

pub enum Sink {
    Dir {
        root: PathBuf,
        /// Blobs written and being flushed, each renamed to its name once on disk (the
        /// flush of one overlaps the writing of the next).
        flushing: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
        /// Blobs this export wrote (some perhaps not yet renamed).
        written: HashSet<Digest>,
    },
    Tar {
        file: tokio::io::BufWriter<tokio::fs::File>,
        written: HashSet<Digest>,
    },
}

impl Sink {
    /// Starts a layout at `location` (a folder is created, or continued).
    pub async fn create(location: &Location) -> anyhow::Result<Sink> {
        let mut sink = match location {
            Location::Dir(path) => {
                tokio::fs::create_dir_all(path.join("blobs"))
                    .await
                    .with_context(|| format!("{}", path.display()))?;
                Sink::Dir {
                    root: path.clone(),
                    flushing: Vec::new(),
                    written: HashSet::new(),
                }
            }
            Location::Archive(path) => {
                let file = tokio::fs::File::create(path)
                    .await
                    .with_context(|| format!("{}", path.display()))?;
                Sink::Tar {
                    file: tokio::io::BufWriter::with_capacity(1 << 20, file),
                    written: HashSet::new(),
                }
            }
        };
        sink.file(LAYOUT_FILE, Bytes::from_static(LAYOUT_VERSION.as_bytes()))
            .await?;
        Ok(sink)
    }

    /// Whether the blob is already in the layout (no need to read it again).
    pub async fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        match self {
            Sink::Dir { root, written, .. } => {
                written.contains(digest)
                    || tokio::fs::metadata(root.join(blob_path(digest)))
                        .await
                        .is_ok_and(|m| m.len() == size)
            }
            Sink::Tar { written, .. } => written.contains(digest),
        }
    }

    /// Writes the blob `digest` of `size` bytes from `stream`.
    pub async fn blob<S>(&mut self, digest: &Digest, size: u64, stream: S) -> anyhow::Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    {
        let name = blob_path(digest);
        match self {
            Sink::Dir {
                root,
                flushing,
                written,
            } => {
                written.insert(digest.clone());
                let path = root.join(&name);
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                // Beside its final name, renamed once flushed: a blob of the folder is
                // whole on disk, even after a crash.
                let partial = path.with_extension("partial");
                let mut file = tokio::io::BufWriter::with_capacity(
                    1 << 20,
                    tokio::fs::File::create(&partial).await?,
                );
                let copied = copy(stream, &mut file, &name).await?;
                file.flush().await?;
                if copied != size {
                    bail!("{name}: {copied} bytes read, {size} expected");
                }
                let file = file.into_inner();
                flushing.push(tokio::spawn(async move {
                    file.sync_all().await?;
                    tokio::fs::rename(&partial, &path).await
                }));
                // A few flushes in flight at most.
                if flushing.len() >= FLUSHES_IN_FLIGHT {
                    flushing.remove(0).await??;
                }
            }
            Sink::Tar { file, written } => {
                file.write_all(&tar_header(&name, size)?).await?;
                let copied = copy(stream, file, &name).await?;
                if copied != size {
                    bail!("{name}: {copied} bytes read, {size} expected");
                }
                file.write_all(&padding(size)).await?;
                written.insert(digest.clone());
            }
        }
        Ok(())
    }

    /// Writes a small file of the layout (oci-layout, index.json, the signatures list).
    pub async fn file(&mut self, name: &str, bytes: Bytes) -> anyhow::Result<()> {
        match self {
            Sink::Dir { root, flushing, .. } => {
                // The blobs first: index.json never lists one not yet on disk.
                for flush in flushing.drain(..) {
                    flush.await??;
                }
                let path = root.join(name);
                let partial = path.with_extension("partial");
                let mut file = tokio::fs::File::create(&partial).await?;
                file.write_all(&bytes).await?;
                file.sync_all().await?;
                tokio::fs::rename(&partial, &path).await?;
            }
            Sink::Tar { file, .. } => {
                let size = bytes.len() as u64;
                file.write_all(&tar_header(name, size)?).await?;
                file.write_all(&bytes).await?;
                file.write_all(&padding(size)).await?;
            }
        }
        Ok(())
    }

    /// Writes index.json and closes the layout.
    pub async fn finish(mut self, index: Bytes) -> anyhow::Result<()> {
        self.file(INDEX_FILE, index).await?;
        if let Sink::Tar { mut file, .. } = self {
            // The end of a tar: two zero blocks.
            file.write_all(&[0u8; 2 * TAR_BLOCK]).await?;
            file.flush().await?;
            file.get_ref().sync_all().await?;
        }
        Ok(())
    }
}

async fn copy<S, W>(mut stream: S, out: &mut W, name: &str) -> anyhow::Result<u64>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut copied = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("reading {name} from the store"))?;
        out.write_all(&chunk).await?;
        copied += chunk.len() as u64;
    }
    Ok(copied)
}

/// A ustar header for a regular file (every name of a layout fits in 100 bytes).
fn tar_header(name: &str, size: u64) -> anyhow::Result<[u8; TAR_BLOCK]> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(*header.as_bytes())
}

/// Zeros up to the next 512-byte block.
fn padding(size: u64) -> Vec<u8> {
    let rest = (size % TAR_BLOCK as u64) as usize;
    vec![0u8; if rest == 0 { 0 } else { TAR_BLOCK - rest }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::archive::Archive;

    #[tokio::test]
    async fn a_tar_written_here_reads_back_and_a_cut_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.tar");
        let location = Location::Archive(path.clone());
        let mut sink = Sink::create(&location).await.unwrap();
        let body = Bytes::from(vec![7u8; 1000]);
        let digest = Digest::sha256_of(&body);
        let chunks = futures::stream::iter(vec![Ok(body.slice(..600)), Ok(body.slice(600..))]);
        sink.blob(&digest, 1000, chunks).await.unwrap();
        assert!(sink.has_blob(&digest, 1000).await);
        sink.finish(Bytes::from_static(b"{\"manifests\":[]}"))
            .await
            .unwrap();

        let archive = Archive::open(&location).await.unwrap();
        assert_eq!(archive.verified(&digest).await.unwrap(), body);
        assert_eq!(
            archive.index().await.unwrap()["manifests"],
            serde_json::json!([])
        );

        // Cut inside the blob: refused when opened, naming it.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..TAR_BLOCK * 3 + 100]).unwrap();
        let err = Archive::open(&location).await.err().unwrap();
        assert!(format!("{err:#}").contains(&blob_path(&digest)), "{err:#}");
    }
}
