//! A sync job that writes to a layout instead of the store (`destination_layout`): the
//! upstream's selected repositories and tags, every platform and every attachment,
//! straight into a folder to carry across the gap. Each run adds only what the folder
//! lacks; index.json then lists what the upstream holds now.

use std::path::PathBuf;

use anyhow::anyhow;
use signet_storage::Reference;

use super::export::{export, ExportReport, Selection};
use super::holdings::Upstream;
use super::Location;
use crate::sync::plan::Plan;
use crate::sync::{source, SyncJob, SyncReport};

/// Runs `job` into its layout folder; the run's report in sync's terms.
pub async fn run(job: &SyncJob, progress: &(dyn Fn(&str) + Sync)) -> anyhow::Result<SyncReport> {
    let started = std::time::Instant::now();
    let plan = Plan::new(job)?;
    let upstream = source::open(job).await?;
    let catalog = if plan.needs_catalog() {
        upstream.catalog().await?
    } else {
        Vec::new()
    };
    let mut report = SyncReport {
        job: job.name.clone(),
        ..Default::default()
    };
    let mut selections = Vec::new();
    for repo in plan.repositories(&catalog) {
        let tags = upstream.tags(&repo).await?;
        let selected = plan.select_tags(&tags);
        progress(&format!(
            "{repo}: {} of {} tags selected",
            selected.len(),
            tags.len()
        ));
        report.repositories += 1;
        report.tags += selected.len() as u64;
        for tag in selected {
            selections.push(Selection {
                repo: repo.parse().map_err(|e| anyhow!("{repo}: {e}"))?,
                reference: Some(Reference::Tag(
                    tag.parse().map_err(|e| anyhow!("{repo}:{tag}: {e}"))?,
                )),
            });
        }
    }
    let folder = Location::Dir(PathBuf::from(&job.destination_layout));
    let written: ExportReport = export(
        &Upstream::new(upstream).await?,
        &selections,
        &folder,
        None,
        &|_| {},
    )
    .await?;
    report.items_total = selections.len() as u64;
    report.items_done = selections.len() as u64;
    report.manifests_copied = written.manifests as u64;
    report.blobs_copied = written.blobs as u64;
    report.bytes_copied = written.bytes;
    report.atomic_signatures_copied = written.atomic_signatures as u64;
    report.seconds = started.elapsed().as_secs_f64();
    report.bytes_per_second = report.bytes_copied as f64 / report.seconds.max(1e-9);
    Ok(report)
}
