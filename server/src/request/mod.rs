//! One reading of each request.
//!
//! [`read`], the outermost middleware, matches the raw path against the route table
//! ([`routes::ROUTES`]), decodes it once, validates the repository name, reference,
//! digest and session id, and reads the query parameters the route declares (a
//! single-valued one given twice is refused). The typed [`Target`] is left in the
//! request's extensions; [`refuse_unreadable`] answers what did not read with its OCI
//! error before anything acts on it. Authorisation, rate limits, pull-through, the
//! signature policy, metrics, logs and the handlers all read that one `Target`, never the
//! raw path or query, and handlers are registered by route kind ([`resource`]), so the
//! handler that runs is the one the reading names. Two readings of one request are how
//! a request gets judged as one thing and executed as another.

mod decode;
mod dispatch;
mod downstream;
pub mod query;
pub mod routes;

pub use dispatch::{resource, KindResource};
pub use downstream::{Downstream, Layer};

use std::future::{ready, Ready};
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError};
use signet_storage::names::InvalidReference;
use signet_storage::{Algorithm, Digest, Reference, RepoName, Tag};

pub use routes::Kind;
use routes::{Matched, NoMatch, Spec, Var};

use crate::error::{ApiError, ApiResult};
use query::{shorten, Params};

/// What a request is: its route and every value the route reads, validated.
#[derive(Debug, Clone)]
pub struct Target {
    /// The table entry it matched; `None` for a path no route has.
    pub spec: Option<&'static Spec>,
    pub route: Route,
}

#[derive(Debug, Clone)]
pub enum Route {
    Base,
    Discover,
    Catalog(Page),
    Token(TokenQuery),
    /// `POST /v2/token/revoke`: a refresh token given up (sign-out).
    TokenRevoke,
    Healthz,
    Readyz,
    Metrics,
    /// The path below `/ui/`; `None` for `/ui` itself.
    Ui(Option<String>),
    SyncJobs,
    SyncJob(String),
    SyncJobRun(String),
    SyncJobCancel(String),
    Repository {
        repo: RepoName,
        area: Area,
    },
    /// No route has this path: answered 404 after authentication.
    Unknown,
}

/// What a repository request touches, with its values.
#[derive(Debug, Clone)]
pub enum Area {
    UploadStart(UploadStart),
    Upload {
        session: String,
        /// `?digest=`, which completes the upload (PUT).
        digest: Option<Digest>,
    },
    Blob(Digest),
    Manifest {
        reference: Reference,
        /// `?tag=` (repeatable): more tags for a PUT by digest.
        tags: Vec<Tag>,
        /// `?override_immutable=true`: an administrator moves or deletes a tag the
        /// immutable-tag rules protect.
        override_immutable: bool,
    },
    Tags(Page),
    Referrers {
        subject: Digest,
        artifact_type: Option<String>,
    },
    Discover,
    Attachments {
        reference: Reference,
        recursive: bool,
    },
    SignetTags {
        page: Page,
        with_attachments: bool,
        /// Each tag's signature status too (`signatures=true`).
        with_signatures: bool,
    },
    Signatures(Digest),
    SignatureDelete {
        digest: Digest,
        id: String,
    },
}

/// `POST /v2/<name>/blobs/uploads/` and what its query asks.
#[derive(Debug, Clone)]
pub struct UploadStart {
    /// `?mount=` with its `?from=`: link a blob another repository holds.
    pub mount: Option<Mount>,
    /// `?digest=`: the body is the whole blob.
    pub digest: Option<Digest>,
    /// The hashes the session keeps running (sha256, and what `digest-algorithm` names).
    pub algorithms: Vec<Algorithm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub digest: Digest,
    pub from: Option<RepoName>,
}

/// `n` and `last` of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub n: Option<u32>,
    pub last: Option<String>,
}

/// `GET /v2/token`'s query.
#[derive(Debug, Clone, Default)]
pub struct TokenQuery {
    /// Every `scope` value, in order (each may hold several, space-separated).
    pub scopes: Vec<String>,
    pub offline: bool,
}

/// Left in the extensions when a request does not read: [`refuse_unreadable`] answers it.
struct Unreadable(ApiError);

