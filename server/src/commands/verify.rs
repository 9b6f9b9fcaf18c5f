//! `signet verify <repo>@<digest|tag>`: the pull policy's verdict on one manifest and
//! the evidence behind it — every signature, attestation and SBOM on the manifest and
//! on the indexes listing it, with the root that verified it or why none did.

use std::fmt::Write;

use serde::Serialize;
use serde_json::json;
use signet_storage::coverage::PlatformName;
use signet_storage::manifest::parse_manifest;
use signet_storage::{Digest, Reference, RepoName};

use crate::state::AppState;
use crate::verify::policy::{evaluate, Evaluation, Evidence};
use crate::verify::PolicyMode;

use super::attachments::parse_target;

/// The rendered report, and whether the policy would serve the manifest.
pub async fn run(
    state: &AppState,
    target: &str,
    as_if_enforced: bool,
    json: bool,
) -> anyhow::Result<(String, bool)> {
    let (repo, reference) = parse_target(target)?;
    let evaluation = evaluate(state, &repo, &reference)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{target}: no such manifest"))?;
    let configured = state.verifier.trust.policy_for(repo.as_str());
    let mode = if as_if_enforced {
        PolicyMode::Enforce
    } else {
        configured
    };
    let served = mode != PolicyMode::Enforce || evaluation.passes || evaluation.is_attachment;
    let platforms = platforms(state, &repo, &evaluation.digest).await?;
    let text = if json {
        let value = json!({
            "policy": mode.as_str(),
            "configuredPolicy": configured.as_str(),
            "served": served,
            "evaluation": evaluation,
            "platforms": platforms,
        });
        serde_json::to_string_pretty(&value)? + "\n"
    } else {
        let mut out = render(&evaluation, mode, configured, served);
        render_platforms(&mut out, &platforms, mode);
        out
    };
    Ok((text, served))
}

/// For an index: how each platform manifest it lists (and the repository holds)
/// fares under the same policy — through the index's own evidence when inherited.
#[derive(Debug, Serialize)]
struct PlatformVerdict {
    digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformName>,
    passes: bool,
    missing: Vec<String>,
}

async fn platforms(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
) -> anyhow::Result<Vec<PlatformVerdict>> {
    let Some(stored) = state
        .meta
        .get_manifest(repo, &Reference::Digest(digest.clone()))
        .await?
    else {
        return Ok(Vec::new());
    };
    let Ok(parsed) = parse_manifest(&stored.content, Some(&stored.media_type)) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for child in parsed.children {
        let reference = Reference::Digest(child.digest.clone());
        // A platform left out (by a sync filter, say) is simply absent.
        let Some(e) = evaluate(state, repo, &reference).await? else {
            continue;
        };
        out.push(PlatformVerdict {
            digest: child.digest,
            platform: child.platform.as_ref().map(PlatformName::from),
            passes: e.passes,
            missing: e.missing,
        });
    }
    Ok(out)
}

fn render_platforms(out: &mut String, platforms: &[PlatformVerdict], mode: PolicyMode) {
    if platforms.is_empty() {
        return;
    }
    let _ = writeln!(out, "platforms:");
    for p in platforms {
        let name = p
            .platform
            .as_ref()
            .map(|n| format!("{n} "))
            .unwrap_or_default();
        let verdict = match (p.passes, mode) {
            (true, _) => "passes".to_string(),
            (false, PolicyMode::Enforce) => format!("REFUSED: {}", p.missing.join("; ")),
            (false, _) => format!("fails: {}", p.missing.join("; ")),
        };
        let _ = writeln!(out, "  {name}{} — {verdict}", p.digest);
    }
}

fn render(e: &Evaluation, mode: PolicyMode, configured: PolicyMode, served: bool) -> String {
    let mut out = format!("{}@{} ({})\n", e.repository, e.digest, e.media_type);
    let policy = if mode == configured {
        format!("policy {}", mode.as_str())
    } else {
        format!(
            "policy {} (configured: {})",
            mode.as_str(),
            configured.as_str()
        )
    };
    let outcome = match (e.is_attachment, e.passes, mode) {
        (true, _, _) => "served: an attachment is readable under any policy".to_string(),
        (false, true, _) => "served: the policy's rules are met".to_string(),
        (false, false, PolicyMode::Enforce) => "REFUSED (403 DENIED)".to_string(),
        (false, false, PolicyMode::Audit) => "served, and logged as a violation".to_string(),
        (false, false, PolicyMode::Off) => {
            "served (no check); under enforce it would be refused".to_string()
        }
    };
    debug_assert_eq!(served, !outcome.starts_with("REFUSED"));
    let _ = writeln!(out, "{policy}: {outcome}");
    for index in &e.covered_by {
        let counted = if e.inherit_from_index {
            "its evidence counts"
        } else {
            "not counted: inherit_from_index is off"
        };
        let _ = writeln!(out, "covered by index {index} ({counted})");
    }
    if e.is_attachment {
        return out;
    }
    let _ = writeln!(out, "evidence:");
    if e.evidence.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for item in &e.evidence {
        let _ = writeln!(out, "  {}", evidence_line(item, e.inherit_from_index));
    }
    if !e.missing.is_empty() {
        let _ = writeln!(out, "missing:");
        for m in &e.missing {
            let _ = writeln!(out, "  - {m}");
        }
    }
    out
}

fn evidence_line(item: &Evidence, inherit: bool) -> String {
    let on = if item.via_index {
        let ignored = if inherit { "" } else { ", not counted" };
        format!("on index {}{ignored}", item.subject)
    } else {
        "on the manifest".to_string()
    };
    let verdict = item
        .verification
        .as_ref()
        .map(|v| format!(" — {}", v.summary()))
        .unwrap_or_default();
    let kind = serde_json::to_value(item.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let states = if item.predicate_types.is_empty() {
        String::new()
    } else {
        format!(" stating {}", item.predicate_types.join(", "))
    };
    let carried = item
        .carried_by
        .as_ref()
        .map(|i| format!(", carried by index {i}"))
        .unwrap_or_default();
    format!(
        "{kind} {} ({}{carried}) {on}{states}{verdict}",
        item.attachment, item.format
    )
}
