//! The background verifier: signatures and attestations are verified soon after they
//! arrive and again whenever the trust configuration's fingerprint changes, off the
//! request path, and the verdicts stored (`verdicts` table).
//!
//! It works by scanning: every `[trust] verify_interval_secs`, at once after a reload,
//! and at once when this process stores an attachment (a manifest PUT with a subject or
//! under an attachment tag, an atomic signature, sync), it asks the metadata store for
//! attachments without a verdict under the fingerprint in force. So whatever wrote the
//! attachment (another replica and `signet migrate` included, found at the next
//! interval) it is found, and a verdict of an older configuration is found stale. The
//! scan is a read; only when it finds work does the worker write, under a lease, so
//! replicas sharing a database take turns instead of verifying the same attachments
//! twice.
//!
//! Reloading: SIGHUP reads the configuration file again and puts its `[trust]` section
//! in force; a file that does not load (syntax, a missing key file, a bad key) is logged
//! and the configuration in force kept.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signet_storage::meta::UnverifiedAttachment;
use signet_storage::Digest;

use super::Trust;
use crate::config::{CliOverrides, Config};
use crate::state::AppState;

/// The lease replicas take turns under.
const LEASE: &str = "verify";
const LEASE_SECS: i64 = 60;
/// Attachments verified per scan query.
const BATCH: u32 = 64;
/// Attachments whose verification could not be stored (a storage read failed) are left
/// out of scans for this long, so they do not hold up the others.
const RETRY_AFTER: Duration = Duration::from_secs(300);

type Key = (String, Digest, Digest);

fn key(u: &UnverifiedAttachment) -> Key {
    (u.repo.clone(), u.subject.clone(), u.attachment.clone())
}

/// Starts the scan loop and the SIGHUP reload.
pub fn spawn(state: Arc<AppState>) {
    let holder = format!("verify-{}", uuid::Uuid::new_v4().simple());
    let scanning = state.clone();
    actix_web::rt::spawn(async move {
        let mut skipped: HashSet<Key> = HashSet::new();
        let mut skipped_under = String::new();
        let mut skipped_since = Instant::now();
        // The store's change token (see `crate::cache`) and
        // fingerprint of the last scan that left nothing to do: while both stay the
        // same there is nothing new to find, and the scan query is not run.
        let mut settled: Option<(signet_storage::meta::ChangeToken, String)> = None;
        loop {
            let trust = scanning.verifier.trust.current();
            if trust.fingerprint != skipped_under || skipped_since.elapsed() > RETRY_AFTER {
                skipped.clear();
                skipped_under = trust.fingerprint.clone();
                skipped_since = Instant::now();
            }
            let version = scanning.manifest_cache.version().await;
            let idle = matches!((&settled, &version), (Some((v, f)), Some(now))
                if v == now && *f == trust.fingerprint);
            if !idle {
                match scan(&scanning, &trust, &holder, &mut skipped).await {
                    Ok(0) => {
                        settled = version
                            .filter(|_| skipped.is_empty())
                            .map(|v| (v, trust.fingerprint.clone()));
                    }
                    Ok(n) => {
                        settled = None;
                        tracing::info!(verdicts = n, "verified attachments in the background")
                    }
                    Err(e) => {
                        settled = None;
                        tracing::warn!(error = %e, "background verification failed")
                    }
                }
            }
            let every = Duration::from_secs(trust.verify_interval_secs.max(1));
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = scanning.verifier.wake.notified() => {}
            }
        }
    });
    watch_reload(state);
}

/// One scan: verifies every attachment without a verdict under `trust`; how many
/// verdicts it stored.
async fn scan(
    state: &AppState,
    trust: &Trust,
    holder: &str,
    skipped: &mut HashSet<Key>,
) -> anyhow::Result<usize> {
    let pending = |skipped: &HashSet<Key>| {
        let limit = BATCH.saturating_add(u32::try_from(skipped.len()).unwrap_or(u32::MAX));
        async move {
            let found = state
                .meta
                .unverified_attachments(&trust.fingerprint, limit)
                .await?;
            anyhow::Ok(found)
        }
    };
    let first = pending(skipped).await?;
    if first.iter().all(|u| skipped.contains(&key(u))) {
        return Ok(0);
    }
    if !state.meta.lease_acquire(LEASE, holder, LEASE_SECS).await? {
        // Another replica is at it.
        return Ok(0);
    }
    let mut stored = 0;
    let mut batch = first;
    let result = loop {
        let todo: Vec<UnverifiedAttachment> = batch
            .into_iter()
            .filter(|u| !skipped.contains(&key(u)))
            .collect();
        if todo.is_empty() {
            break Ok(stored);
        }
        for u in todo {
            let (_, kept) = state
                .verifier
                .compute(
                    trust,
                    state.meta.as_ref(),
                    &state.blobs,
                    &u.repo,
                    &u.subject,
                    &u.attachment,
                    u.format,
                )
                .await;
            if kept {
                stored += 1;
            } else {
                skipped.insert(key(&u));
            }
        }
        // A reload during the scan: the next one starts over under the new fingerprint.
        if state.verifier.trust.current().fingerprint != trust.fingerprint {
            break Ok(stored);
        }
        if let Err(e) = state.meta.lease_acquire(LEASE, holder, LEASE_SECS).await {
            break Err(e.into());
        }
        batch = match pending(skipped).await {
            Ok(b) => b,
            Err(e) => break Err(e),
        };
    };
    if let Err(e) = state.meta.lease_release(LEASE, holder).await {
        tracing::warn!(error = %e, "could not release the verification lease");
    }
    result
}

/// Reads the `[trust]` section again on SIGHUP.
fn watch_reload(state: Arc<AppState>) {
    let Some(file) = state.config.source.clone() else {
        // Without a file there is nothing to read again; SIGHUP keeps its default
        // action unless something else (TLS) listens for it.
        return;
    };
    actix_web::rt::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; the trust configuration will not reload");
            return;
        };
        while hup.recv().await.is_some() {
            reload(&state, &file);
        }
    });
}

/// Loads `[trust]` from `file` (and the environment, as at start) and puts it in force;
/// on failure the configuration in force stays.
pub fn reload(state: &AppState, file: &Path) -> bool {
    let loaded = Config::load(Some(file), &CliOverrides::default())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|config| Trust::load(&config.trust));
    let reloads = &crate::ops::metrics::global().trust_reloads;
    match loaded {
        Ok(trust) => {
            let roots = trust.roots.len();
            let fingerprint = trust.fingerprint.clone();
            let changed = state.verifier.reload(trust);
            reloads.with_label_values(&["ok"]).inc();
            tracing::info!(
                file = %file.display(),
                roots,
                %fingerprint,
                reverify = changed,
                "trust configuration reloaded"
            );
            true
        }
        Err(e) => {
            reloads.with_label_values(&["error"]).inc();
            tracing::error!(
                file = %file.display(),
                error = %e,
                "trust configuration not reloaded; the one in force stays"
            );
            false
        }
    }
}