impl Target {
    /// Reads a request line: method, raw path, raw query.
    pub fn read(method: &Method, raw_path: &str, raw_query: &str) -> ApiResult<Target> {
        let matched = match routes::find(raw_path) {
            Ok(m) => m,
            Err(NoMatch::Unknown) => {
                return Ok(Target {
                    spec: None,
                    route: Route::Unknown,
                })
            }
            Err(NoMatch::Malformed) => {
                return Err(ApiError::NameInvalid(format!(
                    "the path {:?} is not well encoded",
                    shorten(raw_path)
                )))
            }
        };
        let params = Params::read(raw_query, matched.spec.params)?;
        let spec = matched.spec;
        let route = build(method, matched, &params)?;
        Ok(Target {
            spec: Some(spec),
            route,
        })
    }

    pub fn kind(&self) -> Option<Kind> {
        self.spec.map(|s| s.kind)
    }

    /// The route's name for metrics and logs.
    pub fn pattern(&self) -> &'static str {
        self.spec.map_or("unmatched", |s| s.pattern)
    }

    pub fn repository(&self) -> Option<&RepoName> {
        match &self.route {
            Route::Repository { repo, .. } => Some(repo),
            _ => None,
        }
    }

    /// The repository and area of a repository route; a handler registered for one never
    /// gets anything else, so this fails only if the registration is wrong.
    pub fn into_repository(self) -> ApiResult<(RepoName, Area)> {
        match self.route {
            Route::Repository { repo, area } => Ok((repo, area)),
            _ => Err(ApiError::RouteNotFound),
        }
    }

    /// The reading left by [`read`], the handler's own copy.
    pub fn of(req: &HttpRequest) -> Option<Target> {
        req.extensions()
            .get::<Rc<Target>>()
            .map(|t| Target::clone(t))
    }
}

fn var(parts: &Matched, which: Var) -> &str {
    parts
        .vars
        .iter()
        .find(|(v, _)| *v == which)
        .map_or("", |(_, value)| value.as_str())
}

fn build(method: &Method, parts: Matched, params: &Params) -> ApiResult<Route> {
    let job = || var(&parts, Var::Job).to_string();
    let route = match parts.spec.kind {
        Kind::Base => Route::Base,
        Kind::Discover => Route::Discover,
        Kind::Catalog => Route::Catalog(page(params)?),
        Kind::TokenService => Route::Token(TokenQuery {
            scopes: params.all("scope").map(str::to_string).collect(),
            offline: params.one("offline_token") == Some("true"),
        }),
        Kind::TokenRevoke => Route::TokenRevoke,
        Kind::Healthz => Route::Healthz,
        Kind::Readyz => Route::Readyz,
        Kind::Metrics => Route::Metrics,
        Kind::Ui => Route::Ui(parts.rest.clone()),
        Kind::SyncJobs => Route::SyncJobs,
        Kind::SyncJob => Route::SyncJob(job()),
        Kind::SyncJobRun => Route::SyncJobRun(job()),
        Kind::SyncJobCancel => Route::SyncJobCancel(job()),
        kind => {
            let name = parts.name.as_deref().unwrap_or_default();
            let repo: RepoName = name
                .parse()
                .map_err(|e: signet_storage::names::InvalidName| ApiError::NameInvalid(e.0))?;
            let area = repository_area(method, kind, &parts, params)?;
            Route::Repository { repo, area }
        }
    };
    Ok(route)
}

