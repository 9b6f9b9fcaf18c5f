//! Pull-through: local repositories under a configured prefix (`[[sync.pull_through]]`)
//! are filled from an upstream registry when a pull misses.
//!
//! A manifest GET/HEAD of `<prefix>/<name>` that Signet does not hold, or a tag not
//! checked upstream for `tag_ttl_secs`, is resolved upstream and copied the way a sync
//! run copies an item: selected children and blobs first, byte-exact manifest, tag
//! moved, all in the manifest's transaction (so an accepted manifest never lacks a
//! blob, and a pull answered from the cache is what upstream served). Its attachments
//! follow in the background (at once, before the answer, where the trust policy of the
//! repository is `enforce`, so the policy sees them). A blob GET that misses is copied
//! from upstream (verified) before it is served. When upstream cannot be reached, what
//! is cached is served; without a cached copy the pull is answered `502 UNAVAILABLE`.
//!
//! The middleware runs after authentication (only a caller who may pull triggers a
//! fetch) and before the policy check (which then judges what was fetched).
//!
//! What a pull may make Signet store and ask is bounded: a blob asked for by digest is
//! linked from a copy held for another repository only once upstream answers that the
//! mirrored repository holds it (`HEAD`), so a made-up name under the prefix reads
//! nothing another tenant stored; a name or tag upstream lacks is remembered for
//! `negative_ttl_secs` and answered 404 without asking again; `max_bytes` and
//! `max_repositories` cap what the prefix may hold (a fetch beyond them is refused,
//! `403 DENIED`, while cached content is still served); and what a route remembers is
//! bounded in size (`REMEMBERED` entries each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::web;
use serde::{Deserialize, Serialize};
use signet_storage::digest::Digest;
use signet_storage::names::{Reference, RepoName};

use super::expiring::Expiring;
use super::job::SyncJob;
use super::plan::Plan;
use super::runner::OnDemand;
use super::source::{self, Source};
use super::upstream::is_not_found;
use crate::error::ApiError;
use crate::request::Downstream;
use crate::request::{self, target_of, Area};
use crate::state::AppState;
use crate::verify::PolicyMode;

/// One `[[sync.pull_through]]` entry. Its `Debug` hides the password.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PullThroughConfig {
    /// Local repositories `<prefix>/<name>` are filled from `<name>` upstream.
    pub prefix: String,
    /// `http://host:port` or `https://host`.
    pub upstream: String,
    /// A PEM file of CA certificates trusted for an `https` upstream.
    pub ca_file: String,
    pub username: String,
    pub password: String,
    /// Seconds a tag is served from the cache before upstream is asked again where it
    /// points.
    pub tag_ttl_secs: u64,
    /// `os/arch[/variant]` of an index's children copied with it; empty: every one.
    pub platforms: Vec<String>,
    /// Attachment kinds copied (as for sync jobs); empty: all.
    pub attachments: Vec<String>,
    /// Blob downloads in flight per fetch.
    pub concurrency: usize,
    /// Seconds a name, tag or blob upstream lacks is answered 404 without asking again.
    pub negative_ttl_secs: u64,
    /// Most blob bytes the repositories under the prefix may hold; 0: no limit.
    pub max_bytes: u64,
    /// Most repositories the prefix may hold; 0: no limit.
    pub max_repositories: u64,
}

impl Default for PullThroughConfig {
    fn default() -> Self {
        PullThroughConfig {
            prefix: String::new(),
            upstream: String::new(),
            ca_file: String::new(),
            username: String::new(),
            password: String::new(),
            tag_ttl_secs: 300,
            platforms: Vec::new(),
            attachments: Vec::new(),
            concurrency: 4,
            negative_ttl_secs: 60,
            max_bytes: 0,
            max_repositories: 0,
        }
    }
}

impl std::fmt::Debug for PullThroughConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullThroughConfig")
            .field("prefix", &self.prefix)
            .field("upstream", &self.upstream)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("tag_ttl_secs", &self.tag_ttl_secs)
            .field("platforms", &self.platforms)
            .field("attachments", &self.attachments)
            .field("negative_ttl_secs", &self.negative_ttl_secs)
            .field("max_bytes", &self.max_bytes)
            .field("max_repositories", &self.max_repositories)
            .finish_non_exhaustive()
    }
}

impl PullThroughConfig {
    /// The settings as a sync job: what the upstream client and the copying code read.
    /// A pull waits for it, so transient failures are retried briefly.
    pub fn as_job(&self) -> SyncJob {
        SyncJob {
            name: format!("pull-through:{}", self.prefix),
            upstream: self.upstream.clone(),
            ca_file: self.ca_file.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            repositories: vec!["**".into()],
            platforms: self.platforms.clone(),
            attachments: self.attachments.clone(),
            concurrency: self.concurrency.max(1),
            retries: 2,
            retry_base_ms: 100,
            ..Default::default()
        }
    }
}

