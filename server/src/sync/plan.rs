//! What a job selects: repositories (names or catalog patterns), tags (include and
//! exclude expressions; attachment tags are never "selected", they follow their
//! subject), platforms, and where each repository lands.

use anyhow::{anyhow, Context};
use regex::Regex;
use signet_oci::RepoPattern;
use signet_storage::attachments::{AttachmentKind, AttachmentTag};
use signet_storage::manifest::{buildkit_attestations, Descriptor, ParsedManifest, Platform};

use super::job::SyncJob;

/// A job's selection, compiled.
pub struct Plan {
    tags_include: Vec<Regex>,
    tags_exclude: Vec<Regex>,
    tags_latest: usize,
    platforms: Vec<PlatformFilter>,
    /// Attachment kinds copied; `None`: every kind.
    attachment_kinds: Option<Vec<AttachmentKind>>,
    atomic_signatures: bool,
    repo_patterns: Vec<RepoPattern>,
    repo_names: Vec<String>,
    prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PlatformFilter {
    os: String,
    arch: String,
    variant: Option<String>,
}

fn whole(expr: &str) -> anyhow::Result<Regex> {
    Regex::new(&format!("^(?:{expr})$")).with_context(|| format!("regular expression {expr:?}"))
}

impl Plan {
    pub fn new(job: &SyncJob) -> anyhow::Result<Plan> {
        let platforms = job
            .platforms
            .iter()
            .map(|p| {
                let parts: Vec<&str> = p.split('/').collect();
                match parts.as_slice() {
                    [os, arch] => Ok(PlatformFilter {
                        os: os.to_string(),
                        arch: arch.to_string(),
                        variant: None,
                    }),
                    [os, arch, variant] => Ok(PlatformFilter {
                        os: os.to_string(),
                        arch: arch.to_string(),
                        variant: Some(variant.to_string()),
                    }),
                    _ => Err(anyhow!("platform {p:?} is not os/arch[/variant]")),
                }
            })
            .collect::<anyhow::Result<_>>()?;
        let mut attachment_kinds = Vec::new();
        let mut atomic_signatures = job.attachments.is_empty();
        for name in &job.attachments {
            if name == "atomic" {
                atomic_signatures = true;
            } else {
                attachment_kinds.push(name.parse::<AttachmentKind>().map_err(|_| {
                    anyhow!(
                        "attachment kind {name:?}: one of signature, attestation, sbom, other, atomic"
                    )
                })?);
            }
        }
        let (patterns, names): (Vec<&String>, Vec<&String>) = job
            .repositories
            .iter()
            .partition(|r| signet_oci::pattern::is_pattern(r));
        if job.repositories.is_empty() {
            return Err(anyhow!("job {}: no repositories", job.name));
        }
        Ok(Plan {
            tags_include: job
                .tags_include
                .iter()
                .map(|e| whole(e))
                .collect::<Result<_, _>>()?,
            tags_exclude: job
                .tags_exclude
                .iter()
                .map(|e| whole(e))
                .collect::<Result<_, _>>()?,
            tags_latest: job.tags_latest,
            platforms,
            attachment_kinds: (!job.attachments.is_empty()).then_some(attachment_kinds),
            atomic_signatures,
            repo_patterns: patterns
                .into_iter()
                .map(|p| RepoPattern::new(p))
                .collect::<Result<_, _>>()?,
            repo_names: names.into_iter().cloned().collect(),
            prefix: job.destination_prefix.trim_matches('/').to_string(),
        })
    }

    /// Whether the catalog is needed to know the repositories.
    pub fn needs_catalog(&self) -> bool {
        !self.repo_patterns.is_empty()
    }

    /// The upstream repositories selected, given the catalog when patterns need it.
    pub fn repositories(&self, catalog: &[String]) -> Vec<String> {
        let mut out = self.repo_names.clone();
        out.extend(
            catalog
                .iter()
                .filter(|r| self.repo_patterns.iter().any(|p| p.matches(r)))
                .cloned(),
        );
        out.sort();
        out.dedup();
        out
    }

    /// The mirror's name for an upstream repository.
    pub fn destination(&self, upstream_repo: &str) -> String {
        if self.prefix.is_empty() {
            upstream_repo.to_string()
        } else {
            format!("{}/{upstream_repo}", self.prefix)
        }
    }

