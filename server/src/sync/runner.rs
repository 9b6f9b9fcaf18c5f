//! One run of a sync job: for every selected repository and tag, the manifest tree as
//! upstream wrote it (the index, its selected platform manifests, their blobs), then
//! every attachment of every mirrored manifest (cosign tags, the referrers fallback tag,
//! OCI referrers, atomic signatures, and attachments of attachments).
//!
//! Incremental by construction: a manifest already in the repository is read locally
//! and not fetched again (so its blobs are not looked at either), a blob already in the
//! repository is skipped, one held by another repository is linked without a download.
//! Each item that fails is reported and the run goes on.
//!
//! Verified on the way in: when the trust policy of a destination repository is
//! `enforce` (or the job says `verify = true`), a tag moves only after the manifest and
//! its attachments are stored and the policy's evaluation passes on them; otherwise
//! the item fails with what is missing and the tag stays where it was.
//!
//! An index whose platforms are filtered is stored byte-exact, with the mirrored
//! children as its only child edges: `put_manifest` checks (and GC and coverage follow)
//! exactly those, and a pull of a filtered-out platform answers `MANIFEST_UNKNOWN`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use signet_storage::attachments::AttachmentTag;
use signet_storage::digest::Digest;
use signet_storage::manifest::parse_manifest;
use signet_storage::meta::{AtomicSignature, ManifestPut, SignatureStored};
use signet_storage::names::{Reference, RepoName, Tag};
use tokio::sync::Semaphore;

use super::job::{SyncJob, SyncReport};
use super::plan::Plan;
use super::source::{self, Source};
use crate::state::AppState;

/// How deep attachments of attachments are followed.
const MAX_ATTACHMENT_DEPTH: u32 = 3;

/// Where progress lines go (the CLI prints them on stderr).
pub type Progress<'p> = dyn Fn(&str) + Send + Sync + 'p;

/// What a caller sees of a run while it goes, and how it stops one: the report so
/// far, and a cancellation flag checked between items.
#[derive(Default)]
pub struct Control {
    cancel: AtomicBool,
    report: Mutex<SyncReport>,
}

impl Control {
    /// Asks the run to stop before its next item.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// The report so far (`seconds` and the rate as of now).
    pub fn snapshot(&self) -> SyncReport {
        self.report.lock().expect("report lock").clone()
    }
}

/// Runs `job` once against the stores of `state`.
pub async fn run_job(
    state: &AppState,
    job: &SyncJob,
    progress: &Progress<'_>,
) -> anyhow::Result<SyncReport> {
    run_controlled(state, job, progress, &Control::default()).await
}

/// Runs `job` once, reporting through `control` and stopping when it is cancelled.
pub async fn run_controlled(
    state: &AppState,
    job: &SyncJob,
    progress: &Progress<'_>,
    control: &Control,
) -> anyhow::Result<SyncReport> {
    let running = crate::ops::metrics::global()
        .sync_running
        .with_label_values(&[&job.name]);
    running.set(1);
    let result = run_inner(state, job, progress, control).await;
    running.set(0);
    result
}

