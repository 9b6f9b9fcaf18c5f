//! `signet fsck [--repair]`: checks every invariant of the configured stores and prints
//! a report; with `--repair`, fixes what is safe (see `signet_storage::fsck`).

use std::fmt::Write;

use signet_storage::fsck::{check, FsckOptions, FsckReport};

use crate::state::AppState;

/// Runs one check; returns the rendered report (text, or JSON with `json`) and the
/// number of problems left after the run.
pub async fn run(state: &AppState, repair: bool, json: bool) -> anyhow::Result<(String, usize)> {
    let options = FsckOptions {
        repair,
        staging_grace_secs: state.config.uploads.expire_after_secs,
    };
    let report = check(&state.meta, &state.blobs, &options).await?;
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    Ok((text, report.remaining()))
}

/// The report as text: what was checked, then every problem.
pub fn render(report: &FsckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "checked: {} blobs ({} bytes), {} manifests, {} tags, {} upload sessions, {} staging folders",
        report.blobs_checked,
        report.bytes_checked,
        report.manifests_checked,
        report.tags_checked,
        report.uploads_checked,
        report.staging_folders_checked
    );
    for p in &report.problems {
        let state = if p.repaired { "repaired" } else { "PROBLEM" };
        let _ = writeln!(out, "{state} {} {}: {}", p.kind, p.subject, p.detail);
    }
    let repaired = report.problems.len() - report.remaining();
    if report.is_clean() && report.problems.is_empty() {
        out.push_str("clean\n");
    } else if report.is_clean() {
        let _ = writeln!(out, "clean after repair ({repaired} repaired)");
    } else {
        let _ = writeln!(
            out,
            "{} problems remain ({repaired} repaired){}",
            report.remaining(),
            if report.repair {
                ""
            } else {
                "; --repair fixes derived rows and orphaned staging"
            }
        );
    }
    out
}
