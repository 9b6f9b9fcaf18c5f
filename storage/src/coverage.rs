//! Coverage: for one manifest, everything attached to it directly, everything attached
//! to the indexes that list it (so a per-platform digest knows the signatures on its
//! multi-arch index), and, for an index, the same for each child.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::attachments::{AttachmentFormat, AttachmentKind, AttachmentSource};
use crate::digest::Digest;
use crate::error::StorageResult;
use crate::manifest::{buildkit_attestations, parse_manifest, statement_predicate_types, Platform};
use crate::meta::{AttachmentRecord, Manifests};
use crate::names::{Reference, RepoName};

/// How deep attachments of attachments, and indexes of indexes, are followed.
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Attachment {
    pub digest: Digest,
    pub kind: AttachmentKind,
    /// How it arrived: subject | tag | fallback-tag | extension | buildkit.
    pub source: &'static str,
    /// cosign | sigstore-bundle | notation | atomic | in-toto | oci
    pub format: crate::attachments::AttachmentFormat,
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub created: i64,
    /// In-toto statements (a BuildKit attestation manifest): each one's predicate type.
    #[serde(rename = "predicateTypes", skip_serializing_if = "Vec::is_empty")]
    pub predicate_types: Vec<String>,
    /// The image index that carries it, when that is not the attachment itself (a
    /// BuildKit attestation: it counts through the index's signatures).
    #[serde(rename = "carriedBy", skip_serializing_if = "Option::is_none")]
    pub carried_by: Option<Digest>,
    /// Attachments of this attachment (a signature on an SBOM).
    #[serde(skip_serializing_if = "ByKind::is_empty")]
    pub attachments: ByKind,
}

/// Attachments grouped by kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ByKind {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signature: Vec<Attachment>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestation: Vec<Attachment>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sbom: Vec<Attachment>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other: Vec<Attachment>,
}

impl ByKind {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.signature.len() + self.attestation.len() + self.sbom.len() + self.other.len()
    }

    pub fn of(&self, kind: AttachmentKind) -> &[Attachment] {
        match kind {
            AttachmentKind::Signature => &self.signature,
            AttachmentKind::Attestation => &self.attestation,
            AttachmentKind::Sbom => &self.sbom,
            AttachmentKind::Other => &self.other,
        }
    }

    fn push(&mut self, a: Attachment) {
        match a.kind {
            AttachmentKind::Signature => self.signature.push(a),
            AttachmentKind::Attestation => self.attestation.push(a),
            AttachmentKind::Sbom => self.sbom.push(a),
            AttachmentKind::Other => self.other.push(a),
        }
    }
}

/// An index that lists the manifest, directly or through nested indexes.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CoveringIndex {
    pub index: Digest,
    /// From the covering index down to the manifest.
    pub path: Vec<Digest>,
    pub attachments: ByKind,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Coverage {
    pub digest: Digest,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformName>,
    pub attachments: ByKind,
    #[serde(rename = "coveredBy")]
    pub covered_by: Vec<CoveringIndex>,
    /// With `recursive`, for an index: each child's own coverage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Coverage>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlatformName {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl From<&Platform> for PlatformName {
    fn from(p: &Platform) -> Self {
        PlatformName {
            os: p.os.clone(),
            architecture: p.architecture.clone(),
            variant: p.variant.clone(),
        }
    }
}

impl std::fmt::Display for PlatformName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The coverage of `reference` in `repo`; `None` when the manifest does not exist.
pub async fn coverage(
    meta: &dyn Manifests,
    repo: &RepoName,
    reference: &Reference,
    recursive: bool,
) -> StorageResult<Option<Coverage>> {
    let Some(m) = meta.get_manifest(repo, reference).await? else {
        return Ok(None);
    };
    Ok(Some(
        manifest_coverage(meta, repo, m.digest, m.media_type, None, recursive, 0).await?,
    ))
}

