//! What an export reads from: this registry's stores (`signet export`), or a sync
//! source (a job writing to a layout instead of the store: an upstream registry
//! straight into a folder to carry across the gap).

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use signet_storage::meta::Page;
use signet_storage::{Digest, Reference, RepoName};

use crate::state::AppState;
use crate::sync::source::Source;
use crate::sync::upstream::BlobStream;

#[async_trait]
pub trait Holdings: Send + Sync {
    /// Every tag of `repo`.
    async fn tags(&self, repo: &RepoName) -> anyhow::Result<Vec<String>>;
    async fn resolve(&self, repo: &RepoName, tag: &str) -> anyhow::Result<Digest>;
    /// The manifest's exact bytes and its media type.
    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<(Bytes, String)>;
    /// Manifests whose `subject` is `subject`.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> anyhow::Result<Vec<Digest>>;
    /// Atomic signatures of `subject`: (id, bytes).
    async fn atomic_signatures(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> anyhow::Result<Vec<(String, Bytes)>>;
    /// A blob's bytes, of the size its descriptor says.
    async fn blob(&self, repo: &RepoName, digest: &Digest, size: u64)
        -> anyhow::Result<BlobStream>;
}

/// This registry's stores.
pub struct Stores<'a>(pub &'a AppState);

#[async_trait]
impl Holdings for Stores<'_> {
    async fn tags(&self, repo: &RepoName) -> anyhow::Result<Vec<String>> {
        let mut tags: Vec<String> = Vec::new();
        loop {
            let page = Page {
                last: tags.last().map(String::as_str),
                limit: Some(1000),
            };
            let Some(more) = self.0.meta.list_tags(repo, page).await? else {
                bail!("{repo}: no such repository");
            };
            if more.is_empty() {
                return Ok(tags);
            }
            tags.extend(more);
        }
    }

    async fn resolve(&self, repo: &RepoName, tag: &str) -> anyhow::Result<Digest> {
        let reference = Reference::Tag(tag.parse().map_err(|e| anyhow!("{tag}: {e}"))?);
        Ok(self
            .0
            .meta
            .get_manifest(repo, &reference)
            .await?
            .ok_or_else(|| anyhow!("{repo}:{tag}: no such tag"))?
            .digest)
    }

    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<(Bytes, String)> {
        let stored = self
            .0
            .meta
            .get_manifest(repo, &Reference::Digest(digest.clone()))
            .await?
            .ok_or_else(|| anyhow!("{repo}@{digest}: no such manifest"))?;
        Ok((stored.content, stored.media_type))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> anyhow::Result<Vec<Digest>> {
        Ok(self
            .0
            .meta
            .list_referrers(repo, subject, false)
            .await?
            .into_iter()
            .map(|r| r.digest)
            .collect())
    }

    async fn atomic_signatures(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> anyhow::Result<Vec<(String, Bytes)>> {
        Ok(self
            .0
            .meta
            .list_atomic_signatures(repo, subject)
            .await?
            .into_iter()
            .map(|s| (s.id, s.content))
            .collect())
    }

    async fn blob(
        &self,
        _repo: &RepoName,
        digest: &Digest,
        size: u64,
    ) -> anyhow::Result<BlobStream> {
        let body = self
            .0
            .blobs
            .get(digest, None)
            .await
            .with_context(|| format!("blob {digest}"))?;
        if body.size != size {
            bail!(
                "blob {digest}: {} bytes stored, its descriptor says {size}",
                body.size
            );
        }
        Ok(body.stream)
    }
}

/// A sync source: an upstream registry, read as a sync job reads it.
pub struct Upstream {
    source: Arc<dyn Source>,
    /// The source serves the signatures extension (asked once; otherwise its
    /// lookaside, if any, is read).
    signatures_extension: bool,
}

impl Upstream {
    pub async fn new(source: Arc<dyn Source>) -> anyhow::Result<Upstream> {
        let signatures_extension = source.supports_signatures().await?;
        Ok(Upstream {
            source,
            signatures_extension,
        })
    }
}

#[async_trait]
impl Holdings for Upstream {
    async fn tags(&self, repo: &RepoName) -> anyhow::Result<Vec<String>> {
        self.source.tags(repo.as_str()).await
    }

    async fn resolve(&self, repo: &RepoName, tag: &str) -> anyhow::Result<Digest> {
        self.source.tag_digest(repo.as_str(), tag).await
    }

    async fn manifest(&self, repo: &RepoName, digest: &Digest) -> anyhow::Result<(Bytes, String)> {
        let bytes = self.source.manifest(repo.as_str(), digest).await?;
        let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| signet_storage::manifest::OCI_MANIFEST.to_string());
        Ok((bytes, media_type))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> anyhow::Result<Vec<Digest>> {
        Ok(self
            .source
            .referrers(repo.as_str(), subject)
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    async fn atomic_signatures(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> anyhow::Result<Vec<(String, Bytes)>> {
        if !self.signatures_extension {
            return self
                .source
                .lookaside_signatures(repo.as_str(), subject)
                .await;
        }
        self.source.atomic_signatures(repo.as_str(), subject).await
    }

    async fn blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        _size: u64,
    ) -> anyhow::Result<BlobStream> {
        Ok(verified(
            digest,
            self.source.blob(repo.as_str(), digest).await?,
        ))
    }
}

/// A stream that fails at its end unless its bytes hash to `digest`: what an upstream
/// sends goes into a layout only when it is what its digest says.
pub fn verified(digest: &Digest, stream: BlobStream) -> BlobStream {
    use futures::StreamExt;
    let expected = digest.clone();
    let hasher = signet_storage::digest::DigestHasher::new(digest.algorithm());
    futures::stream::unfold((stream, Some(hasher)), move |(mut stream, hasher)| {
        let expected = expected.clone();
        async move {
            let mut hasher = hasher?;
            match stream.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    Some((Ok(chunk), (stream, Some(hasher))))
                }
                Some(Err(e)) => Some((Err(e), (stream, None))),
                None if hasher.finish() == expected => None,
                None => Some((
                    Err(std::io::Error::other(format!(
                        "blob {expected}: the upstream's bytes do not match its digest"
                    ))),
                    (stream, None),
                )),
            }
        }
    })
    .boxed()
}
