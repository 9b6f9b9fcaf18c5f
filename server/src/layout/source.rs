//! A layout as a sync source: its entries become repositories and tags, its manifests
//! with a `subject` become referrers, `signet-signatures.json` the atomic signatures.
//! The runner copies from it as from a registry (blobs and children before their
//! manifest, the tag last), so an import shows no image before all of it is stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use signet_storage::attachments::{classify, AttachmentKind};
use signet_storage::digest::DigestHasher;
use signet_storage::manifest::parse_manifest;
use signet_storage::Digest;

use super::archive::Archive;
use super::{blob_path, AtomicEntry, Location, REF_NAME, REPOSITORY, SIGNATURES_FILE};
use crate::sync::retry::Retry;
use crate::sync::source::Source;
use crate::sync::upstream::BlobStream;

/// An opened layout, its entries sorted by repository.
pub struct LayoutSource {
    archive: Archive,
    retry: Retry,
    /// Repository → tag → manifest.
    tags: BTreeMap<String, BTreeMap<String, Digest>>,
    /// Repository → subject → its referrers with their kind.
    referrers: HashMap<String, HashMap<Digest, Vec<(Digest, AttachmentKind)>>>,
    /// (repository, manifest) → its atomic signatures (id, digest of the bytes).
    signatures: HashMap<(String, Digest), Vec<(String, Digest)>>,
}

impl LayoutSource {
    /// Opens the layout at `location`; entries that name no repository (a tag alone, as
    /// skopeo writes) go to `repository`, and are refused without one.
    pub async fn open(location: &Location, repository: &str) -> anyhow::Result<LayoutSource> {
        let archive = Archive::open(location).await?;
        let index = archive.index().await?;
        let mut source = LayoutSource {
            archive,
            retry: Retry::new(0, Duration::from_millis(1), "layout".into()),
            tags: BTreeMap::new(),
            referrers: HashMap::new(),
            signatures: HashMap::new(),
        };
        let entries = index["manifests"]
            .as_array()
            .ok_or_else(|| anyhow!("index.json lists no manifests"))?;
        for entry in entries {
            let digest: Digest = entry["digest"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(|e| anyhow!("index.json: an entry's digest: {e}"))?;
            let (repo, tag) = name_of(entry, repository)
                .with_context(|| format!("index.json: the entry of {digest}"))?;
            let of_repo = source.tags.entry(repo.clone()).or_default();
            if let Some(tag) = tag {
                of_repo.insert(tag, digest.clone());
            }
            // A manifest with a subject is a referrer of it.
            let media_type = entry["mediaType"].as_str();
            let bytes = source.archive.verified(&digest).await?;
            if let Ok(parsed) = parse_manifest(&bytes, media_type) {
                if let Some(subject) = parsed.subject {
                    let (kind, _) = classify(parsed.artifact_type.as_deref(), &parsed.annotations);
                    source
                        .referrers
                        .entry(repo)
                        .or_default()
                        .entry(subject.digest)
                        .or_default()
                        .push((digest, kind));
                }
            }
        }
        if source.archive.size(SIGNATURES_FILE).await?.is_some() {
            let text = source.archive.read(SIGNATURES_FILE).await?;
            let listed: Vec<AtomicEntry> = serde_json::from_slice(&text)
                .with_context(|| format!("{SIGNATURES_FILE} is not a list of signatures"))?;
            for s in listed {
                source
                    .signatures
                    .entry((s.repository, s.manifest))
                    .or_default()
                    .push((s.id, s.digest));
            }
        }
        Ok(source)
    }

    /// Checks every blob the entries reach before anything is stored: present, of the
    /// size its descriptor says, and hashing to its digest. The first that is not is
    /// named. A blob a delta layout (`signet export --since`) left out passes when
    /// `stored(repository, digest)` says the destination already holds it there.
    pub async fn verify_all<F, Fut>(&self, stored: F) -> anyhow::Result<u64>
    where
        F: Fn(String, Digest) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let mut pending: Vec<(String, Digest)> = Vec::new();
        for (repo, tags) in &self.tags {
            pending.extend(tags.values().map(|d| (repo.clone(), d.clone())));
        }
        for (repo, by_subject) in &self.referrers {
            pending.extend(
                by_subject
                    .values()
                    .flatten()
                    .map(|(d, _)| (repo.clone(), d.clone())),
            );
        }
        for ((repo, _), signatures) in &self.signatures {
            pending.extend(signatures.iter().map(|(_, d)| (repo.clone(), d.clone())));
        }
        let mut checked: BTreeSet<(String, Digest)> = BTreeSet::new();
        let mut bytes = 0;
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        while let Some((repo, digest)) = pending.pop() {
            if !checked.insert((repo.clone(), digest.clone())) {
                continue;
            }
            let name = blob_path(&digest);
            let Some(size) = self.archive.size(&name).await? else {
                if stored(repo.clone(), digest.clone()).await? {
                    continue;
                }
                bail!("{name}: missing from the layout (and not already stored in {repo})");
            };
            if let Some(&declared) = sizes.get(&digest) {
                if declared != size {
                    bail!("{name}: {size} bytes, its descriptor says {declared}");
                }
            }
            bytes += size;
            let mut hasher = DigestHasher::new(digest.algorithm());
            let mut stream = self.archive.stream(&name).await?;
            let mut content = Vec::new();
            let small = size <= 4 << 20;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.with_context(|| format!("reading {name}"))?;
                hasher.update(&chunk);
                if small {
                    content.extend_from_slice(&chunk);
                }
            }
            if hasher.finish() != digest {
                bail!("{name}: its content does not match its digest");
            }
            // What a manifest references is checked too.
            if let Ok(parsed) = parse_manifest(&content, None) {
                for d in parsed
                    .config
                    .iter()
                    .chain(&parsed.layers)
                    .chain(&parsed.children)
                    .filter(|d| d.urls.is_empty())
                {
                    sizes.insert(d.digest.clone(), d.size);
                    pending.push((repo.clone(), d.digest.clone()));
                }
            }
        }
        Ok(bytes)
    }
}

