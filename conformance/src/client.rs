//! HTTP helpers: one thin layer over reqwest that speaks the registry API.
//!
//! Every response is read whole into a [`Resp`] so a check can look at the
//! status, the headers and the body in any order. Blobs pushed by the runner
//! are small (a few MiB at most), so this costs nothing worth measuring.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Url};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `Accept` header a modern client sends for manifests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha512:<hex>` of some bytes.
pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
}

/// A fully read HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub url: Url,
}

impl Resp {
    /// A header as a string, if present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE.as_str())
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header(CONTENT_LENGTH.as_str())
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn digest_header(&self) -> Option<&str> {
        self.header("docker-content-digest")
    }

    /// The `Location` header resolved against the request URL.
    pub fn location(&self) -> Result<Url> {
        let raw = self
            .header(LOCATION.as_str())
            .ok_or_else(|| anyhow!("{} response has no Location header", self.status))?;
        self.url
            .join(raw)
            .with_context(|| format!("Location {raw:?} is not a URL"))
    }

    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "body is not JSON: {:?}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(120)])
            )
        })
    }

    /// The `code` fields of an OCI error body (empty if the body is not one).
    pub fn error_codes(&self) -> Vec<String> {
        let Ok(v) = serde_json::from_slice::<Value>(&self.body) else {
            return Vec::new();
        };
        v.get("errors")
            .and_then(Value::as_array)
            .map(|errs| {
                errs.iter()
                    .filter_map(|e| e.get("code").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails unless the status is one of `want`.
    pub fn expect(&self, what: &str, want: &[u16]) -> Result<&Self> {
        if want.contains(&self.status) {
            return Ok(self);
        }
        let codes = self.error_codes();
        let detail = if codes.is_empty() {
            String::new()
        } else {
            format!(" ({})", codes.join(","))
        };
        let want = want
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        bail!("{what}: got {}{detail}, want {want}", self.status)
    }

    /// Fails unless the status is `status` and the error body carries `code`.
    pub fn expect_error(&self, what: &str, status: &[u16], code: &str) -> Result<()> {
        self.expect(what, status)?;
        let codes = self.error_codes();
        if !codes.iter().any(|c| c == code) {
            bail!(
                "{what}: status {} but error codes {:?}, want {code}",
                self.status,
                codes
            );
        }
        Ok(())
    }
}

/// The registry under test.
#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    base: Url,
}

impl Registry {
    pub fn new(base: &str, timeout: Duration) -> Result<Self> {
        let mut base = Url::parse(base).with_context(|| format!("bad --url {base:?}"))?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("signet-conformance/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// A URL for a path such as `v2/repo/tags/list` (no leading slash needed).
    pub fn url(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("registry paths are valid URL paths")
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub fn request_url(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    pub async fn send(&self, rb: RequestBuilder) -> Result<Resp> {
        let again = rb.try_clone();
        let resp = match rb.send().await {
            Ok(resp) => resp,
            // A pooled keep-alive connection that the server or a proxy in front of it
            // had already closed: the request never reached anyone, and every HTTP client
            // sends it again on a fresh connection. Anything else is the registry's answer.
            Err(e) if closed_before_answer(&e) && again.is_some() => again
                .expect("checked above")
                .send()
                .await
                .context("request failed")?,
            Err(e) => return Err(anyhow!(e).context("request failed")),
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let url = resp.url().clone();
        let body = match resp.bytes().await {
            Ok(b) => b,
            // An error answer whose body breaks its own framing (e.g. a 416
            // that still announces the blob's Content-Length) is judged by its
            // status; a broken success body is a failure.
            Err(_) if status >= 400 => Bytes::new(),
            Err(e) => return Err(anyhow!(e).context("reading response body")),
        };
        Ok(Resp {
            status,
            headers,
            body,
            url,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn head(&self, path: &str) -> Result<Resp> {
        self.send(self.request(Method::HEAD, path)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Resp> {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Resp> {
        self.send(
            self.request(Method::GET, &format!("v2/{repo}/manifests/{reference}"))
                .header("Accept", MANIFEST_ACCEPT),
        )
        .await
    }

    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Resp> {
        self.send(
            self.request(Method::HEAD, &format!("v2/{repo}/manifests/{reference}"))
                .header("Accept", MANIFEST_ACCEPT),
        )
        .await
    }

    pub async fn put_manifest_raw(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Vec<u8>,
    ) -> Result<Resp> {
        self.send(
            self.request(Method::PUT, &format!("v2/{repo}/manifests/{reference}"))
                .header(CONTENT_TYPE, media_type)
                .body(body),
        )
        .await
    }

    /// `POST /v2/<repo>/blobs/uploads/` expecting a 202 session; returns its URL.
    pub async fn start_upload(&self, repo: &str) -> Result<Url> {
        let r = self
            .send(
                self.request(Method::POST, &format!("v2/{repo}/blobs/uploads/"))
                    .header(CONTENT_LENGTH, "0"),
            )
            .await?;
        r.expect("POST upload", &[202])?;
        r.location()
    }

    /// POST then a single PUT `?digest=` carrying the body (the docker flow).
    pub async fn push_blob_digest(&self, repo: &str, data: &[u8], digest: &str) -> Result<Resp> {
        let loc = self.start_upload(repo).await?;
        let r = self
            .send(
                self.request_url(Method::PUT, with_digest(loc, digest))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(data.to_vec()),
            )
            .await?;
        Ok(r)
    }
}

/// The upload URL with `digest=<digest>` appended to its query.
/// True when the connection closed before any byte of an answer arrived.
fn closed_before_answer(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message() || h.is_canceled();
        }
        source = err.source();
    }
    false
}

pub fn with_digest(mut url: Url, digest: &str) -> Url {
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// One entry of a `Link` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub target: String,
    pub rel: Option<String>,
}

/// Parses an RFC 8288 `Link` header such as
/// `</v2/_catalog?last=b&n=1>; rel="next"`. Tolerates missing quotes and
/// several comma-separated links.
pub fn parse_link_header(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let Some(end_rel) = rest[start..].find('>') else {
            break;
        };
        let end = start + end_rel;
        let target = rest[start + 1..end].trim().to_owned();
        let after = &rest[end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        let rel = params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k.trim().eq_ignore_ascii_case("rel")).then(|| {
                v.trim()
                    .trim_matches(',')
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
        });
        links.push(Link { target, rel });
        rest = &after[params_end..];
    }
    links
}

/// The `rel="next"` target of a response, if any.
pub fn next_link(resp: &Resp) -> Option<String> {
    resp.headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_link_header)
        .find(|l| l.rel.as_deref() == Some("next"))
        .map(|l| l.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_with_quoted_rel() {
        let links = parse_link_header(r#"</v2/_catalog?last=b&n=1>; rel="next""#);
        assert_eq!(
            links,
            vec![Link {
                target: "/v2/_catalog?last=b&n=1".into(),
                rel: Some("next".into())
            }]
        );
    }

    #[test]
    fn link_header_unquoted_and_several() {
        let links = parse_link_header(
            "<https://r.example/v2/a/tags/list?n=2&last=x>;rel=next, </p>; rel=\"prev\"",
        );
        assert_eq!(links.len(), 2);
        assert_eq!(
            links[0].target,
            "https://r.example/v2/a/tags/list?n=2&last=x"
        );
        assert_eq!(links[0].rel.as_deref(), Some("next"));
        assert_eq!(links[1].rel.as_deref(), Some("prev"));
    }

    #[test]
    fn link_header_garbage() {
        assert!(parse_link_header("nonsense").is_empty());
        assert!(parse_link_header("<unterminated").is_empty());
    }

    #[test]
    fn digests() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(sha512(b"").starts_with("sha512:cf83e1357eefb8bd"));
    }

    #[test]
    fn digest_is_appended_to_existing_query() {
        let u = Url::parse("http://r/v2/a/blobs/uploads/x?_state=abc").unwrap();
        let u = with_digest(u, "sha256:00");
        assert_eq!(
            u.as_str(),
            "http://r/v2/a/blobs/uploads/x?_state=abc&digest=sha256%3A00"
        );
    }
}
