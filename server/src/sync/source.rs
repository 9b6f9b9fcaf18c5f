//! Where sync reads from: what the runner and pull-through ask of a source, whatever
//! it is: an upstream registry ([`super::upstream::Upstream`]) or an OCI layout on disk
//! ([`crate::layout::source::LayoutSource`], `oci:` and `oci-archive:` upstreams).
//! Another is a type implementing [`Source`] and its arm in [`open`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use signet_storage::attachments::AttachmentKind;
use signet_storage::digest::Digest;

use super::job::SyncJob;
use super::retry::Retry;
use super::upstream::{BlobStream, Upstream};
use crate::layout::source::LayoutSource;
use crate::layout::Location;

#[async_trait]
pub trait Source: Send + Sync {
    /// How this source's transient failures are retried (and how many were).
    fn retry(&self) -> &Retry;

    /// Every repository the source holds.
    async fn catalog(&self) -> anyhow::Result<Vec<String>>;

    /// Every tag of `repo`.
    async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>>;

    /// The digest `repo:tag` points at.
    async fn tag_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Digest>;

    /// The manifest `digest` byte for byte, checked against the digest.
    async fn manifest(&self, repo: &str, digest: &Digest) -> anyhow::Result<Bytes>;

    /// Whether `repo` holds the blob `digest` (vouching for a copy held elsewhere).
    async fn holds_blob(&self, repo: &str, digest: &Digest) -> anyhow::Result<bool>;

    /// The blob `digest` as a stream (the store verifies it on the way in).
    async fn blob(&self, repo: &str, digest: &Digest) -> anyhow::Result<BlobStream>;

    /// The OCI referrers of `repo@subject`, with their kind.
    async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> anyhow::Result<Vec<(Digest, AttachmentKind)>>;

    /// Whether the source serves atomic signatures through the signatures extension.
    async fn supports_signatures(&self) -> anyhow::Result<bool>;

    /// The atomic signatures of `repo@digest` from the signatures extension, by id.
    async fn atomic_signatures(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> anyhow::Result<Vec<(String, Bytes)>>;

    /// The atomic signatures of `repo@digest` from a lookaside store, if the source
    /// has one (none by default).
    async fn lookaside_signatures(
        &self,
        _repo: &str,
        _digest: &Digest,
    ) -> anyhow::Result<Vec<(String, Bytes)>> {
        Ok(Vec::new())
    }
}

/// The source a job names: a registry, or a layout on disk.
pub async fn open(job: &SyncJob) -> anyhow::Result<Arc<dyn Source>> {
    if let Some(location) = Location::from_upstream(&job.upstream) {
        let layout = LayoutSource::open(&location, &job.layout_repository).await?;
        return Ok(Arc::new(layout));
    }
    open_registry(job)
}

/// The registry a job names (pull-through fills from registries only).
pub fn open_registry(job: &SyncJob) -> anyhow::Result<Arc<dyn Source>> {
    if Location::from_upstream(&job.upstream).is_some() {
        anyhow::bail!("{}: a registry is needed here, not a layout", job.upstream);
    }
    Ok(Arc::new(Upstream::new(job)?))
}

/// Checks what a job names as its source without reading it (a layout is read when
/// the job runs).
pub fn check(job: &SyncJob) -> anyhow::Result<()> {
    if Location::from_upstream(&job.upstream).is_some() {
        return Ok(());
    }
    Upstream::new(job).map(|_| ())
}
