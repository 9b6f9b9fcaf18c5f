//! The upstream registry as sync sees it.
//!
//! The distribution API goes through `oci-client`, which also answers
//! `WWW-Authenticate` challenges (Basic, and the bearer-token flow with anonymous
//! tokens when no credentials are configured). Manifests are pulled raw, so their bytes
//! are exactly what upstream served, and checked against the digest asked for.
//! The signatures extension (`/extensions/v2/...`) is plain HTTP: Basic credentials
//! first, and where upstream answers with a Bearer challenge, a token from its realm
//! (fetched with the Basic credentials, or anonymously), remembered per scope.

use std::future::Future;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures::stream::BoxStream;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use signet_storage::attachments::{classify, AttachmentKind};
use signet_storage::digest::Digest;
use signet_storage::manifest::SUPPORTED_MEDIA_TYPES;

use super::job::SyncJob;
use super::retry::Retry;
use super::source::Source;

pub struct Upstream {
    client: Client,
    http: reqwest::Client,
    auth: RegistryAuth,
    /// `host[:port]`, as references name the registry.
    registry: String,
    /// `scheme://host[:port]`.
    base_url: String,
    /// The lookaside base of atomic signatures, without a trailing `/`.
    lookaside: Option<String>,
    retry: Retry,
    /// Bearer tokens for the extension calls, by scope.
    tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
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
        let ca_pem = if job.ca_file.is_empty() {
            None
        } else {
            let pem = std::fs::read(&job.ca_file)
                .with_context(|| format!("job {}: CA file {}", job.name, job.ca_file))?;
            // Parsed here so a file without a certificate fails the job at load, not
            // as a TLS error on every request.
            let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
            if certs.is_empty() {
                bail!(
                    "job {}: CA file {} is not PEM certificates",
                    job.name,
                    job.ca_file
                );
            }
            Some(pem)
        };
        let client = Client::new(ClientConfig {
            protocol,
            read_timeout: Some(std::time::Duration::from_secs(120)),
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            extra_root_certificates: ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            ..Default::default()
        });
        let auth = if job.username.is_empty() {
            RegistryAuth::Anonymous
        } else {
            RegistryAuth::Basic(job.username.clone(), job.password.clone())
        };
        let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120));
        if let Some(pem) = &ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build()?;
        let refusal = match &auth {
            RegistryAuth::Basic(user, _) => {
                format!("upstream refused the job's credentials (username {user:?})")
            }
            _ => "upstream requires credentials (the job has none)".to_string(),
        };
        Ok(Self {
            client,
            http,
            auth,
            registry: registry.to_string(),
            base_url: url.to_string(),
            lookaside: lookaside_base(job)?,
            retry: Retry::new(
                job.retries,
                Duration::from_millis(job.retry_base_ms),
                refusal,
            ),
            tokens: Default::default(),
        })
    }

    async fn retrying<T, F, Fut>(&self, what: &str, attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        self.retry.run(what, attempt).await
    }

    fn tag_ref(&self, repo: &str, tag: &str) -> Reference {
        Reference::with_tag(self.registry.clone(), repo.to_string(), tag.to_string())
    }

    fn digest_ref(&self, repo: &str, digest: &Digest) -> Reference {
        Reference::with_digest(self.registry.clone(), repo.to_string(), digest.to_string())
    }
}

#[async_trait]
impl Source for Upstream {
    fn retry(&self) -> &Retry {
        &self.retry
    }

