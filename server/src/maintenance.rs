//! Work that runs beside the requests: closing abandoned upload sessions, background
//! verification and trust reloads ([`crate::verify::worker`]), garbage collection on a
//! schedule (`[gc] interval_secs`), and scheduled sync runs.

use std::sync::Arc;
use std::time::Duration;

use crate::state::AppState;

pub fn spawn(state: Arc<AppState>) {
    crate::verify::worker::spawn(state.clone());
    let interval = Duration::from_secs(state.config.uploads.expiry_interval_secs.max(1));
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(interval);
        loop {
            ticker.tick().await;
            let max_idle = state.config.uploads.expire_after_secs as i64;
            match state.uploads.expire(max_idle).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "expired idle upload sessions"),
                Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
            }
        }
    });
}

/// Runs a garbage collection every `[gc] interval_secs` (none when 0). The first one
/// runs one interval after start.
pub fn spawn_gc(state: Arc<AppState>) {
    let every = state.config.gc.interval_secs;
    if every == 0 {
        return;
    }
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(Duration::from_secs(every));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let options = state.config.gc.options(&state.config, false);
            let result = signet_storage::gc::collect(&state.meta, &state.blobs, &options).await;
            crate::ops::metrics::record_gc(result.as_ref().map_err(|_| ()));
            match result {
                Ok(report) => tracing::info!(
                    manifests = report.manifests_count,
                    links = report.links_count,
                    blobs = report.blobs_count,
                    bytes = report.bytes_freed,
                    "scheduled garbage collection"
                ),
                Err(e) => tracing::warn!(error = %e, "scheduled garbage collection failed"),
            }
        }
    });
}

/// Starts scheduled sync runs (`interval_secs` of each job); a job whose previous run
/// is still going is skipped that time.
pub fn spawn_sync(manager: Arc<crate::sync::manager::SyncManager>) {
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            manager.tick(std::time::Instant::now()).await;
        }
    });
}

/// Writes the pulls noted since the last time every `[retention] record_pulls_every_secs`.
pub fn spawn_pull_writer(state: Arc<AppState>) {
    let every = Duration::from_secs(state.config.retention.record_pulls_every_secs.max(1));
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(every);
        loop {
            ticker.tick().await;
            write_pulls(&state).await;
        }
    });
}

/// Writes the pulls noted so far (also at shutdown).
pub async fn write_pulls(state: &AppState) {
    match state.pulls.write(state.meta.as_ref()).await {
        Ok(n) => crate::ops::metrics::record_pulls(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not record manifest pulls; kept for the next write")
        }
    }
}

/// Runs retention every `[retention] interval_secs` (none when 0 or without rules), the
/// first one interval after start. A run finding another replica's under way skips.
pub fn spawn_retention(state: Arc<AppState>) {
    let every = state.config.retention.interval_secs;
    if every == 0 || state.config.retention.rules.is_empty() {
        return;
    }
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(Duration::from_secs(every));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            // This process's pulls count in the run.
            write_pulls(&state).await;
            let result = crate::retention::run::run(&state, false).await;
            if matches!(&result, Err(e) if e.is::<crate::retention::run::Busy>()) {
                tracing::debug!("retention runs elsewhere");
                continue;
            }
            crate::ops::metrics::record_retention_run(result.is_ok());
            match result {
                Ok(report) => tracing::info!(
                    repositories = report.repositories.len(),
                    deleted = report.deleted.len(),
                    skipped = report.skipped.len(),
                    kept = report.kept.len(),
                    "scheduled retention"
                ),
                Err(e) => tracing::warn!(error = %e, "scheduled retention failed"),
            }
        }
    });
}
