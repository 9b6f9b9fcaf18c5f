//! `signet export` and `signet import`: images with every attachment, into an OCI
//! layout (a folder or a tar) and back, for networks no upstream reaches.

use std::io::IsTerminal;
use std::path::Path;

use crate::layout::archive::Archive;
use crate::layout::export::{export as write_layout, ExportReport, Selection};
use crate::layout::holdings::Stores;
use crate::layout::source::LayoutSource;
use crate::layout::Location;
use crate::state::AppState;
use crate::sync::SyncJob;
use signet_storage::RepoName;

/// `signet export <repo>[:tag|@digest]... -o PATH [--since PREVIOUS]`: a tar when PATH
/// ends in `.tar`, a folder otherwise (exporting into the same folder again writes only
/// new blobs). With `--since`, the layout holds only the blobs PREVIOUS (an earlier
/// export) lacks, besides every manifest: the next trip across the gap, for a
/// destination that imported PREVIOUS.
pub async fn export(
    state: &AppState,
    selections: &[String],
    out: &Path,
    since: Option<&Path>,
    json: bool,
) -> anyhow::Result<String> {
    if selections.is_empty() {
        anyhow::bail!("export: name at least one repository, repo:tag or repo@digest");
    }
    let selections = selections
        .iter()
        .map(|s| Selection::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let location = if out.extension().is_some_and(|e| e == "tar") {
        Location::Archive(out.to_path_buf())
    } else {
        Location::Dir(out.to_path_buf())
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let progress = |r: &ExportReport| {
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "{} manifests, {} blobs, {}",
                r.manifests,
                r.blobs,
                indicatif::HumanBytes(r.bytes)
            ));
        }
    };
    let previous = match since {
        Some(path) => Some(Archive::open(&Location::from_path(path)).await?),
        None => None,
    };
    let stores = Stores(state);
    let report = write_layout(
        &stores,
        &selections,
        &location,
        previous.as_ref(),
        &progress,
    )
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report?;
    Ok(if json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        format!(
            "exported to {}: {} entries, {} manifests, {} blobs ({} bytes), {} atomic signatures{}\n",
            out.display(),
            report.entries,
            report.manifests,
            report.blobs,
            report.bytes,
            report.atomic_signatures,
            if since.is_some() {
                format!(", {} blobs left out (the earlier export holds them)", report.blobs_left_out)
            } else {
                String::new()
            }
        )
    })
}

/// `signet import PATH [--prefix P] [--repository R]`: every digest is checked before
/// anything is stored (a damaged layout stores nothing); then the layout is copied as
/// a sync job copies an upstream, so a rerun copies only what is missing and verify on
/// ingest applies under the destination's policy.
pub async fn import(
    state: &AppState,
    path: &Path,
    prefix: &str,
    repository: &str,
    json: bool,
) -> anyhow::Result<String> {
    let location = Location::from_path(path);
    let layout = LayoutSource::open(&location, repository).await?;
    let prefix = prefix.trim_matches('/');
    layout
        .verify_all(|repo, digest| async move {
            let dest = if prefix.is_empty() {
                repo
            } else {
                format!("{prefix}/{repo}")
            };
            let Ok(dest) = dest.parse::<RepoName>() else {
                return Ok(false);
            };
            Ok(state
                .meta
                .blob_in_repository(&dest, &digest)
                .await?
                .is_some())
        })
        .await?;
    drop(layout);
    let job = SyncJob {
        name: "import".into(),
        upstream: location.to_upstream(),
        layout_repository: repository.to_string(),
        repositories: vec!["**".into()],
        destination_prefix: prefix.to_string(),
        retries: 0,
        ..Default::default()
    };
    super::sync::run_job(state, &job, json).await
}
