//! `signet sync run <job>`: one run of a configured sync job against the stores,
//! progress on stderr, a summary (or JSON) on stdout.

use std::fmt::Write;
use std::io::IsTerminal;

use crate::state::AppState;
use crate::sync::manager::{finished_event, status_of};
use crate::sync::runner::{run_controlled, Control};
use crate::sync::sealed::Sealer;
use crate::sync::{SyncJob, SyncReport};

/// Runs the job named `job`; the summary, or an error naming the failed items.
pub async fn run(state: &AppState, job: &str, json: bool) -> anyhow::Result<String> {
    // The configuration's jobs first, then those created through the admin API.
    let stored = state.meta.sync_jobs().await?;
    let config = match state.config.sync.job(job) {
        Some(config) => config.clone(),
        None => match stored.iter().find(|(name, _)| name == job) {
            Some((_, text)) => {
                let sealer = Sealer::load(&state.config.sync.secret_key_file)?;
                SyncJob::from_stored(text, sealer.as_ref())
                    .map_err(|e| anyhow::anyhow!("stored sync job {job:?} is unreadable: {e:#}"))?
            }
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
    run_job(state, &config, json).await
}

/// Runs `config` once (a configured job, or one made for `signet import`), progress on
/// stderr; the summary, or an error naming the failed items.
pub async fn run_job(state: &AppState, config: &SyncJob, json: bool) -> anyhow::Result<String> {
    let job = config.name.as_str();
    let control = Control::default();
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| ProgressBar::new(job));
    let progress = |line: &str| match &bar {
        Some(bar) => bar.line(line),
        None => eprintln!("sync {job}: {line}"),
    };
    let report = match &bar {
        Some(bar) => {
            let run = run_controlled(state, config, &progress, &control);
            tokio::pin!(run);
            let mut ticker = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tokio::select! {
                    report = &mut run => break report,
                    _ = ticker.tick() => bar.draw(&control.snapshot()),
                }
            }
        }
        None => run_controlled(state, config, &progress, &control).await,
    };
    if let Some(bar) = &bar {
        bar.clear();
    }
    let event = match &report {
        Ok(r) => finished_event(config, "cli", status_of(r), Some(r), None),
        Err(e) => finished_event(config, "cli", "failed", None, Some(&format!("{e:#}"))),
    };
    state.events.append(event).await;
    let report = report?;
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
    if r.tags_verified + r.tags_refused > 0 {
        let _ = writeln!(
            out,
            "verified on ingest: {} tag(s) published, {} not published (see the errors)",
            r.tags_verified, r.tags_refused
        );
    }
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

/// The live status line of `signet sync run` on a terminal (an `indicatif` bar): items
/// done of those known, bytes copied, the rate, retries and errors; progress lines
/// scroll above it.
struct ProgressBar {
    job: String,
    bar: indicatif::ProgressBar,
}

impl ProgressBar {
    fn new(job: &str) -> ProgressBar {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("[{bar:24}] {pos}/{len} items  {msg}")
                .expect("a valid template")
                .progress_chars("#-"),
        );
        ProgressBar {
            job: job.to_string(),
            bar,
        }
    }

    fn draw(&self, r: &SyncReport) {
        let secs = self.bar.elapsed().as_secs_f64().max(0.001);
        let mib = r.bytes_copied as f64 / 1048576.0;
        self.bar.set_length(r.items_total);
        self.bar.set_position(r.items_done.min(r.items_total));
        self.bar.set_message(format!(
            "{mib:.1} MiB  {:.1} MiB/s  {} retried  {} error(s)",
            mib / secs,
            r.retries,
            r.errors.len(),
        ));
    }

    /// A progress line above the status line.
    fn line(&self, line: &str) {
        self.bar.println(format!("sync {}: {line}", self.job));
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}
