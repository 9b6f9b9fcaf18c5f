//! `signet verify <repo>@<digest|tag>`: the pull policy's verdict on one manifest and
//! the evidence behind it — every signature, attestation and SBOM on the manifest and
//! on the indexes listing it, with the root that verified it or why none did.

use std::fmt::Write;

use serde_json::json;

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
    let text = if json {
        let value = json!({
            "policy": mode.as_str(),
            "configuredPolicy": configured.as_str(),
            "served": served,
            "evaluation": evaluation,
        });
        serde_json::to_string_pretty(&value)? + "\n"
    } else {
        render(&evaluation, mode, configured, served)
    };
    Ok((text, served))
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
    format!("{kind} {} ({}) {on}{verdict}", item.attachment, item.format)
}
