//! `signet retention [--dry-run] [--json]`: one retention run under the configured
//! rules, beside a running server or not. The dry run prints what the real run would
//! delete, each with the rules' answers; the real run prints what it deleted and what it
//! left because it changed meanwhile.

use std::fmt::Write;

use crate::retention::run::{run as run_retention, RetentionReport};
use crate::state::AppState;

/// Runs retention once and renders its report (text, or JSON with `json`).
pub async fn run(state: &AppState, dry_run: bool, json: bool) -> anyhow::Result<String> {
    if state.config.retention.rules.is_empty() {
        anyhow::bail!("retention: no [[retention.rules]] in the configuration");
    }
    let report = run_retention(state, dry_run).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&report)? + "\n");
    }
    Ok(render(&report))
}

/// The report as text: what goes (and why), then what stays.
pub fn render(report: &RetentionReport) -> String {
    let mut out = String::new();
    let verb = if report.dry_run {
        out.push_str("dry run: nothing was deleted\n");
        "to delete"
    } else {
        "deleted"
    };
    let _ = writeln!(
        out,
        "repositories governed: {}\nmanifests {verb}: {}",
        report.repositories.len(),
        report.deleted.len()
    );
    for d in &report.deleted {
        let tags = if d.tags.is_empty() {
            "untagged".to_string()
        } else {
            d.tags.join(", ")
        };
        let _ = writeln!(out, "  {}@{} ({tags})", d.repository, d.digest);
        for why in &d.why {
            let _ = writeln!(out, "    {why}");
        }
        if !d.attachments.is_empty() {
            let _ = writeln!(out, "    with {} attachment(s)", d.attachments.len());
        }
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(out, "left alone: {}", report.skipped.len());
        for s in &report.skipped {
            let _ = writeln!(out, "  {}@{}: {}", s.repository, s.digest, s.why);
        }
    }
    let _ = writeln!(out, "kept: {}", report.kept.len());
    for k in &report.kept {
        let _ = writeln!(
            out,
            "  {}@{} ({}): {}",
            k.repository,
            k.digest,
            k.tags.join(", "),
            k.why
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use signet_storage::meta::ManifestSeen;
    use signet_storage::Digest;

    use super::*;
    use crate::retention::plan::{Deletion, Kept};

    #[test]
    fn the_text_names_each_deletion_with_its_reasons_and_each_kept_artifact() {
        let gone = Digest::sha256_of(b"gone");
        let stays = Digest::sha256_of(b"stays");
        let report = RetentionReport {
            dry_run: true,
            repositories: vec!["ci/app".into()],
            deleted: vec![Deletion {
                repository: "ci/app".into(),
                digest: gone.clone(),
                tags: vec![],
                why: vec![r#"rule "r": untagged, which it does not look at"#.into()],
                attachments: vec![Digest::sha256_of(b"sig")],
                seen: ManifestSeen {
                    pushed_at: 0,
                    tags: vec![],
                    attachments: vec![],
                },
            }],
            kept: vec![Kept {
                repository: "ci/app".into(),
                digest: stays.clone(),
                tags: vec!["v1".into()],
                why: "written within the grace period".into(),
            }],
            skipped: vec![],
        };
        let text = render(&report);
        assert_eq!(
            text,
            format!(
                "dry run: nothing was deleted\nrepositories governed: 1\nmanifests to delete: 1\n  \
                 ci/app@{gone} (untagged)\n    rule \"r\": untagged, which it does not look at\n    \
                 with 1 attachment(s)\nkept: 1\n  ci/app@{stays} (v1): written within the grace period\n"
            )
        );
    }
}