    /// Every repository of the upstream catalog.
    async fn catalog(&self) -> anyhow::Result<Vec<String>> {
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
    async fn tags(&self, repo: &str) -> anyhow::Result<Vec<String>> {
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
    async fn tag_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Digest> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base_url);
        let scope = format!("repository:{repo}:pull");
        let accept = SUPPORTED_MEDIA_TYPES.join(", ");
        let d = self
            .retrying("tag", || async {
                let resp = self
                    .send_with_auth(reqwest::Method::HEAD, &url, &scope, Some(&accept))
                    .await?;
                check_status(&resp, &url)?;
                resp.headers()
                    .get("Docker-Content-Digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("HEAD {url}: no Docker-Content-Digest"))
            })
            .await?;
        d.parse()
            .map_err(|e| anyhow!("upstream digest {d:?} of {repo}:{tag}: {e}"))
    }

    /// The manifest `digest` exactly as upstream serves it, checked against the digest.
    async fn manifest(&self, repo: &str, digest: &Digest) -> anyhow::Result<Bytes> {
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

    /// Whether upstream's `repo` holds the blob `digest` (`HEAD`: 200 yes, 404 no).
    /// Sync and pull-through reuse a blob stored here for another repository only once
    /// upstream has said so: otherwise anyone who may pull a mirrored name could link any
    /// digest the registry holds.
    async fn holds_blob(&self, repo: &str, digest: &Digest) -> anyhow::Result<bool> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base_url);
        self.retrying("blob", || async {
            let resp = self
                .send_with_auth(
                    reqwest::Method::HEAD,
                    &url,
                    &format!("repository:{repo}:pull"),
                    None,
                )
                .await?;
            check_transient(&resp, &url)?;
            match resp.status() {
                s if s.is_success() => Ok(true),
                reqwest::StatusCode::NOT_FOUND => Ok(false),
                s => bail!("HEAD {url}: {s}"),
            }
        })
        .await
    }

    /// A blob's bytes as a stream (verified by the blob store as they land). Not
    /// retried here: the caller retries the whole transfer (a stream can fail midway).
    async fn blob(&self, repo: &str, digest: &Digest) -> anyhow::Result<BlobStream> {
        let d = digest.to_string();
        let sized = self
            .client
            .pull_blob_stream(&self.digest_ref(repo, digest), d.as_str())
            .await
            .with_context(|| format!("upstream blob {repo}@{digest}"))?;
        Ok(sized.stream)
    }

    /// Referrers of `digest` through the referrers API, or — where upstream has none —
    /// the entries of its fallback tag `<alg>-<hex>`; each with its kind, told from the
    /// artifact type and annotations the listing carries.
    async fn referrers(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> anyhow::Result<Vec<(Digest, AttachmentKind)>> {
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
                let digest = m
                    .digest
                    .parse::<Digest>()
                    .map_err(|e| anyhow!("referrer {:?}: {e}", m.digest))?;
                let annotations = m.annotations.clone().unwrap_or_default();
                let (kind, _) = classify(m.artifact_type.as_deref(), &annotations);
                Ok((digest, kind))
            })
            .collect()
    }

    /// Whether `GET /v2/` advertises the signatures extension
    /// (`X-Registry-Supports-Signatures: 1`, on a 200 or a 401).
    async fn supports_signatures(&self) -> anyhow::Result<bool> {
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
    async fn atomic_signatures(
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
                    .get_with_auth(&url, &format!("repository:{repo}:pull"))
                    .await?;
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

    /// The atomic signatures of `repo@digest` in the lookaside store: `signature-1`,
    /// `signature-2`, ... until one is missing. Each is named by its content's hash, so
    /// a rerun finds the ones it copied.
    async fn lookaside_signatures(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> anyhow::Result<Vec<(String, Bytes)>> {
        let Some(base) = &self.lookaside else {
            return Ok(Vec::new());
        };
        // `sha256:<hex>` is written `sha256=<hex>` in lookaside paths.
        let folder = format!("{base}/{repo}@{}", digest.to_string().replacen(':', "=", 1));
        let mut out = Vec::new();
        for index in 1..=MAX_LOOKASIDE_SIGNATURES {
            let location = format!("{folder}/signature-{index}");
            let content = if let Some(path) = location.strip_prefix("file://") {
                match tokio::fs::read(path).await {
                    Ok(bytes) => Bytes::from(bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e).with_context(|| format!("reading {path}")),
                }
            } else {
                let found = self
                    .retrying("lookaside signature", || async {
                        let resp = self.http.get(&location).send().await?;
                        if resp.status() == reqwest::StatusCode::NOT_FOUND {
                            return Ok(None);
                        }
                        check_transient(&resp, &location)?;
                        if !resp.status().is_success() {
                            bail!("GET {location}: {}", resp.status());
                        }
                        Ok(Some(
                            resp.bytes()
                                .await
                                .with_context(|| format!("GET {location}"))?,
                        ))
                    })
                    .await?;
                match found {
                    Some(bytes) => bytes,
                    None => break,
                }
            };
            let id = hex::encode(&Sha256::digest(&content)[..16]);
            out.push((id, content));
        }
        Ok(out)
    }
}

impl Upstream {
    /// `GET url` with Basic credentials (or a bearer token remembered for `scope`); on
    /// a Bearer challenge, fetches a token from the realm and tries once more.
    async fn get_with_auth(&self, url: &str, scope: &str) -> anyhow::Result<reqwest::Response> {
        self.send_with_auth(reqwest::Method::GET, url, scope, None)
            .await
    }

    /// `method url` (with `accept` as its `Accept` header), authenticated as
    /// [`Upstream::get_with_auth`] is.
    async fn send_with_auth(
        &self,
        method: reqwest::Method,
        url: &str,
        scope: &str,
        accept: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let remembered = self.tokens.lock().unwrap().get(scope).cloned();
        let request = || {
            let req = self.http.request(method.clone(), url);
            match accept {
                Some(accept) => req.header(reqwest::header::ACCEPT, accept),
                None => req,
            }
        };
        let first = match &remembered {
            Some(token) => request().bearer_auth(token),
            None => self.basic(request()),
        };
        let resp = first
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(challenge) = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer_challenge)
        else {
            return Ok(resp);
        };
        let token = self.fetch_token(&challenge, scope).await?;
        self.tokens
            .lock()
            .unwrap()
            .insert(scope.to_string(), token.clone());
        request()
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("{method} {url}"))
    }

    /// A token from the challenge's realm for `scope` (the challenge's own scope
    /// where it names one).
    async fn fetch_token(
        &self,
        challenge: &BearerChallenge,
        scope: &str,
    ) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = &challenge.service {
            query.push(("service", service));
        }
        query.push(("scope", challenge.scope.as_deref().unwrap_or(scope)));
        let realm = &challenge.realm;
        let resp = self
            .basic(self.http.get(realm).query(&query))
            .send()
            .await
            .with_context(|| format!("token request to {realm}"))?;
        check_status(
            &resp,
            &format!("token request to {realm} (credentials refused?)"),
        )?;
        let body: TokenResponse = resp
            .json()
            .await
            .with_context(|| format!("token response of {realm}"))?;
        let token = if body.token.is_empty() {
            body.access_token
        } else {
            body.token
        };
        if token.is_empty() {
            bail!("token response of {realm} holds no token");
        }
        Ok(token)
    }

    fn basic(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            RegistryAuth::Basic(u, p) => req.basic_auth(u, Some(p)),
            _ => req,
        }
    }
}