async fn run_inner(
    state: &AppState,
    job: &SyncJob,
    progress: &Progress<'_>,
    control: &Control,
) -> anyhow::Result<SyncReport> {
    if !job.destination_layout.is_empty() {
        let report = crate::layout::job::run(job, progress).await?;
        *control.report.lock().expect("report lock") = report.clone();
        return Ok(report);
    }
    let plan = Plan::new(job)?;
    let upstream = source::open(job).await?;
    *control.report.lock().expect("report lock") = SyncReport {
        job: job.name.clone(),
        ..Default::default()
    };
    let mut run = Run::new(state, job, plan, upstream, control, progress);
    run.signatures = match run.upstream.supports_signatures().await {
        Ok(s) => s,
        Err(e) => {
            run.error(format!("{e:#}"));
            false
        }
    };
    let catalog = if run.plan.needs_catalog() {
        match run.upstream.catalog().await {
            Ok(c) => c,
            Err(e) => {
                run.error(format!("{e:#}"));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let repositories = run.plan.repositories(&catalog);
    for repo in &repositories {
        if control.cancelled() {
            break;
        }
        run.count(|r| r.repositories += 1);
        if let Err(e) = run.repository(repo).await {
            run.error(format!("{repo}: {e:#}"));
        }
    }
    run.count(|r| r.cancelled = control.cancelled());
    if control.cancelled() {
        (run.progress)("cancelled");
    }
    Ok(control.snapshot())
}

/// One repository filled on demand (a pull-through miss), outside any run: the same
/// copying as a run's items, for one manifest or one blob at a time.
pub struct OnDemand<'a> {
    pub state: &'a AppState,
    /// The upstream's settings (platforms, attachments, concurrency, retries).
    pub job: &'a SyncJob,
    pub upstream: Arc<dyn Source>,
    pub upstream_repo: &'a str,
    pub dest: &'a RepoName,
}

impl OnDemand<'_> {
    fn run<'s>(
        &'s self,
        control: &'s Control,
        progress: &'s Progress<'s>,
        attachments: bool,
        signatures: bool,
    ) -> anyhow::Result<Run<'s>> {
        let plan = Plan::new(self.job)?;
        let mut run = Run::new(
            self.state,
            self.job,
            plan,
            self.upstream.clone(),
            control,
            progress,
        );
        // Verify-on-ingest holds tags back in runs; a pull is judged by the policy.
        run.verify = false;
        run.signatures = signatures;
        run.attachments_inline = attachments;
        Ok(run)
    }

    fn repo(&self, attachment_tags: Vec<(Digest, String)>) -> Repo {
        Repo {
            upstream: self.upstream_repo.to_string(),
            dest: self.dest.clone(),
            attachment_tags,
            visited: Mutex::default(),
        }
    }

    /// Copies the manifest `digest` like a run's item: its selected children and blobs
    /// first, then the manifest, with `tag` moved onto it. Its attachments come along
    /// when `attachments` is set; otherwise a later call by digest with it set (in the
    /// background) fetches them, everything else being present by then.
    pub async fn manifest(
        &self,
        digest: &Digest,
        tag: Option<&Tag>,
        attachments: bool,
    ) -> anyhow::Result<SyncReport> {
        let control = Control::default();
        let dest = self.dest;
        let progress =
            move |line: &str| tracing::debug!(repository = %dest, "pull-through: {line}");
        let (attachment_tags, signatures) = if attachments {
            let tags = self.upstream.tags(self.upstream_repo).await?;
            let tags = tags
                .iter()
                .filter_map(|t| AttachmentTag::parse(t).map(|a| (a.subject().clone(), t.clone())))
                .collect();
            (
                tags,
                self.upstream.supports_signatures().await.unwrap_or(false),
            )
        } else {
            (Vec::new(), false)
        };
        let run = self.run(&control, &progress, attachments, signatures)?;
        run.manifest(&self.repo(attachment_tags), digest, tag, 0)
            .await?;
        Ok(control.snapshot())
    }

    /// Copies one blob, verified on the way in.
    pub async fn blob(&self, digest: &Digest) -> anyhow::Result<()> {
        let control = Control::default();
        let progress = |_: &str| {};
        let run = self.run(&control, &progress, false, false)?;
        run.blob(&self.repo(Vec::new()), digest, None, Vouched::No)
            .await
    }
}

/// Whether upstream has said the mirrored repository holds a blob, before it is linked
/// from a copy the registry holds elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vouched {
    /// A manifest fetched from upstream for this repository names it.
    ByManifest,
    /// Nothing yet: upstream is asked (`HEAD`) first.
    No,
}