fn manifest_coverage<'a>(
    meta: &'a dyn Manifests,
    repo: &'a RepoName,
    digest: Digest,
    media_type: String,
    platform: Option<PlatformName>,
    recursive: bool,
    depth: usize,
) -> futures::future::BoxFuture<'a, StorageResult<Coverage>> {
    Box::pin(async move {
        let attachments = attachments_of(meta, repo, &digest, &mut HashSet::new(), 0).await?;
        let covered_by = covering_indexes(meta, repo, &digest).await?;
        let mut children = Vec::new();
        if recursive && depth < MAX_DEPTH {
            if let Some(stored) = meta
                .get_manifest(repo, &Reference::Digest(digest.clone()))
                .await?
            {
                if let Ok(parsed) = parse_manifest(&stored.content, Some(&stored.media_type)) {
                    // BuildKit's attestation manifests are no platforms: each shows as an
                    // attestation of the entry it names.
                    let attestations: HashSet<Digest> = buildkit_attestations(&parsed)
                        .into_iter()
                        .map(|(entry, _)| entry)
                        .collect();
                    for child in parsed.children {
                        if attestations.contains(&child.digest) {
                            continue;
                        }
                        let platform = child.platform.as_ref().map(PlatformName::from);
                        children.push(
                            manifest_coverage(
                                meta,
                                repo,
                                child.digest,
                                child.media_type,
                                platform,
                                recursive,
                                depth + 1,
                            )
                            .await?,
                        );
                    }
                }
            }
        }
        Ok(Coverage {
            digest,
            media_type,
            platform,
            attachments,
            covered_by,
            children,
        })
    })
}

/// Attachments of `subject`, and theirs, grouped by kind.
fn attachments_of<'a>(
    meta: &'a dyn Manifests,
    repo: &'a RepoName,
    subject: &'a Digest,
    seen: &'a mut HashSet<Digest>,
    depth: usize,
) -> futures::future::BoxFuture<'a, StorageResult<ByKind>> {
    Box::pin(async move {
        let mut by_kind = ByKind::default();
        if depth >= MAX_DEPTH || !seen.insert(subject.clone()) {
            return Ok(by_kind);
        }
        for record in dedupe(meta.list_attachments(repo, subject).await?) {
            let nested = attachments_of(meta, repo, &record.attachment, seen, depth + 1).await?;
            let predicate_types = if record.format == AttachmentFormat::InToto {
                meta.get_manifest(repo, &Reference::Digest(record.attachment.clone()))
                    .await?
                    .map(|m| statement_predicate_types(&m.content))
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let carried_by = (record.carrier != record.attachment
                && record.source == AttachmentSource::Buildkit)
                .then_some(record.carrier);
            by_kind.push(Attachment {
                predicate_types,
                carried_by,
                digest: record.attachment,
                kind: record.kind,
                source: record.source.as_str(),
                format: record.format,
                artifact_type: record.artifact_type,
                media_type: record.media_type,
                size: record.size,
                tag: record.tag,
                created: record.created_at,
                attachments: nested,
            });
        }
        Ok(by_kind)
    })
}

/// One record per attachment: an attachment that arrived two ways (a subject field and
/// a fallback index entry) is reported once, by its subject field.
fn dedupe(records: Vec<AttachmentRecord>) -> Vec<AttachmentRecord> {
    let mut best: BTreeMap<Digest, AttachmentRecord> = BTreeMap::new();
    for r in records {
        match best.get(&r.attachment) {
            Some(existing) if existing.source <= r.source => {}
            _ => {
                best.insert(r.attachment.clone(), r);
            }
        }
    }
    let mut out: Vec<_> = best.into_values().collect();
    out.sort_by(|a, b| (a.created_at, &a.attachment).cmp(&(b.created_at, &b.attachment)));
    out
}

/// Every index that lists `digest`, directly or through nested indexes, with the path.
async fn covering_indexes(
    meta: &dyn Manifests,
    repo: &RepoName,
    digest: &Digest,
) -> StorageResult<Vec<CoveringIndex>> {
    let mut out = Vec::new();
    let mut seen = HashSet::from([digest.clone()]);
    // Breadth-first up the index → child edges; each entry is a path ending at `digest`.
    let mut frontier = vec![vec![digest.clone()]];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for path in &frontier {
            for parent in meta.parents_of(repo, &path[0]).await? {
                if !seen.insert(parent.clone()) {
                    continue;
                }
                let mut longer = vec![parent.clone()];
                longer.extend(path.iter().cloned());
                let attachments =
                    attachments_of(meta, repo, &parent, &mut HashSet::new(), 0).await?;
                out.push(CoveringIndex {
                    index: parent,
                    path: longer.clone(),
                    attachments,
                });
                next.push(longer);
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok(out)
}