/// The parameters of a `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, PartialEq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            "scope" => scope = Some(value.to_string()),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(BearerChallenge {
        realm: realm.filter(|r| !r.is_empty())?,
        service,
        scope,
    })
}

/// An upstream answer that is no success, with its status and `Retry-After`: the one
/// error type this client makes of a status, which [`failure`] reads.
#[derive(Debug)]
pub struct UpstreamStatus {
    pub status: u16,
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for UpstreamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream answered {}", self.status)
    }
}

impl std::error::Error for UpstreamStatus {}

fn status_error(resp: &reqwest::Response, what: &str) -> anyhow::Error {
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    anyhow::Error::new(UpstreamStatus {
        status: resp.status().as_u16(),
        retry_after,
    })
    .context(what.to_string())
}

/// A transient status (5xx, 429) as an error the retry loop recognises; other statuses
/// are the caller's to judge.
fn check_transient(resp: &reqwest::Response, what: &str) -> anyhow::Result<()> {
    let status = resp.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(status_error(resp, what));
    }
    Ok(())
}

/// Any status but a success as an error.
fn check_status(resp: &reqwest::Response, what: &str) -> anyhow::Result<()> {
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(status_error(resp, what))
    }
}

/// What a failure talking to upstream means, told once from the error's causes (their
/// types, never their text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Upstream answered that the thing asked for does not exist (404, an OCI
    /// `*_UNKNOWN` error, a blob upstream does not hold).
    NotFound,
    /// Upstream refused the credentials, or their absence (401, a refused token).
    Refused,
    /// Upstream asked to slow down (429).
    Throttled,
    /// Worth retrying: a 5xx, a connection that failed or broke off, a timeout.
    Unavailable,
    /// A certificate upstream's CA does not vouch for: it stays so, no retry.
    Certificate,
    /// Anything else (a digest mismatch, a malformed answer).
    Other,
}

