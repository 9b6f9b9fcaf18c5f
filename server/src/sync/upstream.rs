//! The upstream registry as sync sees it.
//!
//! The distribution API goes through `oci-client`, which also answers
//! `WWW-Authenticate` challenges (Basic, and the bearer-token flow with anonymous
//! tokens when no credentials are configured). Manifests are pulled raw, so their bytes
//! are exactly what upstream served, and checked against the digest asked for.
//! The signatures extension (`/extensions/v2/...`) is plain HTTP with Basic credentials.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use futures::stream::BoxStream;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use signet_storage::digest::Digest;
use signet_storage::manifest::SUPPORTED_MEDIA_TYPES;

use super::job::SyncJob;

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct Upstream {
    client: Client,
    http: reqwest::Client,
    auth: RegistryAuth,
    /// `host[:port]`, as references name the registry.
    registry: String,
    /// `scheme://host[:port]`.
    base_url: String,
    /// Retries per request of a transient failure, and the first backoff.
    retries: u32,
    retry_base: Duration,
    /// Requests retried so far.
    retried: AtomicU64,
}

/// A blob body as it arrives.
pub type BlobStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

impl Upstream {
    pub fn new(job: &SyncJob) -> anyhow::Result<Self> {
        let url = job.upstream.trim_end_matches('/');
        let (protocol, registry) = if let Some(host) = url.strip_prefix("http://") {
            (ClientProtocol::Http, host)
        } else if let Some(host) = url.strip_prefix("https://") {
            (ClientProtocol::Https, host)
        } else {
            bail!(
                "job {}: upstream {url:?} must start with http:// or https://",
                job.name
            );
        };
        if registry.is_empty() || registry.contains('/') {
            bail!(
                "job {}: upstream {url:?} must be scheme://host[:port]",
                job.name
            );
        }
        let client = Client::new(ClientConfig {
            protocol,
            read_timeout: Some(std::time::Duration::from_secs(120)),
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            ..Default::default()
        });
        let auth = if job.username.is_empty() {
            RegistryAuth::Anonymous
        } else {
            RegistryAuth::Basic(job.username.clone(), job.password.clone())
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Self {
            client,
            http,
            auth,
            registry: registry.to_string(),
            base_url: url.to_string(),
            retries: job.retries,
            retry_base: Duration::from_millis(job.retry_base_ms.max(1)),
            retried: AtomicU64::new(0),
        })
    }