    /// A tag the job mirrors (attachment tags never are: they follow their subject).
    pub fn selects_tag(&self, tag: &str) -> bool {
        AttachmentTag::parse(tag).is_none()
            && (self.tags_include.is_empty() || self.tags_include.iter().any(|r| r.is_match(tag)))
            && !self.tags_exclude.iter().any(|r| r.is_match(tag))
    }

    /// The tags of one upstream repository the job mirrors: those `selects_tag` takes,
    /// then, with `tags_latest = N`, only the N highest semantic versions among them
    /// (tags that are not versions pass through). Upstream order is kept.
    pub fn select_tags<'t>(&self, tags: &'t [String]) -> Vec<&'t String> {
        let selected: Vec<&String> = tags.iter().filter(|t| self.selects_tag(t)).collect();
        if self.tags_latest == 0 {
            return selected;
        }
        let mut versions: Vec<(semver::Version, &String)> = selected
            .iter()
            .filter_map(|t| as_version(t).map(|v| (v, *t)))
            .collect();
        // Highest first; equal versions spelled differently (`1.2` and `v1.2.0`) keep a
        // stable order by name so reruns pick the same tags.
        versions.sort_by(|(a, ta), (b, tb)| b.cmp(a).then_with(|| ta.cmp(tb)));
        let kept: std::collections::HashSet<&String> = versions
            .into_iter()
            .take(self.tags_latest)
            .map(|(_, t)| t)
            .collect();
        selected
            .into_iter()
            .filter(|t| as_version(t).is_none() || kept.contains(t))
            .collect()
    }

    /// Whether attachments of `kind` (cosign tags, OCI referrers) are copied.
    pub fn copies_attachment(&self, kind: AttachmentKind) -> bool {
        self.attachment_kinds
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&kind))
    }

    /// Whether the referrers fallback tag is copied as upstream wrote it: only when
    /// every kind is, since it lists referrers of all kinds (with a selection, its
    /// selected entries still come through the referrers listing).
    pub fn copies_fallback_tag(&self) -> bool {
        AttachmentKind::ALL
            .into_iter()
            .all(|k| self.copies_attachment(k))
    }

    /// Whether simple-signing signatures (the signatures extension) are copied.
    pub fn copies_atomic_signatures(&self) -> bool {
        self.atomic_signatures
    }

    /// An index child the job mirrors: every child without a platform, and with a
    /// platform filter only the platforms it lists (a filter without a variant takes
    /// every variant).
    pub fn selects_platform(&self, platform: Option<&Platform>) -> bool {
        let Some(p) = platform else { return true };
        self.platforms.is_empty()
            || self.platforms.iter().any(|f| {
                f.os == p.os
                    && f.arch == p.architecture
                    && f.variant
                        .as_ref()
                        .is_none_or(|v| p.variant.as_ref() == Some(v))
            })
    }

    /// An entry of `index` the job mirrors: by its platform, except BuildKit's
    /// attestation manifests (`unknown/unknown`), which go with the entry they attest.
    pub fn selects_entry(&self, index: &ParsedManifest, entry: &Descriptor) -> bool {
        let attested = buildkit_attestations(index)
            .into_iter()
            .find(|(attestation, _)| attestation == &entry.digest)
            .and_then(|(_, subject)| index.children.iter().find(|c| c.digest == subject));
        match attested {
            Some(subject) => self.selects_platform(subject.platform.as_ref()),
            None => self.selects_platform(entry.platform.as_ref()),
        }
    }
}