/// The meaning of `e` (see [`Failure`]).
pub fn failure(e: &anyhow::Error) -> Failure {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    let mut io = false;
    for cause in e.chain() {
        if cause.downcast_ref::<NotUpstream>().is_some() {
            return Failure::NotFound;
        }
        if let Some(s) = cause.downcast_ref::<UpstreamStatus>() {
            return by_status(s.status);
        }
        if let Some(oci) = cause.downcast_ref::<E>() {
            match oci {
                E::ImageManifestNotFoundError(_) => return Failure::NotFound,
                E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
                    return Failure::Refused
                }
                E::ServerError { code, .. } => return by_status(*code),
                E::RegistryError { envelope, .. } => {
                    let unknown = envelope.errors.iter().any(|err| {
                        matches!(
                            err.code,
                            C::ManifestUnknown | C::BlobUnknown | C::NameUnknown
                        )
                    });
                    if unknown {
                        return Failure::NotFound;
                    }
                }
                E::RequestError(r) => return by_request(r),
                E::IoError(_) => io = true,
                _ => {}
            }
        }
        if let Some(r) = cause.downcast_ref::<reqwest::Error>() {
            if untrusted_certificate(r) {
                return Failure::Certificate;
            }
            return by_request(r);
        }
        if let Some(inner) = cause.downcast_ref::<std::io::Error>() {
            if inner
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|t| matches!(t, rustls::Error::InvalidCertificate(_)))
            {
                return Failure::Certificate;
            }
            io = true;
        }
        if matches!(
            cause.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return Failure::Certificate;
        }
    }
    if io {
        Failure::Unavailable
    } else {
        Failure::Other
    }
}

fn by_status(status: u16) -> Failure {
    match status {
        404 => Failure::NotFound,
        401 | 403 => Failure::Refused,
        429 => Failure::Throttled,
        500..=599 => Failure::Unavailable,
        _ => Failure::Other,
    }
}

fn by_request(r: &reqwest::Error) -> Failure {
    if let Some(status) = r.status() {
        return by_status(status.as_u16());
    }
    if untrusted_certificate(r) {
        return Failure::Certificate;
    }
    if r.is_connect() || r.is_timeout() || r.is_body() || r.is_request() {
        Failure::Unavailable
    } else {
        Failure::Other
    }
}

