//! `signet sync run <job>`: one run of a configured sync job against the stores,
//! progress on stderr, a summary (or JSON) on stdout.

use std::fmt::Write;

use crate::state::AppState;
use crate::sync::{run_job, SyncJob, SyncReport};

/// Runs the job named `job`; the summary, or an error naming the failed items.
pub async fn run(state: &AppState, job: &str, json: bool) -> anyhow::Result<String> {
    // The configuration's jobs first, then those created through the admin API.
    let stored = state.meta.sync_jobs().await?;
    let config = match state.config.sync.job(job) {
        Some(config) => config.clone(),
        None => match stored.iter().find(|(name, _)| name == job) {
            Some((_, text)) => serde_json::from_str::<SyncJob>(text)
                .map_err(|e| anyhow::anyhow!("stored sync job {job:?} is unreadable: {e}"))?,
            None => {
                let known: Vec<&str> = state
                    .config
                    .sync
                    .jobs
                    .iter()
                    .map(|j| j.name.as_str())
                    .chain(stored.iter().map(|(name, _)| name.as_str()))
                    .collect();
                anyhow::bail!("no sync job {job:?} (jobs: {known:?})");
            }
        },
    };
    let progress = |line: &str| eprintln!("sync {job}: {line}");
    let report = run_job(state, &config, &progress).await?;
    let text = if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        render(&report)
    };
    if report.errors.is_empty() {
        Ok(text)
    } else {
        // The summary still goes out; the exit status says the run was not complete.
        print!("{text}");
        anyhow::bail!("sync job {job}: {} item(s) failed", report.errors.len())
    }
}

/// The summary as text.
pub fn render(r: &SyncReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sync job {}: {} repositories, {} tags ({} unchanged)",
        r.job, r.repositories, r.tags, r.tags_unchanged
    );
    let _ = writeln!(
        out,
        "manifests: {} copied, {} already present; platforms filtered out: {}",
        r.manifests_copied, r.manifests_present, r.platforms_skipped
    );
    let _ = writeln!(
        out,
        "blobs: {} copied ({} bytes), {} already present, {} linked from other repositories",
        r.blobs_copied, r.bytes_copied, r.blobs_present, r.blobs_mounted
    );
    let _ = writeln!(
        out,
        "attachments: {} manifests; atomic signatures: {} copied, {} already present",
        r.attachments, r.atomic_signatures_copied, r.atomic_signatures_present
    );
    let _ = writeln!(
        out,
        "{:.2} s, {:.1} MB/s, {} of {} items, {} retried request(s), {} error(s){}",
        r.seconds,
        r.bytes_per_second / 1e6,
        r.items_done,
        r.items_total,
        r.retries,
        r.errors.len(),
        if r.cancelled { ", cancelled" } else { "" }
    );
    for e in &r.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    out
}