    /// Requests retried so far (after a transient failure).
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been retried
    /// `retries` times; waits `retry_base * 2^n` (at most [`MAX_BACKOFF`], or what a
    /// 429's `Retry-After` asks where the answer is visible) between attempts.
    pub async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut n = 0u32;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if n < self.retries && is_transient(&e) => {
                    let backoff = self
                        .retry_base
                        .saturating_mul(1u32 << n.min(16))
                        .min(MAX_BACKOFF);
                    // A 429 whose Retry-After oci-client does not pass on waits at
                    // least a second.
                    let wait = retry_after(&e).unwrap_or(if throttled(&e) {
                        backoff.max(Duration::from_secs(1))
                    } else {
                        backoff
                    });
                    n += 1;
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(what, attempt = n, wait_ms = wait.as_millis() as u64, error = %format!("{e:#}"), "sync: retrying a transient upstream failure");
                    tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
                }
                Err(e) if n > 0 => return Err(e.context(format!("after {n} retries"))),
                Err(e) => return Err(e),
            }
        }
    }

    fn tag_ref(&self, repo: &str, tag: &str) -> Reference {
        Reference::with_tag(self.registry.clone(), repo.to_string(), tag.to_string())
    }

    fn digest_ref(&self, repo: &str, digest: &Digest) -> Reference {
        Reference::with_digest(self.registry.clone(), repo.to_string(), digest.to_string())
    }

    /// Every repository of the upstream catalog.
    pub async fn catalog(&self) -> anyhow::Result<Vec<String>> {
        let any = self.tag_ref("library/any", "latest");
        let mut out: Vec<String> = Vec::new();
        loop {
            let last = out.last().cloned();
            let page = self
                .retrying("catalog", || async {
                    self.client
                        .catalog(&any, &self.auth, Some(1000), last.as_deref())
                        .await
                        .context("upstream catalog")
                })
                .await?;
            let n = page.repositories.len();
            let before = out.len();
            out.extend(page.repositories);
            out.sort();
            out.dedup();
            // Registries that ignore `n` return everything at once.
            if n < 1000 || out.len() == before {
                return Ok(out);
            }
        }
    }

    /// Every tag of `repo`.
    pub async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
        let r = self.tag_ref(repo, "latest");
        let list = self
            .retrying("tags", || async {
                self.client
                    .list_tags(&r, &self.auth, None, None)
                    .await
                    .with_context(|| format!("upstream tags of {repo}"))
            })
            .await?;
        Ok(list.tags)
    }

    /// The digest `repo:tag` points at (a HEAD request).
    pub async fn tag_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Digest> {
        let r = self.tag_ref(repo, tag);
        let d = self
            .retrying("tag", || async {
                self.client
                    .fetch_manifest_digest(&r, &self.auth)
                    .await
                    .with_context(|| format!("upstream HEAD {repo}:{tag}"))
            })
            .await?;
        d.parse()
            .map_err(|e| anyhow!("upstream digest {d:?} of {repo}:{tag}: {e}"))
    }

    /// The manifest `digest` exactly as upstream serves it, checked against the digest.
    pub async fn manifest(&self, repo: &str, digest: &Digest) -> anyhow::Result<Bytes> {
        let r = self.digest_ref(repo, digest);
        let (bytes, _) = self
            .retrying("manifest", || async {
                self.client
                    .pull_manifest_raw(&r, &self.auth, &SUPPORTED_MEDIA_TYPES)
                    .await
                    .with_context(|| format!("upstream manifest {repo}@{digest}"))
            })
            .await?;
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            bail!("upstream manifest {repo}@{digest} hashes to {actual}");
        }
        Ok(bytes)
    }

    /// A blob's bytes as a stream (verified by the blob store as they land). Not
    /// retried here: the caller retries the whole transfer (a stream can fail midway).
    pub async fn blob(&self, repo: &str, digest: &Digest) -> anyhow::Result<BlobStream> {
        let d = digest.to_string();
        let sized = self
            .client
            .pull_blob_stream(&self.digest_ref(repo, digest), d.as_str())
            .await
            .with_context(|| format!("upstream blob {repo}@{digest}"))?;
        Ok(sized.stream)
    }

    /// Referrers of `digest` through the referrers API, or — where upstream has none —
    /// the entries of its fallback tag `<alg>-<hex>`.
    pub async fn referrers(&self, repo: &str, digest: &Digest) -> anyhow::Result<Vec<Digest>> {
        let r = self.digest_ref(repo, digest);
        let index = self
            .retrying("referrers", || async {
                self.client
                    .pull_referrers(&r, None)
                    .await
                    .with_context(|| format!("upstream referrers of {repo}@{digest}"))
            })
            .await?;
        index
            .manifests
            .iter()
            .map(|m| {
                m.digest
                    .parse::<Digest>()
                    .map_err(|e| anyhow!("referrer {:?}: {e}", m.digest))
            })
            .collect()
    }

    /// Whether `GET /v2/` advertises the signatures extension
    /// (`X-Registry-Supports-Signatures: 1`, on a 200 or a 401).
    pub async fn supports_signatures(&self) -> anyhow::Result<bool> {
        let resp = self
            .retrying("base", || async {
                let resp = self
                    .basic(self.http.get(format!("{}/v2/", self.base_url)))
                    .send()
                    .await
                    .context("upstream GET /v2/")?;
                check_transient(&resp, "upstream GET /v2/")?;
                Ok(resp)
            })
            .await?;
        Ok(resp
            .headers()
            .get("X-Registry-Supports-Signatures")
            .is_some_and(|v| v.as_bytes() == b"1"))
    }

    /// Atomic signatures of `repo@digest`: (id, content).
    pub async fn atomic_signatures(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> anyhow::Result<Vec<(String, Bytes)>> {
        #[derive(Deserialize)]
        struct Listing {
            #[serde(default)]
            signatures: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "type")]
            kind: String,
            name: String,
            content: String,
        }
        let url = format!("{}/extensions/v2/{repo}/signatures/{digest}", self.base_url);
        let listing = self
            .retrying("signatures", || async {
                let resp = self
                    .basic(self.http.get(&url))
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Ok(Listing {
                        signatures: Vec::new(),
                    });
                }
                check_transient(&resp, &url)?;
                if !resp.status().is_success() {
                    bail!("GET {url}: {}", resp.status());
                }
                resp.json::<Listing>()
                    .await
                    .with_context(|| format!("GET {url}"))
            })
            .await?;
        let mut out = Vec::new();
        for s in listing
            .signatures
            .into_iter()
            .filter(|s| s.kind == "atomic")
        {
            let Some((name_digest, id)) = s.name.rsplit_once('@') else {
                bail!("{url}: signature name {:?} is not <digest>@<id>", s.name);
            };
            if name_digest != digest.to_string() {
                bail!("{url}: signature {:?} names another manifest", s.name);
            }
            let content = base64::engine::general_purpose::STANDARD
                .decode(s.content.as_bytes())
                .with_context(|| format!("{url}: signature content"))?;
            out.push((id.to_ascii_lowercase(), Bytes::from(content)));
        }
        Ok(out)
    }

    fn basic(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            RegistryAuth::Basic(u, p) => req.basic_auth(u, Some(p)),
            _ => req,
        }
    }
}

