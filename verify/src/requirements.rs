//! Policy requirements beyond "a valid signature from a root covering the repository"
//! (`[[trust.requirements]]`): per repository pattern, signatures from named roots, an
//! attestation of a predicate type signed by named roots, an SBOM. Every requirement
//! whose patterns match the repository applies; evidence counts when it is on the
//! manifest itself or, with `inherit_from_index`, on an index listing it — the same
//! rule as for signatures.
//!
//! ```toml
//! [[trust.requirements]]
//! repositories = ["prod/**"]
//! policy = "enforce"              # optional: raises the policy of these repositories
//! signed_by = ["release"]          # a valid signature from one of these roots
//! sbom = true                      # a cosign .sbom or an SBOM referrer
//! [[trust.requirements.attestations]]
//! predicate_type = "https://slsa.dev/provenance/v1"
//! signed_by = ["ci"]               # empty: any root covering the repository
//! accept_unsigned = false          # true: an unsigned BuildKit statement counts too
//! ```
//!
//! A BuildKit attestation (an unsigned in-toto statement in the image index) counts as
//! signed by the roots whose valid signatures are on the index that carries it: the
//! caller hands it in once per such root, as a valid verdict of that root.

use serde::{Deserialize, Serialize};
use signet_oci::attachments::AttachmentKind;

use signet_oci::RepoPattern;

use crate::trust::PolicyMode;
use crate::Verdict;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RequirementConfig {
    /// Repository patterns (as for roots); empty: every repository.
    pub repositories: Vec<String>,
    /// The policy for these repositories, when stricter than the roots' own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyMode>,
    /// A valid signature from one of these roots is required (empty: any root
    /// covering the repository, the base rule).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signed_by: Vec<String>,
    /// Each listed attestation is required.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationRequirement>,
    /// An SBOM is required: a cosign `.sbom` attachment or an SBOM referrer.
    pub sbom: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AttestationRequirement {
    /// The in-toto statement's `predicateType`, exactly.
    pub predicate_type: String,
    /// The roots one of which must have signed it (empty: any root covering the
    /// repository).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signed_by: Vec<String>,
    /// Evidence without a signature counts too: a BuildKit statement in an index that
    /// nobody signed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept_unsigned: bool,
}

impl RequirementConfig {
    /// One line for `signet trust check`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.signed_by.is_empty() {
            parts.push(format!("signed by {}", self.signed_by.join(" or ")));
        }
        for a in &self.attestations {
            parts.push(attestation_phrase(a));
        }
        if self.sbom {
            parts.push("an SBOM".into());
        }
        let covers = if self.repositories.is_empty() {
            "every repository".to_string()
        } else {
            self.repositories.join(", ")
        };
        let policy = self
            .policy
            .map(|p| format!(", policy {}", p.as_str()))
            .unwrap_or_default();
        format!("requirement for {covers}: {}{policy}", parts.join(", "))
    }
}

fn attestation_phrase(a: &AttestationRequirement) -> String {
    let unsigned = if a.accept_unsigned {
        " (unsigned accepted)"
    } else {
        ""
    };
    if a.signed_by.is_empty() {
        format!("an attestation of {}{unsigned}", a.predicate_type)
    } else {
        format!(
            "an attestation of {} signed by {}{unsigned}",
            a.predicate_type,
            a.signed_by.join(" or ")
        )
    }
}

/// Refuses requirements that could never be met or that name unknown roots.
/// A requirement as loaded: its configuration, and its repository patterns compiled.
#[derive(Debug, Clone)]
pub struct Requirement {
    pub config: RequirementConfig,
    patterns: Vec<RepoPattern>,
}

impl Requirement {
    pub fn covers(&self, repo: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(repo))
    }
}

/// The requirements checked against the declared `roots`, their patterns compiled.
pub fn load(
    requirements: &[RequirementConfig],
    roots: &[&str],
) -> anyhow::Result<Vec<Requirement>> {
    validate(requirements, roots)?;
    requirements
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let patterns = r
                .repositories
                .iter()
                .map(|p| RepoPattern::new(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("[[trust.requirements]] #{}: {e}", i + 1))?;
            Ok(Requirement {
                config: r.clone(),
                patterns,
            })
        })
        .collect()
}

pub fn validate(requirements: &[RequirementConfig], roots: &[&str]) -> anyhow::Result<()> {
    for (i, r) in requirements.iter().enumerate() {
        let which = format!("[[trust.requirements]] #{}", i + 1);
        if r.repositories.iter().any(String::is_empty) {
            anyhow::bail!("{which} has an empty repository pattern");
        }
        if r.signed_by.is_empty() && r.attestations.is_empty() && !r.sbom && r.policy.is_none() {
            anyhow::bail!("{which} requires nothing (signed_by, attestations, sbom or policy)");
        }
        let named = r
            .signed_by
            .iter()
            .chain(r.attestations.iter().flat_map(|a| a.signed_by.iter()));
        for root in named {
            if !roots.contains(&root.as_str()) {
                anyhow::bail!("{which} names trust root {root:?}, which is not declared");
            }
        }
        for a in &r.attestations {
            if a.predicate_type.is_empty() {
                anyhow::bail!("{which} has an attestation without predicate_type");
            }
        }
    }
    Ok(())
}

