//! The upstream registry as sync sees it.
//!
//! The distribution API goes through `oci-client`, which also answers
//! `WWW-Authenticate` challenges (Basic, and the bearer-token flow with anonymous
//! tokens when no credentials are configured). Manifests are pulled raw, so their bytes
//! are exactly what upstream served, and checked against the digest asked for.
//! The signatures extension (`/extensions/v2/...`) is plain HTTP with Basic credentials.

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

pub struct Upstream {
    client: Client,
    http: reqwest::Client,
    auth: RegistryAuth,
    /// `host[:port]`, as references name the registry.
    registry: String,
    /// `scheme://host[:port]`.
    base_url: String,
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
        })
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
            let page = self
                .client
                .catalog(&any, &self.auth, Some(1000), out.last().map(String::as_str))
                .await
                .context("upstream catalog")?;
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
            .client
            .list_tags(&r, &self.auth, None, None)
            .await
            .with_context(|| format!("upstream tags of {repo}"))?;
        Ok(list.tags)
    }

    /// The digest `repo:tag` points at (a HEAD request).
    pub async fn tag_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Digest> {
        let d = self
            .client
            .fetch_manifest_digest(&self.tag_ref(repo, tag), &self.auth)
            .await
            .with_context(|| format!("upstream HEAD {repo}:{tag}"))?;
        d.parse()
            .map_err(|e| anyhow!("upstream digest {d:?} of {repo}:{tag}: {e}"))
    }

    /// The manifest `digest` exactly as upstream serves it, checked against the digest.
    pub async fn manifest(&self, repo: &str, digest: &Digest) -> anyhow::Result<Bytes> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(
                &self.digest_ref(repo, digest),
                &self.auth,
                &SUPPORTED_MEDIA_TYPES,
            )
            .await
            .with_context(|| format!("upstream manifest {repo}@{digest}"))?;
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            bail!("upstream manifest {repo}@{digest} hashes to {actual}");
        }
        Ok(bytes)
    }

    /// A blob's bytes as a stream (verified by the blob store as they land).
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
        let index = self
            .client
            .pull_referrers(&self.digest_ref(repo, digest), None)
            .await
            .with_context(|| format!("upstream referrers of {repo}@{digest}"))?;
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
            .basic(self.http.get(format!("{}/v2/", self.base_url)))
            .send()
            .await
            .context("upstream GET /v2/")?;
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
        let resp = self
            .basic(self.http.get(&url))
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !resp.status().is_success() {
            bail!("GET {url}: {}", resp.status());
        }
        let listing: Listing = resp.json().await.with_context(|| format!("GET {url}"))?;
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