/// A tag read as a semantic version: an optional `v`, then `MAJOR[.MINOR[.PATCH]]`
/// (missing parts are zero, as image tags such as `1.27` mean), then optional
/// `-prerelease` and `+build` parts.
fn as_version(tag: &str) -> Option<semver::Version> {
    let text = tag.strip_prefix('v').unwrap_or(tag);
    let core_end = text.find(['-', '+']).unwrap_or(text.len());
    let (core, rest) = text.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut full = parts.join(".");
    for _ in parts.len()..3 {
        full.push_str(".0");
    }
    semver::Version::parse(&format!("{full}{rest}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(f: impl FnOnce(&mut SyncJob)) -> Plan {
        let mut j = SyncJob {
            name: "t".into(),
            upstream: "http://127.0.0.1:1".into(),
            repositories: vec!["a/b".into(), "lib/*".into()],
            ..Default::default()
        };
        f(&mut j);
        Plan::new(&j).unwrap()
    }

    fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn repositories_by_name_and_pattern() {
        let plan = job(|_| {});
        let catalog = ["lib/x".to_string(), "lib/x/y".into(), "other".into()];
        assert_eq!(plan.repositories(&catalog), ["a/b", "lib/x"]);
        let deep = job(|j| j.repositories = vec!["lib/**".into()]);
        assert_eq!(deep.repositories(&catalog), ["lib/x", "lib/x/y"]);
        let prefixed = job(|j| j.destination_prefix = "/mirror/".into());
        assert_eq!(prefixed.destination("a/b"), "mirror/a/b");
    }

    #[test]
    fn tags_include_exclude_and_attachments() {
        let plan = job(|j| {
            j.tags_include = vec![r"v\d+.*".into(), "latest".into()];
            j.tags_exclude = vec![".*-rc".into()];
        });
        assert!(plan.selects_tag("v1.2"));
        assert!(plan.selects_tag("latest"));
        assert!(!plan.selects_tag("latest2"));
        assert!(!plan.selects_tag("v2-rc"));
        let all = job(|_| {});
        let hex = "a".repeat(64);
        assert!(all.selects_tag("anything"));
        assert!(!all.selects_tag(&format!("sha256-{hex}.sig")));
        assert!(!all.selects_tag(&format!("sha256-{hex}")));
    }

    #[test]
    fn latest_n_semantic_versions() {
        let plan = job(|j| {
            j.tags_latest = 2;
            j.tags_exclude = vec!["old".into()];
        });
        let tags: Vec<String> = [
            "1.9.0",
            "v1.10.0",
            "latest",
            "1.10.0-rc.1",
            "1.2",
            "old",
            "2",
            "not-a.version",
        ]
        .map(String::from)
        .to_vec();
        let picked: Vec<&str> = plan
            .select_tags(&tags)
            .into_iter()
            .map(|t| t.as_str())
            .collect();
        // 2 (= 2.0.0) and v1.10.0 are the highest; 1.10.0-rc.1 sorts below 1.10.0.
        assert_eq!(picked, ["v1.10.0", "latest", "2", "not-a.version"]);
        let all = job(|_| {});
        assert_eq!(all.select_tags(&tags).len(), tags.len());
        assert!(as_version("1.2.3.4").is_none());
        assert!(as_version("v").is_none());
        assert!(
            as_version("01.2.3").is_none(),
            "leading zeros are not semver"
        );
        assert_eq!(as_version("1.27").unwrap(), semver::Version::new(1, 27, 0));
    }

    #[test]
    fn attachment_selection() {
        let all = job(|_| {});
        assert!(AttachmentKind::ALL
            .iter()
            .all(|k| all.copies_attachment(*k)));
        assert!(all.copies_fallback_tag() && all.copies_atomic_signatures());
        let sigs = job(|j| j.attachments = vec!["signature".into(), "atomic".into()]);
        assert!(sigs.copies_attachment(AttachmentKind::Signature));
        assert!(!sigs.copies_attachment(AttachmentKind::Sbom));
        assert!(!sigs.copies_fallback_tag());
        assert!(sigs.copies_atomic_signatures());
        let sboms = job(|j| j.attachments = vec!["sbom".into()]);
        assert!(!sboms.copies_atomic_signatures());
        assert!(Plan::new(&SyncJob {
            repositories: vec!["x".into()],
            attachments: vec!["signatures".into()],
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn platforms() {
        let all = job(|_| {});
        assert!(all.selects_platform(Some(&platform("linux", "s390x", None))));
        let some = job(|j| j.platforms = vec!["linux/amd64".into(), "linux/arm/v7".into()]);
        assert!(some.selects_platform(None));
        assert!(some.selects_platform(Some(&platform("linux", "amd64", None))));
        assert!(some.selects_platform(Some(&platform("linux", "amd64", Some("v2")))));
        assert!(!some.selects_platform(Some(&platform("linux", "arm64", None))));
        assert!(some.selects_platform(Some(&platform("linux", "arm", Some("v7")))));
        assert!(!some.selects_platform(Some(&platform("linux", "arm", Some("v6")))));
        assert!(Plan::new(&SyncJob {
            repositories: vec!["x".into()],
            platforms: vec!["linux".into()],
            ..Default::default()
        })
        .is_err());
    }
}