struct Run<'a> {
    state: &'a AppState,
    /// The write path, naming the job (`sync:<name>`) in the events it records.
    registry: std::borrow::Cow<'a, signet_storage::registry::Registry>,
    upstream: Arc<dyn Source>,
    plan: Plan,
    concurrency: usize,
    /// Bounds blob downloads in flight.
    transfers: Semaphore,
    report: &'a Mutex<SyncReport>,
    control: &'a Control,
    started: Instant,
    /// Upstream advertises the signatures extension.
    signatures: bool,
    progress: &'a Progress<'a>,
    /// The job's `verify`: verify on ingest whatever the destination's policy.
    verify: bool,
    /// A manifest's attachments are mirrored right after it (a pull-through fetch
    /// leaves them to a background pass, so the pull is answered sooner).
    attachments_inline: bool,
}

/// One repository being mirrored.
struct Repo {
    upstream: String,
    dest: RepoName,
    /// Upstream's attachment tags: (subject, tag).
    attachment_tags: Vec<(Digest, String)>,
    /// Subjects whose attachments this run already looked at.
    visited: Mutex<HashSet<Digest>>,
}

/// What mirroring one manifest did.
struct Mirrored {
    /// The manifest was not in the repository before.
    new: bool,
    /// The children it now has in the repository (for an index).
    children: Vec<Digest>,
}

impl<'a> Run<'a> {
    /// A run of `job` reporting through `control`: attachments mirrored right after
    /// each manifest, the signatures extension not yet probed.
    fn new(
        state: &'a AppState,
        job: &SyncJob,
        plan: Plan,
        upstream: Arc<dyn Source>,
        control: &'a Control,
        progress: &'a Progress<'a>,
    ) -> Run<'a> {
        Run {
            state,
            registry: state.registry_as(&crate::auth::Actor(format!("sync:{}", job.name))),
            upstream,
            plan,
            concurrency: job.concurrency.max(1),
            transfers: Semaphore::new(job.concurrency.max(1)),
            report: &control.report,
            control,
            started: Instant::now(),
            signatures: false,
            progress,
            verify: job.verify,
            attachments_inline: true,
        }
    }
}

