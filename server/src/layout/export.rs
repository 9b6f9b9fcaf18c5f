//! `signet export`: images, every platform and every attachment, into a layout.
//!
//! For each selected manifest: its blobs, its children (each platform manifest), then
//! everything attached to any of them, transitively: cosign tags and referrers
//! fallback tags (entries named by their tag), OCI referrers (entries of the
//! repository), atomic signatures (`signet-signatures.json`). Each blob is written once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};
use signet_storage::attachments::AttachmentTag;
use signet_storage::manifest::parse_manifest;
use signet_storage::{Digest, Reference, RepoName};

use super::archive::Archive;
use super::holdings::Holdings;
use super::sink::Sink;
use super::{blob_path, AtomicEntry, Location, KIND, REF_NAME, REPOSITORY, SIGNATURES_FILE};

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    /// Entries of index.json: tags, referrers, manifests selected by digest.
    pub entries: usize,
    pub manifests: usize,
    /// Blobs written (those already in a folder layout are not counted).
    pub blobs: usize,
    pub bytes: u64,
    pub atomic_signatures: usize,
    /// Blobs left out because the previous export (`--since`) holds them.
    pub blobs_left_out: usize,
}

/// One selection on the command line: `repo`, `repo:tag` or `repo@digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub repo: RepoName,
    pub reference: Option<Reference>,
}

impl Selection {
    pub fn parse(text: &str) -> anyhow::Result<Selection> {
        let (repo, reference) = if let Some((repo, digest)) = text.split_once('@') {
            (
                repo,
                Some(Reference::Digest(
                    digest.parse().map_err(|e| anyhow!("{text}: {e}"))?,
                )),
            )
        } else if let Some((repo, tag)) = text.rsplit_once(':') {
            (
                repo,
                Some(Reference::Tag(
                    tag.parse().map_err(|e| anyhow!("{text}: {e}"))?,
                )),
            )
        } else {
            (text, None)
        };
        Ok(Selection {
            repo: repo.parse().map_err(|e| anyhow!("{text}: {e}"))?,
            reference,
        })
    }
}

/// The export in progress.
struct Export<'a> {
    from: &'a dyn Holdings,
    sink: Sink,
    report: ExportReport,
    /// index.json's entries, keyed so each is listed once.
    entries: BTreeMap<(String, String, String), Value>,
    /// Manifests written, per repository, with what index.json says of them.
    written: HashMap<(String, Digest), Described>,
    signatures: Vec<AtomicEntry>,
    /// An earlier export: blobs it holds are left out (manifests never are).
    previous: Option<&'a Archive>,
    progress: &'a (dyn Fn(&ExportReport) + Sync),
}

/// Writes the selected images with their attachments to `to`.
pub async fn export(
    from: &dyn Holdings,
    selections: &[Selection],
    to: &Location,
    previous: Option<&Archive>,
    progress: &(dyn Fn(&ExportReport) + Sync),
) -> anyhow::Result<ExportReport> {
    let mut export = Export {
        from,
        sink: Sink::create(to).await?,
        report: ExportReport::default(),
        entries: BTreeMap::new(),
        written: HashMap::new(),
        signatures: Vec::new(),
        previous,
        progress,
    };
    for selection in selections {
        export.selection(selection).await?;
    }
    let Export {
        sink,
        mut report,
        entries,
        signatures,
        ..
    } = export;
    let mut sink = sink;
    if !signatures.is_empty() {
        sink.file(
            SIGNATURES_FILE,
            Bytes::from(serde_json::to_vec_pretty(&signatures)?),
        )
        .await?;
    }
    report.entries = entries.len();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries.into_values().collect::<Vec<_>>(),
    });
    sink.finish(Bytes::from(serde_json::to_vec_pretty(&index)?))
        .await?;
    Ok(report)
}