fn repository_area(
    method: &Method,
    kind: Kind,
    parts: &Matched,
    params: &Params,
) -> ApiResult<Area> {
    let digest_var = || digest(var(parts, Var::Digest));
    let area = match kind {
        Kind::UploadStart => {
            let mount = params
                .one("mount")
                .map(|m| -> ApiResult<Mount> {
                    Ok(Mount {
                        digest: digest(m)?,
                        from: params.one("from").map(repo_name).transpose()?,
                    })
                })
                .transpose()?;
            Area::UploadStart(UploadStart {
                mount,
                digest: params.one("digest").map(digest).transpose()?,
                algorithms: session_algorithms(params.one("digest-algorithm"))?,
            })
        }
        Kind::Upload => {
            let session = var(parts, Var::Session);
            if !is_session_id(session) {
                return Err(ApiError::BlobUploadUnknown);
            }
            Area::Upload {
                session: session.to_string(),
                digest: params.one("digest").map(digest).transpose()?,
            }
        }
        Kind::Blob => Area::Blob(digest_var()?),
        Kind::Manifest => {
            let raw = var(parts, Var::Reference);
            let reference = if method == Method::PUT {
                raw.parse().map_err(|e| match e {
                    InvalidReference::Digest(d) => ApiError::DigestInvalid(d.to_string()),
                    InvalidReference::Tag(t) => ApiError::ManifestInvalid(t.to_string()),
                })?
            } else {
                reference_to_read(raw)?
            };
            let tags = params
                .all("tag")
                .map(|t| {
                    t.parse::<Tag>()
                        .map_err(|e| ApiError::TagInvalid(e.to_string()))
                })
                .collect::<ApiResult<Vec<_>>>()?;
            Area::Manifest {
                reference,
                tags,
                override_immutable: flag(params, "override_immutable", false)?,
            }
        }
        Kind::Tags => Area::Tags(page(params)?),
        Kind::Referrers => Area::Referrers {
            subject: digest_var()?,
            // Media types have no spaces but often a `+`, which form decoding turns into
            // a space when a client leaves it unescaped.
            artifact_type: params
                .one("artifactType")
                .filter(|a| !a.is_empty())
                .map(|a| a.replace(' ', "+")),
        },
        Kind::RepositoryDiscover => Area::Discover,
        Kind::Attachments => Area::Attachments {
            reference: reference_to_read(var(parts, Var::Reference))?,
            recursive: flag(params, "recursive", false)?,
        },
        Kind::SignetTags => Area::SignetTags {
            page: page(params)?,
            with_attachments: flag(params, "attachments", true)?,
            with_signatures: flag(params, "signatures", false)?,
        },
        Kind::Signatures => Area::Signatures(digest_var()?),
        Kind::SignatureDelete => {
            let id = var(parts, Var::SignatureId);
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::SignatureUnknown);
            }
            Area::SignatureDelete {
                digest: digest_var()?,
                id: id.to_ascii_lowercase(),
            }
        }
        other => unreachable!("{other:?} is not a repository route"),
    };
    Ok(area)
}

fn repo_name(raw: &str) -> ApiResult<RepoName> {
    raw.parse()
        .map_err(|e: signet_storage::names::InvalidName| ApiError::NameInvalid(e.0))
}

fn digest(raw: &str) -> ApiResult<Digest> {
    raw.parse()
        .map_err(|e: signet_storage::digest::DigestError| ApiError::DigestInvalid(e.to_string()))
}

/// A reference to read: a malformed digest is `DIGEST_INVALID`; a malformed tag cannot
/// name anything, so it is unknown.
fn reference_to_read(raw: &str) -> ApiResult<Reference> {
    raw.parse().map_err(|e| match e {
        InvalidReference::Digest(d) => ApiError::DigestInvalid(d.to_string()),
        InvalidReference::Tag(_) => ApiError::ManifestUnknown,
    })
}

/// Session ids are the server's own (UUIDs); anything else names no session.
fn is_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn page(params: &Params) -> ApiResult<Page> {
    let n = params
        .one("n")
        .map(|n| {
            n.parse::<u32>().map_err(|_| {
                ApiError::SizeInvalid(format!(
                    "n must be a non-negative integer, not {:?}",
                    shorten(n)
                ))
            })
        })
        .transpose()?;
    Ok(Page {
        n,
        last: params
            .one("last")
            .filter(|l| !l.is_empty())
            .map(str::to_string),
    })
}

/// A boolean parameter: `true`/`1` or `false`/`0`.
fn flag(params: &Params, name: &str, default: bool) -> ApiResult<bool> {
    match params.one(name) {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::Unsupported(format!(
            "{name} must be true or false, not {:?}",
            shorten(other)
        ))),
    }
}

/// The hashes a new session keeps running: sha256 (the default digest), and the one the
/// client announces with `digest-algorithm` so its final digest needs no second read.
fn session_algorithms(announced: Option<&str>) -> ApiResult<Vec<Algorithm>> {
    match announced {
        None | Some("sha256") => Ok(vec![Algorithm::Sha256]),
        Some("sha512") => Ok(vec![Algorithm::Sha256, Algorithm::Sha512]),
        Some(other) => Err(ApiError::Unsupported(format!(
            "digest algorithm {:?} is not supported (sha256 and sha512 are)",
            shorten(other)
        ))),
    }
}

/// The outermost middleware: reads the request once and leaves the reading (or why it
/// does not read) in its extensions.
pub async fn read(
    req: ServiceRequest,
    next: impl Downstream,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let reading = Target::read(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    );
    match reading {
        Ok(target) => {
            req.extensions_mut().insert(Rc::new(target));
        }
        Err(e) => {
            req.extensions_mut().insert(Unreadable(e));
        }
    }
    next.call(req).await
}