impl Run<'_> {
    /// Updates the report (and its clock, rate and retry count).
    fn count(&self, f: impl FnOnce(&mut SyncReport)) {
        let mut r = self.report.lock().expect("report lock");
        f(&mut r);
        r.retries = self.upstream.retry().retried();
        r.seconds = self.started.elapsed().as_secs_f64();
        r.bytes_per_second = if r.seconds > 0.0 {
            r.bytes_copied as f64 / r.seconds
        } else {
            0.0
        };
    }

    /// One selected tag finished (`ok` or not): the report and the metrics.
    fn item_done(&self, ok: bool) {
        self.count(|r| r.items_done += 1);
        crate::ops::metrics::global()
            .sync_items
            .with_label_values(&[self.report_job().as_str(), if ok { "ok" } else { "error" }])
            .inc();
    }

    fn report_job(&self) -> String {
        self.report.lock().expect("report lock").job.clone()
    }

    fn error(&self, message: String) {
        (self.progress)(&format!("error: {message}"));
        self.count(|r| r.errors.push(message));
    }

    async fn repository(&self, upstream_repo: &str) -> anyhow::Result<()> {
        let dest: RepoName = self
            .plan
            .destination(upstream_repo)
            .parse()
            .map_err(|e| anyhow::anyhow!("destination name: {e}"))?;
        let tags = self.upstream.tags(upstream_repo).await?;
        let attachment_tags = tags
            .iter()
            .filter_map(|t| AttachmentTag::parse(t).map(|a| (a.subject().clone(), t.clone())))
            .collect();
        let selected = self.plan.select_tags(&tags);
        (self.progress)(&format!(
            "{upstream_repo} -> {dest}: {} of {} tags selected",
            selected.len(),
            tags.len()
        ));
        self.count(|r| {
            r.tags += selected.len() as u64;
            r.items_total += selected.len() as u64;
        });
        let repo = Repo {
            upstream: upstream_repo.to_string(),
            dest,
            attachment_tags,
            visited: Mutex::default(),
        };
        let repo = &repo;
        futures::stream::iter(selected)
            .map(|tag| async move {
                // Cancellation is checked between items: one already going finishes.
                if self.control.cancelled() {
                    return;
                }
                match self.tag(repo, tag).await {
                    Ok(()) => self.item_done(true),
                    Err(e) => {
                        self.error(format!("{}:{tag}: {e:#}", repo.upstream));
                        self.item_done(false);
                    }
                }
            })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<()>>()
            .await;
        Ok(())
    }

    async fn tag(&self, repo: &Repo, tag: &str) -> anyhow::Result<()> {
        let tag: Tag = tag
            .parse()
            .map_err(|e| anyhow::anyhow!("tag {tag:?}: {e}"))?;
        let digest = self
            .upstream
            .tag_digest(&repo.upstream, tag.as_str())
            .await?;
        let local = self.local_tag(repo, &tag).await?;
        if local.as_ref() == Some(&digest) {
            self.count(|r| r.tags_unchanged += 1);
        }
        let held = self.verifies_on_ingest(&repo.dest);
        let mirrored = self
            .manifest(repo, &digest, (!held).then_some(&tag), 0)
            .await?;
        if held && local.as_ref() != Some(&digest) {
            self.publish_verified(repo, &tag, &digest).await?;
        }
        (self.progress)(&format!(
            "{}:{tag} {digest}{}",
            repo.dest,
            if mirrored.new {
                " copied"
            } else {
                " up to date"
            }
        ));
        Ok(())
    }

    /// Tags of `dest` move only once their manifest passes the policy.
    fn verifies_on_ingest(&self, dest: &RepoName) -> bool {
        self.verify
            || self.state.verifier.trust.policy_for(dest.as_str())
                == crate::verify::PolicyMode::Enforce
    }

    /// Moves `tag` onto `digest`, already stored with its attachments, when the
    /// policy's evaluation passes; fails the item with what is missing otherwise.
    async fn publish_verified(
        &self,
        repo: &Repo,
        tag: &Tag,
        digest: &Digest,
    ) -> anyhow::Result<()> {
        let reference = Reference::Digest(digest.clone());
        let evaluation = crate::verify::policy::evaluate(self.state, &repo.dest, &reference)
            .await?
            .ok_or_else(|| anyhow::anyhow!("manifest {digest} is gone"))?;
        if !evaluation.passes {
            self.count(|r| r.tags_refused += 1);
            anyhow::bail!(
                "not published ({}:{tag} stays as it was): {digest} fails verification: {}",
                repo.dest,
                evaluation.missing.join("; ")
            );
        }
        let stored = self
            .state
            .meta
            .get_manifest(&repo.dest, &reference)
            .await?
            .ok_or_else(|| anyhow::anyhow!("manifest {digest} is gone"))?;
        let parsed = parse_manifest(&stored.content, Some(&stored.media_type))
            .map_err(|e| anyhow::anyhow!("manifest {digest}: {e}"))?;
        // The same child edges `manifest` stored: the selected platforms.
        let mut children: Vec<Digest> = parsed
            .children
            .iter()
            .filter(|c| self.plan.selects_entry(&parsed, c))
            .map(|c| c.digest.clone())
            .collect();
        children.sort();
        children.dedup();
        let put = ManifestPut {
            children,
            tags: vec![tag.clone()],
            ..ManifestPut::derived(repo.dest.clone(), digest.clone(), &parsed, stored.content)
        };
        self.registry
            .put_manifest(&put)
            .await
            .with_context(|| format!("moving {}:{tag} to {digest}", repo.dest))?;
        self.count(|r| r.tags_verified += 1);
        Ok(())
    }

    async fn local_tag(&self, repo: &Repo, tag: &Tag) -> anyhow::Result<Option<Digest>> {
        Ok(self
            .state
            .meta
            .get_manifest(&repo.dest, &Reference::Tag(tag.clone()))
            .await?
            .map(|m| m.digest))
    }

    /// Mirrors the manifest `digest` (and `tag` onto it): its selected children and its
    /// blobs first, then the manifest, then its attachments. `depth` counts attachment
    /// levels.
    fn manifest<'s>(
        &'s self,
        repo: &'s Repo,
        digest: &'s Digest,
        tag: Option<&'s Tag>,
        depth: u32,
    ) -> BoxFuture<'s, anyhow::Result<Mirrored>> {
        async move {
            let local = self
                .state
                .meta
                .get_manifest(&repo.dest, &Reference::Digest(digest.clone()))
                .await?;
            let present = local.is_some();
            let (content, media_type) = match local {
                Some(m) => (m.content, Some(m.media_type)),
                None => (self.upstream.manifest(&repo.upstream, digest).await?, None),
            };
            let parsed = parse_manifest(&content, media_type.as_deref())
                .map_err(|e| anyhow::anyhow!("manifest {digest}: {e}"))?;

            let mut children = Vec::new();
            let mut new_child = false;
            for child in &parsed.children {
                if !self.plan.selects_entry(&parsed, child) {
                    self.count(|r| r.platforms_skipped += 1);
                    continue;
                }
                let m = self.manifest(repo, &child.digest, None, depth).await?;
                new_child |= m.new;
                children.push(child.digest.clone());
            }
            children.sort();
            children.dedup();

            let blobs = parsed.required_blobs();
            if !present {
                let sizes = parsed
                    .config
                    .iter()
                    .chain(parsed.layers.iter())
                    .map(|d| (d.digest.clone(), d.size));
                let sizes: std::collections::HashMap<_, _> = sizes.collect();
                // Downloads are bounded by `transfers`; the lookups before them are cheap.
                let copies: Vec<_> = blobs
                    .iter()
                    .map(|b| self.blob(repo, b, sizes.get(b).copied(), Vouched::ByManifest))
                    .collect();
                futures::future::try_join_all(copies).await?;
            }

            let tag_moves = match tag {
                Some(t) => self.local_tag(repo, t).await?.as_ref() != Some(digest),
                None => false,
            };
            if !present || new_child || tag_moves {
                let put = ManifestPut {
                    blobs,
                    children: children.clone(),
                    tags: tag.cloned().into_iter().collect(),
                    ..ManifestPut::derived(repo.dest.clone(), digest.clone(), &parsed, content)
                };
                self.registry
                    .put_manifest(&put)
                    .await
                    .with_context(|| format!("storing manifest {digest}"))?;
            }
            if present {
                self.count(|r| r.manifests_present += 1);
            } else {
                self.count(|r| r.manifests_copied += 1);
            }

            if self.attachments_inline && depth < MAX_ATTACHMENT_DEPTH {
                self.attachments(repo, digest, depth + 1).await?;
            }
            Ok(Mirrored {
                new: !present,
                children,
            })
        }
        .boxed()
    }

    /// Every attachment of `subject`: its cosign tags and referrers fallback tag (from
    /// upstream's tag list), its OCI referrers, its atomic signatures.
    async fn attachments(&self, repo: &Repo, subject: &Digest, depth: u32) -> anyhow::Result<()> {
        if !repo
            .visited
            .lock()
            .expect("visited lock")
            .insert(subject.clone())
        {
            return Ok(());
        }
        let mut seen: HashSet<Digest> = HashSet::new();
        let tags: Vec<&String> = repo
            .attachment_tags
            .iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, t)| t)
            .collect();
        for tag in tags {
            let wanted = match AttachmentTag::parse(tag) {
                Some(AttachmentTag::Cosign { kind, .. }) => self.plan.copies_attachment(kind),
                _ => self.plan.copies_fallback_tag(),
            };
            if !wanted {
                continue;
            }
            self.count(|r| r.attachments += 1);
            let parsed: Tag = tag
                .parse()
                .map_err(|e| anyhow::anyhow!("tag {tag:?}: {e}"))?;
            let digest = self.upstream.tag_digest(&repo.upstream, tag).await?;
            let m = self.manifest(repo, &digest, Some(&parsed), depth).await?;
            seen.insert(digest);
            seen.extend(m.children);
        }
        for (referrer, kind) in self.upstream.referrers(&repo.upstream, subject).await? {
            if self.plan.copies_attachment(kind) && seen.insert(referrer.clone()) {
                self.count(|r| r.attachments += 1);
                self.manifest(repo, &referrer, None, depth).await?;
            }
        }
        if self.plan.copies_atomic_signatures() {
            // The extension where upstream has it, else the lookaside store if any.
            let signatures = if self.signatures {
                self.upstream
                    .atomic_signatures(&repo.upstream, subject)
                    .await?
            } else {
                self.upstream
                    .lookaside_signatures(&repo.upstream, subject)
                    .await?
            };
            for (id, content) in signatures {
                let stored = self
                    .state
                    .registry
                    .put_atomic_signature(&repo.dest, subject, &AtomicSignature { id, content })
                    .await
                    .with_context(|| format!("atomic signature of {subject}"))?;
                match stored {
                    SignatureStored::Created => self.count(|r| r.atomic_signatures_copied += 1),
                    SignatureStored::AlreadyPresent => {
                        self.count(|r| r.atomic_signatures_present += 1)
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes `digest` a blob of the repository: already there, linked from another
    /// repository, or streamed from upstream and verified on the way in.
    /// Makes `digest` a blob of the destination repository: already there, linked from a
    /// copy the registry holds for another repository, or downloaded. A copy held
    /// elsewhere is reused only when upstream vouches that the mirrored repository holds
    /// the digest (`vouched`), so a mirrored name never becomes a way to read a blob of
    /// a repository the caller may not pull.
    async fn blob(
        &self,
        repo: &Repo,
        digest: &Digest,
        size: Option<u64>,
        vouched: Vouched,
    ) -> anyhow::Result<()> {
        let meta = &self.state.meta;
        if meta.blob_in_repository(&repo.dest, digest).await?.is_some() {
            self.count(|r| r.blobs_present += 1);
            return Ok(());
        }
        if vouched == Vouched::No && !self.upstream.holds_blob(&repo.upstream, digest).await? {
            return Err(anyhow::Error::new(super::upstream::NotUpstream(
                digest.clone(),
            )));
        }
        if meta.blob_size(digest).await?.is_some()
            && self
                .state
                .registry
                .mount_blob(&repo.dest, digest)
                .await?
                .is_some()
        {
            self.count(|r| r.blobs_mounted += 1);
            return Ok(());
        }
        let _permit = self.transfers.acquire().await?;
        // The whole transfer is retried: a body can break off midway (the store keeps
        // nothing of a failed one).
        let stored = self
            .upstream
            .retry()
            .run("blob", || async {
                let body = self.upstream.blob(&repo.upstream, digest).await?;
                self.state
                    .uploads
                    .put_monolithic(&repo.dest, digest, body)
                    .await
                    .with_context(|| format!("blob {digest}"))
            })
            .await?;
        if let Some(size) = size.filter(|s| *s != stored) {
            tracing::warn!(%digest, declared = size, stored, "upstream blob size differs from its descriptor");
        }
        self.count(|r| {
            r.blobs_copied += 1;
            r.bytes_copied += stored;
        });
        crate::ops::metrics::global()
            .sync_bytes
            .with_label_values(&[self.report_job().as_str()])
            .inc_by(stored);
        (self.progress)(&format!("{}: blob {digest} ({stored} bytes)", repo.dest));
        Ok(())
    }
}
