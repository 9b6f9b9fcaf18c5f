//! `GET /v2/<name>/_signet/tags?n=&last=`: one page of a repository's tags, each with
//! what a person browsing the registry wants beside the name — the digest, media type
//! and size of the manifest it points at, when the tag last moved, and the platforms
//! the image runs on — so a listing needs one request per page instead of one per tag.
//!
//! Pages follow the tags list: lexical order, `n` entries after `last`, and a `Link`
//! header to the next page. `attachments=false` leaves out the tags that only carry
//! attachments (cosign's `.sig`/`.att`/`.sbom`, the referrers fallback), which a person
//! looking for images does not want to page through. `n` defaults to [`DEFAULT_PAGE`] and is capped at
//! [`MAX_PAGE`]: every entry carries a manifest read, unlike a bare tag name.
//!
//! `signatures=true` adds each tag's signature status at a glance (the policy's
//! evaluation, whatever the mode, kept while the store is unchanged): verified and by
//! which roots, invalid, unverified, unsigned, or an attachment; for an index, how many
//! of its platforms a valid signature covers. Such a page holds at most
//! [`MAX_PAGE_WITH_SIGNATURES`] entries.

use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::Value;
use signet_storage::attachments::{AttachmentKind, AttachmentTag, VerdictKind};
use signet_storage::manifest::{
    buildkit_attestations, kind_of_media_type, parse_manifest, ManifestKind,
};
use signet_storage::meta::{Page, TagDetail};
use signet_storage::{BlobStore, Digest, Reference, RepoName};

use crate::error::{ApiError, ApiResult};
use crate::request::{resource, Area, Kind, Target};
use crate::state::AppState;
use crate::verify::policy::{self, Evaluation};
use crate::verify::Verdict;

/// Entries of a page when the request names no `n`.
pub const DEFAULT_PAGE: u32 = 100;
/// Most entries one page holds, whatever `n` asks for.
pub const MAX_PAGE: u32 = 1000;
/// Most entries a page holds with `signatures=true`: each costs a policy evaluation (and
/// an index one per platform), which may verify signatures the first time.
pub const MAX_PAGE_WITH_SIGNATURES: u32 = 100;
/// Image configs larger than this are not read for their platform.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Config reads in flight for one page.
const CONFIG_READS: usize = 8;

/// Config media types that carry `os` and `architecture`.
const IMAGE_CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource(Kind::SignetTags).on(Method::GET, list));
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Serialize)]
struct Entry {
    tag: String,
    digest: String,
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    size: u64,
    /// RFC 3339, UTC.
    #[serde(rename = "pushedAt")]
    pushed_at: String,
    platforms: Vec<Platform>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<SignatureStatus>,
}

/// A tag's signature status, from the policy's evaluation of its manifest.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct SignatureStatus {
    /// `verified`, `invalid`, `unverified` (signed, but no root could say), `unsigned`,
    /// or `attachment` (a signature, attestation or SBOM itself).
    status: &'static str,
    /// The roots of the valid signatures (own, or an index's where inherited).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roots: Vec<String>,
    /// For an index: its platforms, and how many of them a valid signature covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    platforms: Option<PlatformsCovered>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
struct PlatformsCovered {
    covered: usize,
    total: usize,
}

async fn list(state: web::Data<AppState>, target: Target) -> ApiResult<HttpResponse> {
    let (
        repo,
        Area::SignetTags {
            page: asked,
            with_attachments,
            with_signatures,
        },
    ) = target.into_repository()?
    else {
        return Err(ApiError::RouteNotFound);
    };
    let cap = if with_signatures {
        MAX_PAGE_WITH_SIGNATURES
    } else {
        MAX_PAGE
    };
    let n = asked.n.unwrap_or(DEFAULT_PAGE).min(cap);
    let last = asked.last;
    let mut details = if n == 0 {
        // Only whether the repository exists.
        state
            .meta
            .repository_exists(&repo)
            .await?
            .then(Vec::new)
            .ok_or(ApiError::NameUnknown)?
    } else {
        // One more than asked, to know whether a next page exists.
        page(&state, &repo, last, n as usize + 1, with_attachments).await?
    };
    let next = details.len() > n as usize;
    details.truncate(n as usize);
    let filter = if with_attachments {
        ""
    } else {
        "&attachments=false"
    };
    let signatures = if with_signatures {
        "&signatures=true"
    } else {
        ""
    };
    let link = next.then(|| details.last()).flatten().map(|d| {
        format!(
            "</v2/{repo}/_signet/tags?n={n}{filter}{signatures}&last={}>; rel=\"next\"",
            d.tag
        )
    });

    let entries: Vec<Entry> = futures::stream::iter(details)
        .map(|d| entry(&state, &repo, d, with_signatures))
        .buffered(CONFIG_READS)
        .try_collect()
        .await?;
    let mut response = HttpResponse::Ok();
    if let Some(link) = link {
        response.insert_header((header::LINK, link));
    }
    Ok(response.json(serde_json::json!({ "name": repo.as_str(), "tags": entries })))
}