/// The repository and tag an entry names.
fn name_of(
    entry: &serde_json::Value,
    fallback_repository: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let annotations = &entry["annotations"];
    let ref_name = annotations[REF_NAME].as_str();
    let repository = annotations[REPOSITORY].as_str();
    let (repo, tag) = match (repository, ref_name) {
        (Some(repo), Some(name)) => {
            let tag = name
                .strip_prefix(repo)
                .and_then(|t| t.strip_prefix(':'))
                .unwrap_or(name);
            (repo.to_string(), Some(tag.to_string()))
        }
        (Some(repo), None) => (repo.to_string(), None),
        (None, Some(name)) => match name.rsplit_once(':') {
            Some((repo, tag)) if !repo.is_empty() => (repo.to_string(), Some(tag.to_string())),
            _ => (fallback_repository.to_string(), Some(name.to_string())),
        },
        (None, None) => (fallback_repository.to_string(), None),
    };
    if repo.is_empty() {
        bail!("it names no repository: say which with --repository");
    }
    repo.parse::<signet_storage::RepoName>()
        .map_err(|e| anyhow!("repository {repo:?}: {e}"))?;
    if let Some(tag) = &tag {
        tag.parse::<signet_storage::Tag>()
            .map_err(|e| anyhow!("tag {tag:?}: {e}"))?;
    }
    Ok((repo, tag))
}

#[async_trait]
impl Source for LayoutSource {
    fn retry(&self) -> &Retry {
        &self.retry
    }

    async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.tags.keys().cloned().collect())
    }

    async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        Ok(self
            .tags
            .get(repo)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default())
    }

    async fn tag_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Digest> {
        self.tags
            .get(repo)
            .and_then(|t| t.get(tag))
            .cloned()
            .ok_or_else(|| anyhow!("{repo}:{tag}: not in the layout"))
    }

    async fn manifest(&self, _repo: &str, digest: &Digest) -> anyhow::Result<Bytes> {
        self.archive.verified(digest).await
    }

    async fn holds_blob(&self, _repo: &str, digest: &Digest) -> anyhow::Result<bool> {
        Ok(self.archive.size(&blob_path(digest)).await?.is_some())
    }

    async fn blob(&self, _repo: &str, digest: &Digest) -> anyhow::Result<BlobStream> {
        self.archive.stream(&blob_path(digest)).await
    }

    async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> anyhow::Result<Vec<(Digest, AttachmentKind)>> {
        Ok(self
            .referrers
            .get(repo)
            .and_then(|r| r.get(subject))
            .cloned()
            .unwrap_or_default())
    }

    async fn supports_signatures(&self) -> anyhow::Result<bool> {
        Ok(!self.signatures.is_empty())
    }

    async fn atomic_signatures(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> anyhow::Result<Vec<(String, Bytes)>> {
        let mut out = Vec::new();
        for (id, blob) in self
            .signatures
            .get(&(repo.to_string(), digest.clone()))
            .into_iter()
            .flatten()
        {
            out.push((id.clone(), self.archive.verified(blob).await?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entries_name_their_repository_and_tag_every_way_layouts_do() {
        let named = |annotations: serde_json::Value, fallback: &str| {
            name_of(&json!({ "annotations": annotations }), fallback)
        };
        assert_eq!(
            named(json!({REF_NAME: "team/app:v1", REPOSITORY: "team/app"}), "").unwrap(),
            ("team/app".into(), Some("v1".into()))
        );
        assert_eq!(
            named(json!({REPOSITORY: "team/app"}), "").unwrap(),
            ("team/app".into(), None)
        );
        assert_eq!(
            named(json!({REF_NAME: "team/app:v1"}), "").unwrap(),
            ("team/app".into(), Some("v1".into()))
        );
        // skopeo's `oci:DIR:v1`: a tag alone, for the repository given.
        assert_eq!(
            named(json!({REF_NAME: "v1"}), "imported/app").unwrap(),
            ("imported/app".into(), Some("v1".into()))
        );
        assert!(named(json!({REF_NAME: "v1"}), "").is_err());
        assert!(named(json!({REF_NAME: "Team/App:v1"}), "").is_err());
        assert!(named(json!({REF_NAME: "team/app:-bad"}), "").is_err());
    }
}