/// Entries each route remembers at most, per kind (checked tags, absent names).
const REMEMBERED: usize = 10_000;

type Key = (String, String);

struct Route {
    prefix: String,
    job: SyncJob,
    upstream: Arc<dyn Source>,
    /// When each (repository, tag) was last resolved upstream.
    checked: Expiring<Key>,
    /// (repository, reference) upstream answered it does not have.
    absent: Expiring<Key>,
    max_bytes: u64,
    max_repositories: u64,
}

impl Route {
    /// The copying code, for one repository of this route.
    fn fetcher<'a>(
        &'a self,
        state: &'a AppState,
        upstream_repo: &'a str,
        dest: &'a RepoName,
    ) -> OnDemand<'a> {
        OnDemand {
            state,
            job: &self.job,
            upstream: self.upstream.clone(),
            upstream_repo,
            dest,
        }
    }
}

/// The pull-through routes of a server, with what it remembers between pulls.
#[derive(Default)]
pub struct PullThrough {
    routes: Vec<Route>,
    /// One fetch per (repository, reference) at a time: concurrent pulls of one missing
    /// image wait for the first instead of downloading it again.
    inflight: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl PullThrough {
    /// Checks every entry (prefix, upstream URL, CA file, platforms, attachments).
    pub fn new(configs: &[PullThroughConfig]) -> anyhow::Result<PullThrough> {
        let mut routes = Vec::new();
        for config in configs {
            let prefix = config.prefix.trim_matches('/').to_string();
            prefix
                .parse::<RepoName>()
                .map_err(|e| anyhow::anyhow!("pull-through prefix {:?}: {e}", config.prefix))?;
            if routes.iter().any(|r: &Route| {
                r.prefix == prefix
                    || r.prefix.starts_with(&format!("{prefix}/"))
                    || prefix.starts_with(&format!("{}/", r.prefix))
            }) {
                anyhow::bail!("pull-through prefix {prefix:?} overlaps another");
            }
            let job = config.as_job();
            Plan::new(&job)?;
            routes.push(Route {
                upstream: source::open_registry(&job)?,
                prefix,
                job,
                checked: Expiring::new(Duration::from_secs(config.tag_ttl_secs), REMEMBERED),
                absent: Expiring::new(Duration::from_secs(config.negative_ttl_secs), REMEMBERED),
                max_bytes: config.max_bytes,
                max_repositories: config.max_repositories,
            });
        }
        Ok(PullThrough {
            routes,
            ..Default::default()
        })
    }

    pub fn is_enabled(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The route of a local repository, and the upstream repository it mirrors.
    fn route<'s, 'r>(&'s self, repo: &'r str) -> Option<(&'s Route, &'r str)> {
        self.routes.iter().find_map(|r| {
            repo.strip_prefix(r.prefix.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|name| !name.is_empty())
                .map(|name| (r, name))
        })
    }

    /// Runs `work` once any fetch of `key` going on in this process has finished;
    /// other fetches of `key` wait for this one.
    async fn one_at_a_time<T>(&self, key: &Key, work: impl std::future::Future<Output = T>) -> T {
        let lock = self
            .inflight
            .lock()
            .expect("inflight lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        let out = work.await;
        drop(guard);
        let mut inflight = self.inflight.lock().expect("inflight lock");
        // Ours and the map's: nobody else waits.
        if Arc::strong_count(&lock) <= 2 {
            inflight.remove(key);
        }
        out
    }

    /// Refuses a fetch that would grow the prefix beyond its quota.
    async fn within_quota(
        &self,
        state: &AppState,
        route: &Route,
        repo: &RepoName,
    ) -> Result<(), ApiError> {
        if route.max_bytes == 0 && route.max_repositories == 0 {
            return Ok(());
        }
        let prefix: RepoName = route.prefix.parse().map_err(ApiError::internal)?;
        let used = state
            .meta
            .usage_under(&prefix)
            .await
            .map_err(ApiError::from)?;
        let over = if route.max_bytes > 0 && used.bytes >= route.max_bytes {
            Some(format!("{} of {} bytes held", used.bytes, route.max_bytes))
        } else if route.max_repositories > 0
            && used.repositories >= route.max_repositories
            && !state
                .meta
                .repository_exists(repo)
                .await
                .map_err(ApiError::from)?
        {
            Some(format!(
                "{} of {} repositories held",
                used.repositories, route.max_repositories
            ))
        } else {
            None
        };
        let Some(over) = over else {
            return Ok(());
        };
        count_refusal(&route.prefix, "quota");
        tracing::warn!(repository = %repo, prefix = %route.prefix, %over, "pull-through: quota reached");
        Err(ApiError::QuotaExceeded(format!(
            "the pull-through quota of {} is reached ({over})",
            route.prefix
        )))
    }

    /// Makes a manifest pull of `repo` answerable: fetched from upstream when missing or
    /// when its tag is due for a check. Repositories outside every prefix are untouched.
    pub async fn manifest(
        &self,
        state: &Arc<AppState>,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(), ApiError> {
        let Some((route, upstream_repo)) = self.route(repo.as_str()) else {
            return Ok(());
        };
        let key = (repo.to_string(), reference.to_string());
        if route.absent.fresh(&key) {
            count_refusal(&route.prefix, "absent-upstream");
            return Ok(());
        }
        let work = self.resolve(state, route, upstream_repo, repo, reference, &key);
        self.one_at_a_time(&key, work).await
    }

    async fn resolve(
        &self,
        state: &Arc<AppState>,
        route: &Route,
        upstream_repo: &str,
        repo: &RepoName,
        reference: &Reference,
        key: &Key,
    ) -> Result<(), ApiError> {
        let local = state
            .meta
            .get_manifest(repo, reference)
            .await
            .map_err(ApiError::internal)?
            .map(|m| m.digest);
        let (digest, tag) = match reference {
            Reference::Digest(d) => {
                if local.is_some() {
                    return Ok(());
                }
                (d.clone(), None)
            }
            Reference::Tag(t) => {
                if local.is_some() && route.checked.fresh(key) {
                    return Ok(());
                }
                match route.upstream.tag_digest(upstream_repo, t.as_str()).await {
                    Ok(d) if local.as_ref() == Some(&d) => {
                        route.checked.mark(key.clone());
                        return Ok(());
                    }
                    Ok(d) => (d, Some(t)),
                    // Unknown upstream: the cache answers (the handler's 404 if empty).
                    Err(e) if is_not_found(&e) => {
                        route.checked.mark(key.clone());
                        if local.is_none() {
                            route.absent.mark(key.clone());
                        }
                        return Ok(());
                    }
                    Err(e) => return self.unreachable(route, repo, reference, local.is_some(), e),
                }
            }
        };
        self.within_quota(state, route, repo).await?;
        // Where the policy enforces, it must see the attachments when it judges this
        // pull: they come first. Elsewhere they follow in the background.
        let inline = state.verifier.trust.policy_for(repo.as_str()) == PolicyMode::Enforce;
        let fetch = route.fetcher(state, upstream_repo, repo);
        let started = Instant::now();
        let outcome = fetch.manifest(&digest, tag, inline).await;
        count("manifest", &route.prefix, outcome.is_ok());
        match outcome {
            Ok(report) => {
                tracing::info!(
                    repository = %repo,
                    %reference,
                    %digest,
                    blobs = report.blobs_copied,
                    bytes = report.bytes_copied,
                    ms = started.elapsed().as_millis() as u64,
                    "pull-through: fetched from upstream"
                );
                if tag.is_some() {
                    route.checked.mark(key.clone());
                }
            }
            Err(e) if is_not_found(&e) && local.is_none() => {
                route.absent.mark(key.clone());
                return Ok(());
            }
            Err(e) => return self.unreachable(route, repo, reference, local.is_some(), e),
        }
        if !inline {
            background_attachments(state.clone(), route, upstream_repo, repo, digest);
        }
        Ok(())
    }

    /// Upstream failed: the cached copy answers if there is one.
    fn unreachable(
        &self,
        route: &Route,
        repo: &RepoName,
        reference: &Reference,
        cached: bool,
        e: anyhow::Error,
    ) -> Result<(), ApiError> {
        tracing::warn!(repository = %repo, %reference, upstream = %route.job.upstream, error = %format!("{e:#}"), "pull-through: upstream failed");
        if cached {
            Ok(())
        } else {
            Err(ApiError::UpstreamUnavailable(format!(
                "{} could not be fetched from {}",
                reference, route.job.upstream
            )))
        }
    }

    /// Makes a blob GET of `repo` answerable: copied from upstream when missing.
    pub async fn blob(
        &self,
        state: &Arc<AppState>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), ApiError> {
        let Some((route, upstream_repo)) = self.route(repo.as_str()) else {
            return Ok(());
        };
        let key = (repo.to_string(), digest.to_string());
        let work = async {
            let present = state
                .meta
                .blob_in_repository(repo, digest)
                .await
                .map_err(ApiError::internal)?;
            if present.is_some() {
                return Ok(());
            }
            if route.absent.fresh(&key) {
                count_refusal(&route.prefix, "absent-upstream");
                return Ok(());
            }
            self.within_quota(state, route, repo).await?;
            let outcome = route.fetcher(state, upstream_repo, repo).blob(digest).await;
            count("blob", &route.prefix, outcome.is_ok());
            match outcome {
                Ok(()) => Ok(()),
                // The handler answers BLOB_UNKNOWN.
                Err(e) if is_not_found(&e) => {
                    route.absent.mark(key.clone());
                    Ok(())
                }
                Err(e) => {
                    self.unreachable(route, repo, &Reference::Digest(digest.clone()), false, e)
                }
            }
        };
        self.one_at_a_time(&key, work).await
    }
}

/// A pull answered without asking upstream: `absent-upstream` (the negative cache) or
/// `quota`.
fn count_refusal(prefix: &str, reason: &str) {
    crate::ops::metrics::global()
        .pull_through_refused
        .with_label_values(&[prefix, reason])
        .inc();
}

fn count(kind: &str, prefix: &str, ok: bool) {
    crate::ops::metrics::global()
        .pull_through_fetches
        .with_label_values(&[prefix, kind, if ok { "ok" } else { "error" }])
        .inc();
}

/// Fetches the attachments of `digest` (and of its children) after the pull is answered.
fn background_attachments(
    state: Arc<AppState>,
    route: &Route,
    upstream_repo: &str,
    repo: &RepoName,
    digest: Digest,
) {
    let job = route.job.clone();
    let upstream = route.upstream.clone();
    let upstream_repo = upstream_repo.to_string();
    let repo = repo.clone();
    actix_web::rt::spawn(async move {
        let fetch = OnDemand {
            state: &state,
            job: &job,
            upstream,
            upstream_repo: &upstream_repo,
            dest: &repo,
        };
        match fetch.manifest(&digest, None, true).await {
            Ok(report) => {
                tracing::debug!(repository = %repo, %digest, attachments = report.attachments, "pull-through: attachments fetched")
            }
            Err(e) => {
                tracing::warn!(repository = %repo, %digest, error = %format!("{e:#}"), "pull-through: attachments could not be fetched")
            }
        }
    });
}

/// The middleware: GET/HEAD of a manifest or blob in a pull-through repository first
/// makes sure it is here.
pub async fn fetch_on_miss(
    req: ServiceRequest,
    next: impl Downstream,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        if let Some(pull) = req
            .app_data::<web::Data<PullThrough>>()
            .filter(|p| p.is_enabled())
            .cloned()
        {
            let state = req
                .app_data::<web::Data<AppState>>()
                .map(|s| s.clone().into_inner());
            let target = target_of(&req);
            if let (Some(request::Route::Repository { repo, area }), Some(state)) =
                (target.as_ref().map(|t| &t.route), state)
            {
                // Boxed: a fetch's state is kilobytes, and held inline it would be
                // moved and allocated with every request's future, fetching or not.
                match area {
                    Area::Manifest { reference, .. } => {
                        Box::pin(pull.manifest(&state, repo, reference)).await?;
                    }
                    Area::Blob(digest) => Box::pin(pull.blob(&state, repo, digest)).await?,
                    _ => {}
                }
            }
        }
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &str) -> PullThroughConfig {
        PullThroughConfig {
            prefix: prefix.into(),
            upstream: "http://127.0.0.1:1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn routes_by_prefix() {
        let p = PullThrough::new(&[config("hub"), config("/quay/io/")]).unwrap();
        assert_eq!(
            p.route("hub/library/nginx").map(|(_, n)| n),
            Some("library/nginx")
        );
        assert_eq!(
            p.route("quay/io/team/app")
                .map(|(r, n)| (r.prefix.as_str(), n)),
            Some(("quay/io", "team/app"))
        );
        assert!(p.route("hub").is_none());
        assert!(p.route("hubx/a").is_none());
        assert!(p.route("other/a").is_none());
        assert!(PullThrough::new(&[config("hub"), config("hub/x")]).is_err());
        assert!(PullThrough::new(&[config("Bad Prefix")]).is_err());
        assert!(PullThrough::new(&[PullThroughConfig {
            upstream: "ftp://h".into(),
            ..config("x")
        }])
        .is_err());
        let shown = format!(
            "{:?}",
            PullThroughConfig {
                password: "s3cret".into(),
                ..config("x")
            }
        );
        assert!(!shown.contains("s3cret"));
    }
}