/// Up to `want` tags after `last`; without `with_attachments`, the tags that name a
/// subject (`sha256-<hex>.sig`, `.att`, `.sbom`, the referrers fallback `sha256-<hex>`)
/// are skipped, reading on in batches until `want` others are found or the tags end.
async fn page(
    state: &AppState,
    repo: &RepoName,
    mut last: Option<String>,
    want: usize,
    with_attachments: bool,
) -> ApiResult<Vec<TagDetail>> {
    let mut out: Vec<TagDetail> = Vec::with_capacity(want);
    loop {
        let limit = if with_attachments {
            want - out.len()
        } else {
            // Signed images have about as many attachment tags as tags: read ahead.
            (2 * (want - out.len())).max(64)
        };
        let batch = state
            .meta
            .list_tag_details(
                repo,
                Page {
                    last: last.as_deref(),
                    limit: Some(limit as u32),
                },
            )
            .await?
            .ok_or(ApiError::NameUnknown)?;
        let done = batch.len() < limit;
        last = batch.last().map(|d| d.tag.clone());
        out.extend(
            batch
                .into_iter()
                .filter(|d| with_attachments || AttachmentTag::parse(&d.tag).is_none()),
        );
        if done || out.len() >= want {
            out.truncate(want);
            return Ok(out);
        }
    }
}