/// A transient status (5xx, 429) as an error the retry loop recognises.
fn check_transient(resp: &reqwest::Response, what: &str) -> anyhow::Result<()> {
    let status = resp.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        return Err(anyhow::Error::new(Transient {
            status: status.as_u16(),
            retry_after: after.map(Duration::from_secs),
        })
        .context(what.to_string()));
    }
    Ok(())
}

/// An upstream answer worth retrying, with its `Retry-After`.
#[derive(Debug)]
struct Transient {
    status: u16,
    retry_after: Option<Duration>,
}

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream answered {}", self.status)
    }
}

impl std::error::Error for Transient {}

fn throttled(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<Transient>()
            .is_some_and(|t| t.status == 429)
            || matches!(
                c.downcast_ref::<oci_client::errors::OciDistributionError>(),
                Some(oci_client::errors::OciDistributionError::ServerError { code: 429, .. })
            )
    }) || format!("{e:#}").contains("429 Too Many Requests")
}

fn retry_after(e: &anyhow::Error) -> Option<Duration> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Transient>())
        .and_then(|t| t.retry_after)
}

/// Connection errors, timeouts, broken streams, 5xx and 429 are worth retrying;
/// anything else (404, a digest mismatch, a refused credential) is not.
pub fn is_transient(e: &anyhow::Error) -> bool {
    for cause in e.chain() {
        if cause.downcast_ref::<Transient>().is_some() {
            return true;
        }
        if let Some(oci) = cause.downcast_ref::<oci_client::errors::OciDistributionError>() {
            use oci_client::errors::OciDistributionError as E;
            match oci {
                E::ServerError { code, .. } => return *code >= 500 || *code == 429,
                E::RequestError(r) => {
                    return r.is_connect() || r.is_timeout() || r.is_body() || r.is_request()
                }
                E::IoError(_) => return true,
                _ => {}
            }
        }
        if let Some(r) = cause.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() || r.is_body() || r.is_request() {
                return true;
            }
            if let Some(status) = r.status() {
                return status.is_server_error() || status.as_u16() == 429;
            }
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
    }
    // oci-client reports some statuses only as text (a HEAD has no error body).
    let text = format!("{e:#}");
    [
        "500 Internal Server Error",
        "502 Bad Gateway",
        "503 Service Unavailable",
        "504 Gateway Timeout",
        "429 Too Many Requests",
        "connection closed",
        "connection reset",
        "error sending request",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(retries: u32) -> Upstream {
        Upstream::new(&SyncJob {
            name: "t".into(),
            upstream: "http://127.0.0.1:9".into(),
            repositories: vec!["a".into()],
            retries,
            retry_base_ms: 1,
            ..Default::default()
        })
        .unwrap()
    }

    fn transient(status: u16) -> anyhow::Error {
        anyhow::Error::new(Transient {
            status,
            retry_after: None,
        })
        .context("GET x")
    }

    #[test]
    fn transient_failures_are_recognised() {
        use oci_client::errors::OciDistributionError as E;
        assert!(is_transient(&transient(503)));
        assert!(throttled(&transient(429)));
        let server = |code| {
            anyhow::Error::new(E::ServerError {
                code,
                url: "u".into(),
                message: String::new(),
            })
            .context("upstream manifest")
        };
        assert!(is_transient(&server(502)));
        assert!(is_transient(&server(429)));
        assert!(!is_transient(&server(404)));
        assert!(!is_transient(&server(401)));
        assert!(!is_transient(&anyhow!("upstream manifest x hashes to y")));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_transient(&anyhow::Error::new(io).context("blob")));
    }

    #[tokio::test]
    async fn retries_are_bounded_and_counted() {
        let u = upstream(3);
        let mut calls = 0;
        let r: anyhow::Result<()> = u
            .retrying("x", || {
                calls += 1;
                async { Err(transient(503)) }
            })
            .await;
        assert!(format!("{:#}", r.unwrap_err()).contains("after 3 retries"));
        assert_eq!(calls, 4);
        assert_eq!(u.retried(), 3);

        let mut calls = 0;
        let r: anyhow::Result<u32> = u
            .retrying("x", || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(transient(502))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(u.retried(), 5);

        // Permanent failures are not retried.
        let mut calls = 0;
        let r: anyhow::Result<()> = u
            .retrying("x", || {
                calls += 1;
                async { Err(anyhow!("404 not found")) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