impl Export<'_> {
    async fn selection(&mut self, selection: &Selection) -> anyhow::Result<()> {
        let repo = &selection.repo;
        let attachment_tags = self.attachment_tags(repo).await?;
        let roots: Vec<(Option<String>, Digest)> = match &selection.reference {
            Some(Reference::Tag(tag)) => vec![(
                Some(tag.to_string()),
                self.from.resolve(repo, tag.as_str()).await?,
            )],
            Some(Reference::Digest(d)) => vec![(None, d.clone())],
            None => {
                let mut roots = Vec::new();
                for tag in self.from.tags(repo).await? {
                    if AttachmentTag::parse(&tag).is_none() {
                        let digest = self.from.resolve(repo, &tag).await?;
                        roots.push((Some(tag), digest));
                    }
                }
                if roots.is_empty() {
                    bail!("{repo}: no tags to export");
                }
                roots
            }
        };
        // Manifests whose attachments are yet to be looked at.
        let mut queue: VecDeque<Digest> = VecDeque::new();
        for (tag, digest) in roots {
            let described = self.manifest_tree(repo, &digest, &mut queue).await?;
            let kind = image_kind(&described.media_type);
            self.entry(repo, tag.as_deref(), &digest, &described, Some(kind))
                .await?;
        }
        let mut looked: HashSet<Digest> = HashSet::new();
        while let Some(subject) = queue.pop_front() {
            if !looked.insert(subject.clone()) {
                continue;
            }
            // Cosign tags and referrers fallback tags naming it.
            for (tag, target) in attachment_tags.get(&subject).into_iter().flatten() {
                let described = self.manifest_tree(repo, target, &mut queue).await?;
                self.entry(repo, Some(tag), target, &described, tag_kind(tag))
                    .await?;
            }
            // OCI referrers.
            for referrer in self.from.referrers(repo, &subject).await? {
                let described = self.manifest_tree(repo, &referrer, &mut queue).await?;
                self.entry(repo, None, &referrer, &described, None).await?;
            }
            // Atomic signatures.
            for (id, content) in self.from.atomic_signatures(repo, &subject).await? {
                let digest = Digest::sha256_of(&content);
                let size = content.len() as u64;
                if !self.sink.has_blob(&digest, size).await {
                    self.sink
                        .blob(&digest, size, futures::stream::iter([Ok(content)]))
                        .await?;
                }
                self.signatures.push(AtomicEntry {
                    repository: repo.to_string(),
                    manifest: subject.clone(),
                    id,
                    digest,
                });
                self.report.atomic_signatures += 1;
            }
        }
        Ok(())
    }

    /// The attachment tags of `repo` by the subject they name: (tag, manifest).
    async fn attachment_tags(
        &self,
        repo: &RepoName,
    ) -> anyhow::Result<BTreeMap<Digest, Vec<(String, Digest)>>> {
        let mut by_subject: BTreeMap<Digest, Vec<(String, Digest)>> = BTreeMap::new();
        for tag in self.from.tags(repo).await? {
            if let Some(parsed) = AttachmentTag::parse(&tag) {
                let target = self.from.resolve(repo, &tag).await?;
                by_subject
                    .entry(parsed.subject().clone())
                    .or_default()
                    .push((tag, target));
            }
        }
        Ok(by_subject)
    }

    /// Writes a manifest, its blobs and its children (recursively), each once (and
    /// read once); each of them is queued for its attachments. The root's media type
    /// and size.
    async fn manifest_tree(
        &mut self,
        repo: &RepoName,
        root: &Digest,
        queue: &mut VecDeque<Digest>,
    ) -> anyhow::Result<Described> {
        let mut described_root = None;
        let mut pending = vec![root.clone()];
        while let Some(digest) = pending.pop() {
            queue.push_back(digest.clone());
            let key = (repo.to_string(), digest.clone());
            if let Some(known) = self.written.get(&key) {
                described_root.get_or_insert_with(|| known.clone());
                continue;
            }
            let (content, media_type) = self.from.manifest(repo, &digest).await?;
            let parsed = parse_manifest(&content, Some(&media_type))
                .map_err(|e| anyhow!("{repo}@{digest}: {e}"))?;
            let blobs: BTreeMap<Digest, u64> = parsed
                .config
                .iter()
                .chain(&parsed.layers)
                .filter(|d| d.urls.is_empty())
                .map(|d| (d.digest.clone(), d.size))
                .collect();
            for (blob, size) in blobs {
                self.blob(repo, &blob, size).await?;
            }
            pending.extend(parsed.children.iter().map(|c| c.digest.clone()));
            let size = content.len() as u64;
            if !self.sink.has_blob(&digest, size).await {
                self.sink
                    .blob(&digest, size, futures::stream::iter([Ok(content)]))
                    .await?;
            }
            let described = Described { media_type, size };
            described_root.get_or_insert_with(|| described.clone());
            self.written.insert(key, described);
            self.report.manifests += 1;
            (self.progress)(&self.report);
        }
        described_root.ok_or_else(|| anyhow!("{repo}@{root}: nothing written"))
    }

    /// Copies a blob of `size` bytes, unless the layout (or the previous one) has it.
    async fn blob(&mut self, repo: &RepoName, digest: &Digest, size: u64) -> anyhow::Result<()> {
        if let Some(previous) = self.previous {
            if previous.size(&blob_path(digest)).await?.is_some() {
                self.report.blobs_left_out += 1;
                return Ok(());
            }
        }
        if self.sink.has_blob(digest, size).await {
            return Ok(());
        }
        let stream = self.from.blob(repo, digest, size).await?;
        self.sink.blob(digest, size, stream).await?;
        self.report.blobs += 1;
        self.report.bytes += size;
        (self.progress)(&self.report);
        Ok(())
    }

    /// Lists a manifest in index.json: by `repo:tag`, or (no tag) by its repository;
    /// `kind` is cosign save's annotation.
    async fn entry(
        &mut self,
        repo: &RepoName,
        tag: Option<&str>,
        digest: &Digest,
        described: &Described,
        kind: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut annotations = Map::new();
        annotations.insert(REPOSITORY.into(), json!(repo.as_str()));
        if let Some(tag) = tag {
            annotations.insert(REF_NAME.into(), json!(format!("{repo}:{tag}")));
        }
        if let Some(kind) = kind {
            annotations.insert(KIND.into(), json!(kind));
        }
        let key = (
            repo.to_string(),
            tag.unwrap_or_default().to_string(),
            digest.to_string(),
        );
        self.entries.insert(
            key,
            json!({
                "mediaType": described.media_type,
                "digest": digest.to_string(),
                "size": described.size,
                "annotations": annotations,
            }),
        );
        Ok(())
    }
}

/// What index.json says of a manifest besides its digest.
#[derive(Debug, Clone)]
struct Described {
    media_type: String,
    size: u64,
}

/// cosign save's `kind` of an image or an index.
fn image_kind(media_type: &str) -> &'static str {
    match media_type {
        "application/vnd.oci.image.index.v1+json"
        | "application/vnd.docker.distribution.manifest.list.v2+json" => {
            "dev.cosignproject.cosign/imageIndex"
        }
        _ => "dev.cosignproject.cosign/image",
    }
}

/// cosign save's `kind` of a signature or attestation tag.
fn tag_kind(tag: &str) -> Option<&'static str> {
    if tag.ends_with(".sig") {
        Some("dev.cosignproject.cosign/sigs")
    } else if tag.ends_with(".att") {
        Some("dev.cosignproject.cosign/atts")
    } else {
        None
    }
}