/// Answers a request that did not read with its error, before rate limits, authorisation
/// or any handler see it (inside metrics and logs, which count it).
pub async fn refuse_unreadable(
    req: ServiceRequest,
    next: impl Downstream,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let refused = req.extensions_mut().remove::<Unreadable>();
    let error = match refused {
        Some(Unreadable(e)) => e,
        None if req.extensions().get::<Rc<Target>>().is_none() => {
            ApiError::Internal("a request reached the server without being read".into())
        }
        None => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
    };
    tracing::debug!(path = %shorten(req.path()), error = %error, "request refused: it does not read");
    let response = error.error_response();
    Ok(req.into_response(response).map_into_right_body())
}

/// The route a middleware acts on, shared (every layer reads it; none copies it).
/// Absent only for a request that did not pass [`read`]; callers treat that as a refusal.
pub fn target_of(req: &ServiceRequest) -> Option<Rc<Target>> {
    req.extensions().get::<Rc<Target>>().cloned()
}

impl FromRequest for Target {
    type Error = ApiError;
    type Future = Ready<Result<Target, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Target::of(req).ok_or(ApiError::RouteNotFound))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_get(path: &str, query: &str) -> ApiResult<Target> {
        Target::read(&Method::GET, path, query)
    }

    #[test]
    fn reads_a_manifest_route_once() {
        let t = read_get("/v2/prod/%61pp/manifests/%761", "").unwrap();
        let (repo, area) = t.into_repository().unwrap();
        assert_eq!(repo.as_str(), "prod/app");
        assert!(
            matches!(area, Area::Manifest { reference: Reference::Tag(t), .. } if t.as_str() == "v1")
        );
        let hex = "a".repeat(64);
        let t = read_get(&format!("/v2/prod/app/manifests/sha256%3A{hex}"), "").unwrap();
        assert!(matches!(
            t.into_repository().unwrap().1,
            Area::Manifest {
                reference: Reference::Digest(_),
                ..
            }
        ));
    }

    #[test]
    fn refuses_what_does_not_read() {
        for (path, query) in [
            ("/v2/Prod/app/manifests/v1", ""),
            ("/v2/prod//app/manifests/v1", ""),
            ("/v2/prod/./app/manifests/v1", ""),
            ("/v2/prod/../app/manifests/v1", ""),
            ("/v2/prod%2Fapp/manifests/v1", ""),
            ("/v2/a/blobs/uploads/", "mount=sha256:00"),
            ("/v2/a/tags/list", "n=1&n=2"),
            ("/v2/a/tags/list", "n=-1"),
        ] {
            assert!(read_get(path, query).is_err(), "{path}?{query}");
        }
        let hex = "a".repeat(64);
        let twice = format!("mount=sha256:{hex}&from=a&from=b");
        assert!(matches!(
            Target::read(&Method::POST, "/v2/a/blobs/uploads/", &twice),
            Err(ApiError::NameInvalid(_))
        ));
        // An unknown path reads as such: authentication decides before the 404.
        assert!(matches!(
            read_get("/nothing", "").unwrap().route,
            Route::Unknown
        ));
    }

    #[test]
    fn reads_an_upload_start() {
        let hex = "b".repeat(64);
        let t = Target::read(
            &Method::POST,
            "/v2/a/blobs/uploads/",
            &format!("mount=sha256:{hex}&from=other%2Frepo&x=1&x=2"),
        )
        .unwrap();
        let Area::UploadStart(start) = t.into_repository().unwrap().1 else {
            panic!("not an upload start")
        };
        let mount = start.mount.unwrap();
        assert_eq!(mount.from.unwrap().as_str(), "other/repo");
        assert_eq!(start.algorithms, [Algorithm::Sha256]);
    }

    #[test]
    fn manifest_tags_are_a_list() {
        let hex = "c".repeat(64);
        let t = Target::read(
            &Method::PUT,
            &format!("/v2/a/manifests/sha256:{hex}"),
            "tag=v1&tag=latest",
        )
        .unwrap();
        let Area::Manifest { tags, .. } = t.into_repository().unwrap().1 else {
            panic!("not a manifest")
        };
        assert_eq!(tags.len(), 2);
        assert!(Target::read(
            &Method::PUT,
            &format!("/v2/a/manifests/sha256:{hex}"),
            "tag=bad%20tag"
        )
        .is_err());
    }
}
