//! `signet gc [--dry-run]`: one garbage collection over the configured stores, beside
//! a running server or not (SQLite in WAL mode lets both work on the same database).

use std::fmt::Write;

use signet_storage::gc::{collect, GcReport};

use crate::state::AppState;

/// Runs one collection and renders its report (text, or JSON with `json`).
pub async fn run(state: &AppState, dry_run: bool, json: bool) -> anyhow::Result<String> {
    let options = state.config.gc.options(&state.config, dry_run);
    let report = collect(&state.meta, &state.blobs, &options).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&report)? + "\n");
    }
    Ok(render(&report))
}

/// The report as text: counts first, then every digest.
pub fn render(report: &GcReport) -> String {
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut out = String::new();
    if report.dry_run {
        out.push_str("dry run: nothing was removed\n");
    }
    let _ = writeln!(out, "manifests {verb}: {}", report.manifests_count);
    for m in &report.manifests {
        let _ = writeln!(out, "  {}@{}", m.repository, m.digest);
    }
    unlisted(&mut out, report.manifests_count, report.manifests.len());
    let _ = writeln!(out, "repository blob links {verb}: {}", report.links_count);
    for l in &report.links {
        let _ = writeln!(out, "  {}@{}", l.repository, l.digest);
    }
    unlisted(&mut out, report.links_count, report.links.len());
    let _ = writeln!(
        out,
        "blobs {verb}: {} ({} bytes freed)",
        report.blobs_count, report.bytes_freed
    );
    for b in &report.blobs {
        let _ = writeln!(out, "  {} {}", b.digest, b.size);
    }
    unlisted(&mut out, report.blobs_count, report.blobs.len());
    let _ = writeln!(out, "upload sessions expired: {}", report.uploads_expired);
    if report.leftover_deletions > 0 {
        let _ = writeln!(
            out,
            "deletions left by an interrupted collection, finished: {}",
            report.leftover_deletions
        );
    }
    if !report.failed_deletions.is_empty() {
        let _ = writeln!(
            out,
            "blobs whose bytes could not be deleted (retried next time): {}",
            report.failed_deletions.len()
        );
        for d in &report.failed_deletions {
            let _ = writeln!(out, "  {d}");
        }
    }
    out
}

/// The line that stands for what a long report does not name.
fn unlisted(out: &mut String, count: u64, listed: usize) {
    if count > listed as u64 {
        let _ = writeln!(out, "  ... and {} more", count - listed as u64);
    }
}