/// Whether a request failed on a certificate the configured CAs do not vouch for
/// (rustls's error, somewhere below reqwest's).
fn untrusted_certificate(r: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(r);
    while let Some(c) = cause {
        if matches!(
            c.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(_))
        ) {
            return true;
        }
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if matches!(
                inner.downcast_ref::<rustls::Error>(),
                Some(rustls::Error::InvalidCertificate(_))
            ) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

/// How long a 429 asked to wait, where its answer is visible.
pub(super) fn retry_after(e: &anyhow::Error) -> Option<Duration> {
    e.chain()
        .find_map(|c| c.downcast_ref::<UpstreamStatus>())
        .and_then(|t| t.retry_after)
}

/// Upstream's repository does not hold a blob asked for by digest.
#[derive(Debug, thiserror::Error)]
#[error("upstream does not hold blob {0}")]
pub struct NotUpstream(pub Digest);

/// Whether upstream answered that the thing asked for does not exist, as opposed to
/// failing.
pub fn is_not_found(e: &anyhow::Error) -> bool {
    failure(e) == Failure::NotFound
}

/// Signatures read per manifest from a lookaside store at most (a store that answers
/// every index would otherwise never end).
const MAX_LOOKASIDE_SIGNATURES: usize = 256;

/// The job's lookaside base URL, checked.
fn lookaside_base(job: &SyncJob) -> anyhow::Result<Option<String>> {
    let base = job.lookaside.trim_end_matches('/');
    if base.is_empty() {
        return Ok(None);
    }
    if !["http://", "https://", "file:///"]
        .iter()
        .any(|scheme| base.starts_with(scheme))
    {
        bail!(
            "job {}: lookaside {base:?} must start with http://, https:// or file:///",
            job.name
        );
    }
    Ok(Some(base.to_string()))
}

/// Connection errors, timeouts, broken streams, 5xx and 429 are worth retrying;
/// anything else (404, a digest mismatch, a refused credential, an untrusted
/// certificate) is not.
pub fn is_transient(e: &anyhow::Error) -> bool {
    matches!(failure(e), Failure::Unavailable | Failure::Throttled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

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
        anyhow::Error::new(UpstreamStatus {
            status,
            retry_after: None,
        })
        .context("GET x")
    }

    #[test]
    fn transient_failures_are_recognised() {
        use oci_client::errors::OciDistributionError as E;
        assert!(is_transient(&transient(503)));
        assert_eq!(failure(&transient(429)), Failure::Throttled);
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

    #[test]
    fn bearer_challenges_are_parsed() {
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer realm="http://h/v2/token",service="signet",scope="repository:a/b:pull,push""#
            ),
            Some(BearerChallenge {
                realm: "http://h/v2/token".into(),
                service: Some("signet".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_bearer_challenge("bearer realm=https://x/t"),
            Some(BearerChallenge {
                realm: "https://x/t".into(),
                service: None,
                scope: None,
            })
        );
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="x""#), None);
    }

    /// An upstream whose signatures extension takes bearer tokens only: the client
    /// follows the challenge, fetches a token with the job's Basic credentials and
    /// remembers it.
    #[actix_web::test]
    async fn extension_calls_follow_a_bearer_challenge() {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        let digest = format!("sha256:{}", "a".repeat(64));
        let tokens_issued = Arc::new(AtomicUsize::new(0));
        let issued = tokens_issued.clone();
        let d = digest.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            let issued = issued.clone();
            let d = d.clone();
            App::new()
                .route(
                    "/token",
                    web::get().to(move |req: HttpRequest| {
                        let issued = issued.clone();
                        async move {
                            let basic = format!(
                                "Basic {}",
                                base64::engine::general_purpose::STANDARD.encode("robot:pw")
                            );
                            let ok = req
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v.as_bytes() == basic.as_bytes())
                                && req.query_string().contains("scope=repository%3Aa%2Fb%3Apull");
                            if !ok {
                                return HttpResponse::Unauthorized().finish();
                            }
                            issued.fetch_add(1, Ordering::SeqCst);
                            HttpResponse::Ok().json(serde_json::json!({"token": "T"}))
                        }
                    }),
                )
                .default_service(web::to(move |req: HttpRequest| {
                    let d = d.clone();
                    async move {
                        if req.headers().get("authorization").map(|v| v.as_bytes())
                            != Some(b"Bearer T")
                        {
                            return HttpResponse::Unauthorized()
                                .insert_header((
                                    "WWW-Authenticate",
                                    format!(
                                        "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"up\",scope=\"repository:a/b:pull\""
                                    ),
                                ))
                                .finish();
                        }
                        HttpResponse::Ok().json(serde_json::json!({"signatures": [{
                            "schemaVersion": 2, "type": "atomic",
                            "name": format!("{d}@{}", "b".repeat(32)),
                            "content": "aGVsbG8=",
                        }]}))
                    }
                }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let u = Upstream::new(&SyncJob {
            name: "t".into(),
            upstream: format!("http://127.0.0.1:{port}"),
            username: "robot".into(),
            password: "pw".into(),
            repositories: vec!["a/b".into()],
            retries: 0,
            ..Default::default()
        })
        .unwrap();
        let digest: Digest = digest.parse().unwrap();
        for _ in 0..2 {
            let sigs = u.atomic_signatures("a/b", &digest).await.unwrap();
            assert_eq!(sigs, vec![("b".repeat(32), Bytes::from_static(b"hello"))]);
        }
        assert_eq!(
            tokens_issued.load(Ordering::SeqCst),
            1,
            "the token is reused"
        );

        let wrong = Upstream::new(&SyncJob {
            name: "t".into(),
            upstream: format!("http://127.0.0.1:{port}"),
            username: "robot".into(),
            password: "nope".into(),
            repositories: vec!["a/b".into()],
            retries: 0,
            ..Default::default()
        })
        .unwrap();
        let err = format!(
            "{:#}",
            wrong.atomic_signatures("a/b", &digest).await.unwrap_err()
        );
        assert!(err.contains("refused the job's credentials"), "{err}");
        handle.stop(false).await;
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
        assert_eq!(u.retry.retried(), 3);

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
        assert_eq!(u.retry.retried(), 5);

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
