//! `signet migrate`: copy an installation's metadata and blobs into other stores (an
//! embedded SQLite + filesystem installation into PostgreSQL + S3, say), without
//! re-pushing. See `signet_storage::migrate` for what is copied and how; re-running it
//! copies only what is missing.
//!
//! The source is read from its configuration file alone (`--from-config`) or from an
//! embedded data folder (`--from-data-dir`): `SIGNET__...` variables do not apply to it,
//! so they can describe the target. The target is configured like `signet serve`
//! (`--to-config`, else the global `--config`, then `SIGNET__...` variables).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;

use crate::config::{CliOverrides, Config};
use crate::state::AppState;

/// Where the source installation is.
pub enum Source {
    Config(PathBuf),
    DataDir(PathBuf),
}

/// The source's configuration: its file (or data folder) over the defaults, nothing else.
pub fn source_config(source: &Source) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    match source {
        Source::Config(file) => {
            anyhow::ensure!(file.exists(), "{} does not exist", file.display());
            figment = figment.merge(Toml::file(file));
        }
        Source::DataDir(dir) => {
            anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
            figment = figment.merge(Serialized::default("storage.data_dir", dir));
        }
    }
    Ok(figment.extract()?)
}

pub async fn run(source: &Source, target: Option<&Path>, json: bool) -> anyhow::Result<String> {
    let from = source_config(source)?;
    let to = Config::load(target, &CliOverrides::default())?;
    anyhow::ensure!(
        from.storage.metadata_url() != to.storage.metadata_url(),
        "source and target name the same metadata database"
    );
    let from = AppState::open(Arc::new(from)).await?;
    let to = AppState::open(Arc::new(to)).await?;
    let report =
        signet_storage::migrate::copy(&from.meta, &from.blobs, &to.meta, &to.blobs).await?;
    if json {
        return Ok(serde_json::to_string_pretty(&report)? + "\n");
    }
    Ok(format!(
        "blobs: {} copied ({} bytes, verified), {} already present, {} rows added\n\
         repositories: {}, rows added: {}\n",
        report.blobs_copied,
        report.bytes_copied,
        report.blobs_present,
        report.blob_rows_inserted,
        report.repositories,
        report.rows_inserted
    ))
}