async fn entry(
    state: &AppState,
    repo: &RepoName,
    d: TagDetail,
    with_signatures: bool,
) -> ApiResult<Entry> {
    let manifest: Value = serde_json::from_slice(&d.content).unwrap_or(Value::Null);
    let kind = kind_of_media_type(&d.media_type);
    let index = kind == Some(ManifestKind::Index);
    let platforms = match kind {
        Some(ManifestKind::Index) => index_platforms(&manifest),
        Some(ManifestKind::Image) => image_platform(&state.blobs, &manifest)
            .await
            .into_iter()
            .collect(),
        None => Vec::new(),
    };
    let signature = if with_signatures {
        signature_status(state, repo, &d.digest, index.then_some(&d.content[..])).await?
    } else {
        None
    };
    let artifact_type = manifest["artifactType"]
        .as_str()
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    Ok(Entry {
        tag: d.tag,
        digest: d.digest.to_string(),
        media_type: d.media_type,
        artifact_type,
        size: d.size,
        pushed_at: chrono::DateTime::from_timestamp(d.pushed_at, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        platforms,
        signature,
    })
}

/// The signature status of the manifest `digest`; `index` is its bytes when it is an
/// index, whose platforms are counted. `None` when it is gone meanwhile.
async fn signature_status(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    index: Option<&[u8]>,
) -> ApiResult<Option<SignatureStatus>> {
    let judge = |d: Digest| async move {
        policy::evaluate(state, repo, &Reference::Digest(d))
            .await
            .map_err(|e| ApiError::Internal(format!("signature status: {e:#}")))
    };
    let Some(evaluation) = judge(digest.clone()).await? else {
        return Ok(None);
    };
    let mut status = status_of(&evaluation);
    if let Some(content) = index.filter(|_| !evaluation.is_attachment) {
        let Ok(parsed) = parse_manifest(content, None) else {
            return Ok(Some(status));
        };
        let attestations: Vec<Digest> = buildkit_attestations(&parsed)
            .into_iter()
            .map(|(entry, _)| entry)
            .collect();
        let (mut covered, mut total) = (0, 0);
        for child in parsed.children {
            if attestations.contains(&child.digest) {
                continue;
            }
            total += 1;
            if judge(child.digest).await?.is_some_and(|e| e.signed) {
                covered += 1;
            }
        }
        status.platforms = Some(PlatformsCovered { covered, total });
    }
    Ok(Some(status))
}

/// What an evaluation says of the manifest's signatures: those it counts (its own,
/// and its indexes' where inherited).
fn status_of(e: &Evaluation) -> SignatureStatus {
    let mut status = SignatureStatus {
        status: "unsigned",
        roots: Vec::new(),
        platforms: None,
    };
    if e.is_attachment {
        status.status = "attachment";
        return status;
    }
    let verdicts: Vec<Option<&Verdict>> = e
        .evidence
        .iter()
        .filter(|x| x.kind == AttachmentKind::Signature && (!x.via_index || e.inherit_from_index))
        .map(|x| x.verification.as_ref())
        .collect();
    for v in verdicts.iter().flatten().filter(|v| v.is_valid()) {
        if let Some(root) = &v.root {
            if !status.roots.contains(root) {
                status.roots.push(root.clone());
            }
        }
    }
    status.status = if verdicts.iter().flatten().any(|v| v.is_valid()) {
        "verified"
    } else if verdicts
        .iter()
        .flatten()
        .any(|v| v.verdict == VerdictKind::Invalid)
    {
        "invalid"
    } else if !verdicts.is_empty() {
        "unverified"
    } else {
        "unsigned"
    };
    status
}

fn platform_of(value: &Value) -> Option<Platform> {
    let os = value["os"].as_str().unwrap_or_default();
    let architecture = value["architecture"].as_str().unwrap_or_default();
    // Build attestation manifests sit in indexes as `unknown/unknown`; cosign configs
    // carry empty strings. Neither is a platform anything runs on.
    if os.is_empty() || architecture.is_empty() || os == "unknown" || architecture == "unknown" {
        return None;
    }
    Some(Platform {
        os: os.to_string(),
        architecture: architecture.to_string(),
        variant: value["variant"]
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    })
}

/// The platforms an index's children declare, in the index's order, without repeats.
pub fn index_platforms(index: &Value) -> Vec<Platform> {
    let mut out: Vec<Platform> = Vec::new();
    for child in index["manifests"].as_array().into_iter().flatten() {
        if let Some(p) = platform_of(&child["platform"]) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// An image's platform, from its config blob. Artifacts, oversized or unreadable
/// configs have none: the listing shows what it knows and never fails on one entry.
async fn image_platform(blobs: &BlobStore, manifest: &Value) -> Option<Platform> {
    let config = &manifest["config"];
    let media_type = config["mediaType"].as_str()?;
    if !IMAGE_CONFIG_TYPES.contains(&media_type) {
        return None;
    }
    if config["size"].as_u64().is_none_or(|s| s > MAX_CONFIG_BYTES) {
        return None;
    }
    let digest: Digest = config["digest"].as_str()?.parse().ok()?;
    let body = blobs.get(&digest, None).await.ok()?;
    if body.size > MAX_CONFIG_BYTES {
        return None;
    }
    let chunks: Vec<bytes::Bytes> = body.stream.try_collect().await.ok()?;
    let value: Value = serde_json::from_slice(&chunks.concat()).ok()?;
    platform_of(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn index_platforms_skip_attestation_entries_and_repeats() {
        let index = json!({"manifests": [
            {"platform": {"os": "linux", "architecture": "amd64"}},
            {"platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"platform": {"os": "unknown", "architecture": "unknown"}},
            {"platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "no platform"},
        ]});
        assert_eq!(
            index_platforms(&index),
            vec![
                Platform {
                    os: "linux".into(),
                    architecture: "amd64".into(),
                    variant: None
                },
                Platform {
                    os: "linux".into(),
                    architecture: "arm64".into(),
                    variant: Some("v8".into())
                },
            ]
        );
        assert!(index_platforms(&json!({})).is_empty());
    }

    fn evaluation(signatures: &[(bool, Option<Verdict>)], inherit: bool) -> Evaluation {
        let d = Digest::sha256_of(b"image");
        Evaluation {
            repository: "a".into(),
            digest: d.clone(),
            media_type: signet_storage::manifest::OCI_MANIFEST.into(),
            is_attachment: false,
            inherit_from_index: inherit,
            covered_by: Vec::new(),
            signed: false,
            passes: false,
            missing: Vec::new(),
            evidence: signatures
                .iter()
                .enumerate()
                .map(|(i, (via_index, v))| policy::Evidence {
                    subject: d.clone(),
                    via_index: *via_index,
                    attachment: Digest::sha256_of(&[i as u8]),
                    kind: AttachmentKind::Signature,
                    format: signet_storage::attachments::AttachmentFormat::Cosign,
                    verification: v.clone(),
                    predicate_types: Vec::new(),
                    carried_by: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_tag_status_names_the_roots_of_the_signatures_that_count() {
        let valid = |root: &str| Some(Verdict::valid(root, None));
        let bad = Some(Verdict::invalid("bad signature"));
        let untrusted = Some(Verdict::no_trust_root());
        let status =
            |sigs: &[(bool, Option<Verdict>)], inherit| status_of(&evaluation(sigs, inherit));

        let s = status(
            &[
                (false, valid("release")),
                (true, valid("ci")),
                (false, bad.clone()),
            ],
            true,
        );
        assert_eq!(
            (s.status, s.roots),
            ("verified", vec!["release".to_string(), "ci".to_string()])
        );
        // The index's signature does not count without inheritance.
        let s = status(&[(true, valid("ci")), (false, bad.clone())], false);
        assert_eq!((s.status, s.roots.len()), ("invalid", 0));
        assert_eq!(status(&[(false, untrusted)], true).status, "unverified");
        assert_eq!(status(&[], true).status, "unsigned");
        let mut attachment = evaluation(&[], true);
        attachment.is_attachment = true;
        assert_eq!(status_of(&attachment).status, "attachment");
    }

    #[test]
    fn cosign_configs_have_no_platform() {
        assert_eq!(platform_of(&json!({"os": "", "architecture": ""})), None);
        assert_eq!(
            platform_of(&json!({"os": "linux", "architecture": "s390x"})),
            Some(Platform {
                os: "linux".into(),
                architecture: "s390x".into(),
                variant: None
            })
        );
    }
}
