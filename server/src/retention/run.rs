//! One retention run over every repository a rule governs: read its inventory, plan,
//! and (unless a dry run) delete each planned manifest through the write path, only if
//! it is still as it was read. A deletion refused because something changed is
//! reported as skipped; the next run decides again. One run at a time, across replicas,
//! under a lease. GC then reclaims the blobs.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use signet_storage::attachments::{AttachmentKind, VerdictKind};
use signet_storage::meta::{Page, Retired};
use signet_storage::registry::TagRules;
use signet_storage::{Digest, Reference, RepoName, StorageError};

use super::plan::{plan, Deletion, Facts, Kept};
use super::rules::{Keep, RetentionRule};
use super::ImmutableTags;
use crate::state::AppState;

/// The lease a real run holds.
const LEASE: &str = "retention";
const LEASE_SECS: i64 = 600;
const REPOSITORY_PAGE: u32 = 1000;

/// What a run did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    #[serde(rename = "dryRun")]
    pub dry_run: bool,
    /// The repositories some rule governs.
    pub repositories: Vec<String>,
    /// Deleted (dry: to delete), in order, each with its attachments.
    pub deleted: Vec<Deletion>,
    /// Artifacts kept, with the first reason.
    pub kept: Vec<Kept>,
    /// Planned but left alone: changed since they were read.
    pub skipped: Vec<Skipped>,
}

/// A planned deletion that did not happen.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub repository: String,
    pub digest: Digest,
    pub why: String,
}

/// Another run, here or on another replica, holds the lease.
#[derive(Debug, thiserror::Error)]
#[error("another retention run is in progress (it holds the lease)")]
pub struct Busy;

/// Runs retention once under the configured rules.
pub async fn run(state: &AppState, dry_run: bool) -> anyhow::Result<RetentionReport> {
    let config = &state.config.retention;
    let mut report = RetentionReport {
        dry_run,
        ..Default::default()
    };
    if config.rules.is_empty() {
        return Ok(report);
    }
    let holder = format!("retention-{}", uuid::Uuid::new_v4().simple());
    if !dry_run && !state.meta.lease_acquire(LEASE, &holder, LEASE_SECS).await? {
        return Err(Busy.into());
    }
    let result = run_all(state, dry_run, &holder, &mut report).await;
    if !dry_run {
        if let Err(e) = state.meta.lease_release(LEASE, &holder).await {
            tracing::warn!(error = %e, "could not release the retention lease");
        }
    }
    result.map(|()| report)
}

async fn run_all(
    state: &AppState,
    dry_run: bool,
    holder: &str,
    report: &mut RetentionReport,
) -> anyhow::Result<()> {
    let config = &state.config.retention;
    let immutable = ImmutableTags::of(config);
    let mut last: Option<String> = None;
    loop {
        let page = Page {
            last: last.as_deref(),
            limit: Some(REPOSITORY_PAGE),
        };
        let names = state.meta.list_repositories(page).await?;
        let Some(next) = names.last().cloned() else {
            break;
        };
        for name in names {
            let rules: Vec<&RetentionRule> =
                config.rules.iter().filter(|r| r.governs(&name)).collect();
            if rules.is_empty() {
                continue;
            }
            let Ok(repo) = name.parse::<RepoName>() else {
                continue;
            };
            if !dry_run {
                state.meta.lease_acquire(LEASE, holder, LEASE_SECS).await?;
            }
            report.repositories.push(name.clone());
            run_repository(state, &repo, &rules, immutable.as_ref(), dry_run, report).await?;
        }
        last = Some(next);
    }
    Ok(())
}

async fn run_repository(
    state: &AppState,
    repo: &RepoName,
    rules: &[&RetentionRule],
    immutable: Option<&ImmutableTags>,
    dry_run: bool,
    report: &mut RetentionReport,
) -> anyhow::Result<()> {
    // Taken before the read: whatever is written after it is younger than the grace
    // period, or changes what a deletion checks.
    let now = signet_storage::meta::now();
    let Some(inventory) = state.meta.inventory(repo).await? else {
        return Ok(());
    };
    let signed_by = if rules.iter().any(|r| matches!(r.keep, Keep::SignedBy(_))) {
        signatures(state, repo, &inventory).await?
    } else {
        HashMap::new()
    };
    let protected = |tag: &str| immutable.and_then(|rules| rules.immutable(repo, tag));
    let decided = plan(&Facts {
        repository: repo.as_str(),
        inventory: &inventory,
        rules,
        immutable: &protected,
        signed_by: &signed_by,
        now,
        grace_secs: state.config.retention.grace_secs as i64,
    });
    report.kept.extend(decided.keep);
    for deletion in decided.delete {
        if dry_run {
            report.deleted.push(deletion);
            continue;
        }
        let outcome = state
            .registry
            .retire_manifest(repo, &deletion.digest, &deletion.seen)
            .await;
        let why = match outcome {
            Ok(Retired::Deleted(mut gone)) => {
                gone.retain(|d| d != &deletion.digest);
                gone.sort();
                crate::ops::metrics::record_retention_deleted(1 + gone.len());
                audit(&deletion);
                report.deleted.push(Deletion {
                    attachments: gone,
                    ..deletion
                });
                continue;
            }
            Ok(Retired::Changed(why)) => format!("changed since it was read: {why}"),
            Err(StorageError::TagImmutable { tag, rule }) => {
                format!("tag {tag} is immutable (rule {rule:?})")
            }
            Err(e) => return Err(e.into()),
        };
        crate::ops::metrics::record_retention_skipped();
        report.skipped.push(Skipped {
            repository: deletion.repository,
            digest: deletion.digest,
            why,
        });
    }
    Ok(())
}

/// For each manifest, the roots of the valid signatures on it or on an index listing it.
async fn signatures(
    state: &AppState,
    repo: &RepoName,
    inventory: &signet_storage::meta::Inventory,
) -> anyhow::Result<HashMap<Digest, BTreeSet<String>>> {
    let mut signed = HashMap::new();
    for m in inventory.manifests.iter().filter(|m| !m.is_attachment) {
        let reference = Reference::Digest(m.digest.clone());
        let Some(evaluation) = crate::verify::policy::evaluate(state, repo, &reference).await?
        else {
            continue;
        };
        let roots: BTreeSet<String> = evaluation
            .evidence
            .iter()
            .filter(|e| e.kind == AttachmentKind::Signature)
            .filter_map(|e| e.verification.as_ref())
            .filter(|v| v.verdict == VerdictKind::Valid)
            .filter_map(|v| v.root.clone())
            .collect();
        if !roots.is_empty() {
            signed.insert(m.digest.clone(), roots);
        }
    }
    Ok(signed)
}

/// One audit line per manifest retention deleted.
fn audit(deletion: &Deletion) {
    tracing::info!(
        target: "audit",
        event = "retention-delete",
        who = "retention",
        repository = %deletion.repository,
        digest = %deletion.digest,
        tags = %deletion.tags.join(","),
        attachments = deletion.attachments.len(),
        why = %deletion.why.join("; "),
    );
}