/// One attachment counted as evidence: its kind and, for signatures and attestations,
/// its verdict (an unsigned statement: [`crate::VerdictKind::Unsigned`] with its
/// predicate type).
pub struct Evidence<'a> {
    pub kind: AttachmentKind,
    pub verdict: Option<&'a Verdict>,
}

/// What the requirements covering a repository find missing in `evidence`, one
/// sentence each; empty when they are all met.
pub fn missing<'a>(
    requirements: impl Iterator<Item = &'a RequirementConfig>,
    evidence: &[Evidence<'_>],
) -> Vec<String> {
    let valid = |kind: AttachmentKind, roots: &[String], predicate: Option<&str>| {
        evidence.iter().any(|e| {
            e.kind == kind
                && e.verdict.is_some_and(|v| {
                    v.is_valid()
                        && (roots.is_empty() || v.root.as_ref().is_some_and(|r| roots.contains(r)))
                        && predicate.is_none_or(|p| v.predicate_type.as_deref() == Some(p))
                })
        })
    };
    let mut out = Vec::new();
    for r in requirements {
        if !r.signed_by.is_empty() && !valid(AttachmentKind::Signature, &r.signed_by, None) {
            out.push(format!(
                "no valid signature from root {}",
                r.signed_by.join(" or ")
            ));
        }
        for a in &r.attestations {
            let unsigned = a.accept_unsigned
                && evidence.iter().any(|e| {
                    e.kind == AttachmentKind::Attestation
                        && e.verdict.is_some_and(|v| {
                            v.verdict == crate::VerdictKind::Unsigned
                                && v.predicate_type.as_deref() == Some(a.predicate_type.as_str())
                        })
                });
            let found = unsigned
                || valid(
                    AttachmentKind::Attestation,
                    &a.signed_by,
                    Some(&a.predicate_type),
                );
            if !found {
                out.push(format!("missing {} (valid)", attestation_phrase(a)));
            }
        }
        if r.sbom && !evidence.iter().any(|e| e.kind == AttachmentKind::Sbom) {
            out.push("no SBOM".into());
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(root: &str, predicate: Option<&str>) -> Verdict {
        Verdict::valid(root, predicate.map(str::to_string))
    }

    #[test]
    fn each_requirement_names_what_is_missing() {
        let req = RequirementConfig {
            repositories: vec!["prod/**".into()],
            signed_by: vec!["release".into()],
            attestations: vec![AttestationRequirement {
                predicate_type: "https://slsa.dev/provenance/v1".into(),
                signed_by: vec!["ci".into()],
                ..Default::default()
            }],
            sbom: true,
            ..Default::default()
        };
        let loaded = load(std::slice::from_ref(&req), &["release", "ci"]).unwrap();
        assert!(loaded[0].covers("prod/app"));
        assert!(!loaded[0].covers("dev/app"));
        let other_sig = valid("dev", None);
        let wrong_predicate = valid("ci", Some("https://spdx.dev/Document"));
        let evidence = [
            Evidence {
                kind: AttachmentKind::Signature,
                verdict: Some(&other_sig),
            },
            Evidence {
                kind: AttachmentKind::Attestation,
                verdict: Some(&wrong_predicate),
            },
        ];
        let missing_now = missing(std::iter::once(&req), &evidence);
        assert_eq!(
            missing_now,
            vec![
                "no valid signature from root release".to_string(),
                "missing an attestation of https://slsa.dev/provenance/v1 signed by ci (valid)"
                    .to_string(),
                "no SBOM".to_string(),
            ]
        );
        let sig = valid("release", None);
        let att = valid("ci", Some("https://slsa.dev/provenance/v1"));
        let evidence = [
            Evidence {
                kind: AttachmentKind::Signature,
                verdict: Some(&sig),
            },
            Evidence {
                kind: AttachmentKind::Attestation,
                verdict: Some(&att),
            },
            Evidence {
                kind: AttachmentKind::Sbom,
                verdict: None,
            },
        ];
        assert!(missing(std::iter::once(&req), &evidence).is_empty());
    }

    #[test]
    fn an_unsigned_statement_counts_only_where_the_rule_accepts_it() {
        let provenance = "https://slsa.dev/provenance/v0.2";
        let mut req = RequirementConfig {
            attestations: vec![AttestationRequirement {
                predicate_type: provenance.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let statement = Verdict::unsigned(Some(provenance.into()));
        let evidence = [Evidence {
            kind: AttachmentKind::Attestation,
            verdict: Some(&statement),
        }];
        assert_eq!(missing(std::iter::once(&req), &evidence).len(), 1);
        req.attestations[0].accept_unsigned = true;
        assert!(missing(std::iter::once(&req), &evidence).is_empty());
        let other = Verdict::unsigned(Some("https://spdx.dev/Document".into()));
        let evidence = [Evidence {
            kind: AttachmentKind::Attestation,
            verdict: Some(&other),
        }];
        assert_eq!(missing(std::iter::once(&req), &evidence).len(), 1);
    }

    #[test]
    fn validation_refuses_unknown_roots_and_empty_requirements() {
        let empty = RequirementConfig::default();
        assert!(validate(&[empty], &["a"]).is_err());
        let unknown = RequirementConfig {
            signed_by: vec!["nobody".into()],
            ..Default::default()
        };
        let err = validate(&[unknown], &["a"]).unwrap_err().to_string();
        assert!(err.contains("nobody"), "{err}");
    }
}
