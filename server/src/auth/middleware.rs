//! The gate every request passes: what it touches (`classify`), who sends it
//! (`Auth::authenticate`), whether that is allowed, and the audit line.
//!
//! `classify` reads the path exactly as the router matches it (`match_info`, decoded
//! the router's way) and mirrors the route table in `api/` and `ext/` in the same
//! order, so a request is judged on the repository its handler will act on. A path it
//! does not know needs an authenticated caller: a route added without a line here is
//! closed, not open.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};

use super::rules::Action;
use super::{Auth, AuthFailure, Caller, CatalogFilter};
use crate::error::ApiError;

/// The API area a repository request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    UploadStart,
    Upload,
    Blob,
    Manifest,
    Tags,
    Referrers,
    Discover,
    Attachments,
    Signatures,
    SignatureDelete,
}

/// What a request touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/v2/` and the registry-wide extension discovery: any authenticated caller.
    Base,
    Catalog,
    /// `/v2/token`: open to all; it checks credentials itself.
    TokenService,
    /// `/healthz`, `/readyz`: open to all (orchestrators and load balancers probe them).
    Probe,
    /// `/ui`, `/ui/...`: the web UI's static files, open to all (they hold no data;
    /// the UI reads data through the API with the user's own credentials).
    Static,
    /// `/metrics`: the admin role, unless `[metrics] public`.
    Metrics,
    Repository {
        name: String,
        area: Area,
    },
    /// `/v2/_signet/sync/...` (the sync admin API): the admin role.
    Admin,
    /// Anything else: an authenticated caller.
    Other,
}

/// Mirrors the route table (see the module doc).
pub fn classify(path: &str) -> Target {
    match path {
        "/v2" | "/v2/" | "/v2/_oci/ext/discover" => return Target::Base,
        "/v2/_catalog" => return Target::Catalog,
        "/v2/token" => return Target::TokenService,
        "/healthz" | "/readyz" => return Target::Probe,
        "/metrics" => return Target::Metrics,
        "/ui" => return Target::Static,
        _ => {}
    }
    if path.starts_with("/ui/") {
        return Target::Static;
    }
    if path == "/v2/_signet/sync/jobs" || path.starts_with("/v2/_signet/sync/jobs/") {
        return Target::Admin;
    }
    let repository = |name: &str, area| {
        if name.is_empty() {
            Target::Other
        } else {
            Target::Repository {
                name: name.to_string(),
                area,
            }
        }
    };
    if let Some(rest) = path.strip_prefix("/v2/") {
        // `/v2/{name:.+}/blobs/uploads[/]`
        if let Some(name) = rest
            .strip_suffix("/blobs/uploads/")
            .or_else(|| rest.strip_suffix("/blobs/uploads"))
        {
            return repository(name, Area::UploadStart);
        }
        if let Some((head, last)) = rest.rsplit_once('/').filter(|(_, l)| !l.is_empty()) {
            for (suffix, area) in [
                ("/blobs/uploads", Area::Upload),
                ("/blobs", Area::Blob),
                ("/manifests", Area::Manifest),
            ] {
                if let Some(name) = head.strip_suffix(suffix).filter(|n| !n.is_empty()) {
                    return repository(name, area);
                }
            }
            if head.ends_with("/tags") && last == "list" {
                if let Some(name) = rest.strip_suffix("/tags/list").filter(|n| !n.is_empty()) {
                    return repository(name, Area::Tags);
                }
            }
            if let Some(name) = head.strip_suffix("/referrers").filter(|n| !n.is_empty()) {
                return repository(name, Area::Referrers);
            }
            if let Some(name) = rest
                .strip_suffix("/_oci/ext/discover")
                .filter(|n| !n.is_empty())
            {
                return repository(name, Area::Discover);
            }
            if let Some(name) = head
                .strip_suffix("/_signet/attachments")
                .filter(|n| !n.is_empty())
            {
                return repository(name, Area::Attachments);
            }
            if last == "tags" {
                if let Some(name) = head.strip_suffix("/_signet").filter(|n| !n.is_empty()) {
                    return repository(name, Area::Tags);
                }
            }
        }
        return Target::Other;
    }
    if let Some(rest) = path.strip_prefix("/extensions/v2/") {
        if let Some((head, last)) = rest.rsplit_once('/').filter(|(_, l)| !l.is_empty()) {
            if let Some(name) = head.strip_suffix("/signatures").filter(|n| !n.is_empty()) {
                return repository(name, Area::Signatures);
            }
            if let Some((head, digest)) = head.rsplit_once('/') {
                if !digest.is_empty() && !last.is_empty() {
                    if let Some(name) = head.strip_suffix("/signatures").filter(|n| !n.is_empty()) {
                        return repository(name, Area::SignatureDelete);
                    }
                }
            }
        }
    }
    Target::Other
}

/// The action a request on a repository area needs, and whether it also needs the
/// admin role.
pub fn required(area: Area, method: &Method) -> (Action, bool) {
    let read = method == Method::GET || method == Method::HEAD;
    match area {
        Area::SignatureDelete => (Action::Delete, true),
        // Upload sessions are the push path, their status included.
        Area::UploadStart | Area::Upload => (Action::Push, false),
        _ if read => (Action::Pull, false),
        _ if method == Method::DELETE => (Action::Delete, false),
        _ => (Action::Push, false),
    }
}

pub fn peer(addr: Option<SocketAddr>) -> String {
    addr.map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The `scope` a challenge names for an action on a repository.
fn scope_for(name: &str, action: Action) -> String {
    match action {
        Action::Pull => format!("repository:{name}:pull"),
        Action::Push => format!("repository:{name}:pull,push"),
        Action::Delete => format!("repository:{name}:delete"),
    }
}

/// Why a request was refused, for the response and the audit line.
struct Refusal {
    status: Unauthenticated,
    reason: &'static str,
    scope: Option<String>,
}

#[derive(PartialEq)]
enum Unauthenticated {
    /// 401 with a challenge.
    Challenge { invalid_token: bool },
    /// 403.
    Denied,
}

pub async fn authorize(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(auth) = req
        .app_data::<web::Data<Auth>>()
        .map(|a| a.clone().into_inner())
    else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let target = classify(req.match_info().as_str());
    let open = match target {
        Target::Probe | Target::Static => true,
        Target::Metrics => req
            .app_data::<web::Data<crate::ops::Ops>>()
            .is_some_and(|ops| ops.metrics_public),
        _ => false,
    };
    let mut caller = None;
    if auth.enabled() && !open {
        let authenticated = auth
            .authenticate(req.headers().get(header::AUTHORIZATION))
            .await;
        match decide(&auth, &target, req.method(), authenticated) {
            Ok(allowed) => {
                if target == Target::Catalog {
                    req.extensions_mut().insert(CatalogFilter {
                        auth: auth.clone(),
                        identity: allowed.identity.clone(),
                    });
                }
                if let Target::Repository {
                    area: Area::UploadStart,
                    ..
                } = &target
                {
                    restrict_mount(&auth, &allowed, &mut req);
                }
                caller = Some(allowed);
            }
            Err((refusal, who)) => return Ok(refuse(&auth, req, &target, refusal, &who)),
        }
    }
    let method = req.method().clone();
    let path = req.path().to_string();
    let peer_addr = req.peer_addr();
    let response = next.call(req).await?;
    audit_write(
        &target,
        &method,
        &path,
        response.status(),
        response.headers(),
        caller.as_ref(),
        peer_addr,
    );
    Ok(response.map_into_left_body())
}

/// Allowed (with the caller) or refused (with who asked, for the audit line).
fn decide(
    auth: &Arc<Auth>,
    target: &Target,
    method: &Method,
    authenticated: Result<Caller, AuthFailure>,
) -> Result<Caller, (Refusal, String)> {
    let caller = match authenticated {
        Ok(caller) => caller,
        Err(failure) => {
            let invalid_token = matches!(failure, AuthFailure::BadToken(_));
            let reason = match failure {
                AuthFailure::BadCredentials => "bad credentials",
                AuthFailure::BadToken(super::tokens::TokenError::Expired) => "expired token",
                AuthFailure::BadToken(_) => "invalid token",
            };
            let scope = match target {
                Target::Repository { name, area } => {
                    Some(scope_for(name, required(*area, method).0))
                }
                _ => None,
            };
            return Err((
                Refusal {
                    status: Unauthenticated::Challenge { invalid_token },
                    reason,
                    scope,
                },
                "unknown".into(),
            ));
        }
    };
    let who = caller.identity.to_string();
    let challenge = |reason, scope| {
        Err((
            Refusal {
                status: Unauthenticated::Challenge {
                    invalid_token: false,
                },
                reason,
                scope,
            },
            who.clone(),
        ))
    };
    match target {
        Target::TokenService | Target::Probe | Target::Static => Ok(caller),
        Target::Metrics | Target::Admin => {
            if caller.identity.admin {
                Ok(caller)
            } else if caller.presented {
                Err((
                    Refusal {
                        status: Unauthenticated::Denied,
                        reason: if *target == Target::Admin {
                            "the sync API needs the admin role"
                        } else {
                            "metrics need the admin role"
                        },
                        scope: None,
                    },
                    who,
                ))
            } else {
                challenge("no credentials", None)
            }
        }
        // Anonymous callers are sent to the token service even where they may pull:
        // that is how clients learn the realm.
        Target::Base | Target::Other => {
            if caller.presented {
                Ok(caller)
            } else {
                challenge("no credentials", None)
            }
        }
        Target::Catalog => {
            if caller.presented {
                Ok(caller)
            } else {
                challenge("no credentials", Some("registry:catalog:*".into()))
            }
        }
        Target::Repository { name, area } => {
            let (action, admin_only) = required(*area, method);
            if auth.may(&caller, name, action) && (!admin_only || caller.identity.admin) {
                return Ok(caller);
            }
            let scope = Some(scope_for(name, action));
            if caller.identity.is_anonymous() {
                return challenge("anonymous access not allowed", scope);
            }
            // A token narrower than what its holder may do: send the client back to
            // the token service for this scope.
            let rules_allow = auth.rules.allows(&caller.identity, name, action)
                && (!admin_only || caller.identity.admin);
            if caller.token.is_some() && rules_allow {
                return challenge("token does not grant this scope", scope);
            }
            Err((
                Refusal {
                    status: Unauthenticated::Denied,
                    reason: "not allowed",
                    scope,
                },
                who,
            ))
        }
    }
}

/// A cross-repository mount needs pull on the source. Without it (or without `from`,
/// which would search every repository) the mount is dropped from the request, and
/// the handler opens an ordinary upload session, as the spec allows.
fn restrict_mount(auth: &Auth, caller: &Caller, req: &mut ServiceRequest) {
    let Some(query) = req.uri().query() else {
        return;
    };
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return;
    };
    if !pairs.iter().any(|(k, _)| k == "mount") {
        return;
    }
    let from = pairs
        .iter()
        .find(|(k, _)| k == "from")
        .map(|(_, v)| v.as_str());
    if from.is_some_and(|from| auth.may(caller, from, Action::Pull)) {
        return;
    }
    let kept: Vec<&(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "mount" && k != "from")
        .collect();
    let query = serde_urlencoded::to_string(&kept).unwrap_or_default();
    let path_and_query = if query.is_empty() {
        req.path().to_string()
    } else {
        format!("{}?{query}", req.path())
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    if let Ok(uri) = actix_web::http::Uri::from_parts(parts) {
        tracing::info!(
            target: "audit",
            event = "mount-refused",
            who = %caller.identity,
            from = from.unwrap_or(""),
            path = %req.path(),
            "cross-repository mount without pull on the source: uploading instead"
        );
        req.head_mut().uri = uri;
    }
}

fn refuse<B>(
    auth: &Auth,
    req: ServiceRequest,
    target: &Target,
    refusal: Refusal,
    who: &str,
) -> ServiceResponse<EitherBody<B>> {
    let repository = match target {
        Target::Repository { name, .. } => name.as_str(),
        _ => "",
    };
    let status = match refusal.status {
        Unauthenticated::Denied => StatusCode::FORBIDDEN,
        Unauthenticated::Challenge { .. } => StatusCode::UNAUTHORIZED,
    };
    tracing::warn!(
        target: "audit",
        event = "denied",
        who = %who,
        method = %req.method(),
        path = %req.path(),
        repository = %repository,
        status = status.as_u16(),
        reason = refusal.reason,
        peer = %peer(req.peer_addr()),
    );
    let mut response = match refusal.status {
        Unauthenticated::Denied => ApiError::Denied.error_response(),
        Unauthenticated::Challenge { invalid_token } => {
            let mut response = ApiError::Unauthorized.error_response();
            let conn = req.connection_info();
            let realm = if auth.config.realm.is_empty() {
                format!("{}://{}/v2/token", conn.scheme(), conn.host())
            } else {
                auth.config.realm.clone()
            };
            let mut challenge = format!(
                "Bearer realm=\"{realm}\",service=\"{}\"",
                auth.config.service
            );
            if let Some(scope) = &refusal.scope {
                challenge.push_str(&format!(",scope=\"{scope}\""));
            }
            if invalid_token {
                challenge.push_str(",error=\"invalid_token\"");
            }
            if let Ok(value) = header::HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
    };
    if *target == Target::Base {
        // containers/image reads the signatures extension from the 401 too.
        let (name, value) = crate::ext::signatures::SUPPORTS_SIGNATURES_HEADER;
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::try_from(name),
            header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    req.into_response(response).map_into_right_body()
}

/// One audit line per successful push, delete and signature write.
fn audit_write(
    target: &Target,
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &header::HeaderMap,
    caller: Option<&Caller>,
    peer_addr: Option<SocketAddr>,
) {
    let Target::Repository { name, area } = target else {
        return;
    };
    if !status.is_success() {
        return;
    }
    let event = match (area, method.as_str(), status.as_u16()) {
        (Area::Manifest, "PUT", _) => "push-manifest",
        (Area::UploadStart, "POST", 201) | (Area::Upload, "PUT", _) => "push-blob",
        (Area::Manifest | Area::Blob, "DELETE", _) => "delete",
        (Area::Signatures, "PUT", _) => "signature-write",
        (Area::SignatureDelete, "DELETE", _) => "signature-delete",
        _ => return,
    };
    let who = caller.map_or_else(|| "anonymous".to_string(), |c| c.identity.to_string());
    let digest = headers
        .get(crate::api::DIGEST_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info!(
        target: "audit",
        event,
        who = %who,
        method = %method,
        path,
        repository = %name,
        digest,
        status = status.as_u16(),
        peer = %peer(peer_addr),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, area: Area) -> Target {
        Target::Repository {
            name: name.into(),
            area,
        }
    }

    #[test]
    fn classifies_like_the_router() {
        assert_eq!(classify("/v2/"), Target::Base);
        assert_eq!(classify("/v2"), Target::Base);
        assert_eq!(classify("/v2/_catalog"), Target::Catalog);
        assert_eq!(classify("/v2/token"), Target::TokenService);
        assert_eq!(
            classify("/v2/a/b/blobs/uploads/"),
            repo("a/b", Area::UploadStart)
        );
        assert_eq!(
            classify("/v2/a/blobs/uploads"),
            repo("a", Area::UploadStart)
        );
        assert_eq!(classify("/v2/a/blobs/uploads/x1"), repo("a", Area::Upload));
        assert_eq!(classify("/v2/a/blobs/sha256:00"), repo("a", Area::Blob));
        assert_eq!(
            classify("/v2/a/b/c/manifests/v1"),
            repo("a/b/c", Area::Manifest)
        );
        assert_eq!(classify("/v2/a/tags/list"), repo("a", Area::Tags));
        assert_eq!(
            classify("/v2/a/referrers/sha256:00"),
            repo("a", Area::Referrers)
        );
        assert_eq!(
            classify("/v2/a/_oci/ext/discover"),
            repo("a", Area::Discover)
        );
        assert_eq!(
            classify("/v2/a/_signet/attachments/v1"),
            repo("a", Area::Attachments)
        );
        assert_eq!(
            classify("/extensions/v2/a/b/signatures/sha256:00"),
            repo("a/b", Area::Signatures)
        );
        assert_eq!(
            classify("/extensions/v2/a/signatures/sha256:00/abc"),
            repo("a", Area::SignatureDelete)
        );
        // The greedy name takes the last marker, as `{name:.+}` does.
        assert_eq!(
            classify("/v2/x/manifests/y/blobs/sha256:00"),
            repo("x/manifests/y", Area::Blob)
        );
        assert_eq!(classify("/v2//blobs/x"), Target::Other);
        assert_eq!(classify("/v2/a/blobs/"), Target::Other);
        assert_eq!(classify("/metrics"), Target::Metrics);
        assert_eq!(classify("/v2/_signet/sync/jobs"), Target::Admin);
        assert_eq!(classify("/v2/_signet/sync/jobs/a/run"), Target::Admin);
        assert_eq!(classify("/healthz"), Target::Probe);
        assert_eq!(classify("/readyz"), Target::Probe);
        assert_eq!(classify("/healthz/x"), Target::Other);
        assert_eq!(classify("/v2/a/b/_signet/tags"), repo("a/b", Area::Tags));
        assert_eq!(classify("/v2/_signet/tags"), Target::Other);
        assert_eq!(classify("/ui"), Target::Static);
        assert_eq!(classify("/ui/"), Target::Static);
        assert_eq!(classify("/ui/image"), Target::Static);
        assert_eq!(classify("/uix"), Target::Other);
    }

    #[test]
    fn actions_by_method() {
        assert_eq!(
            required(Area::Manifest, &Method::GET),
            (Action::Pull, false)
        );
        assert_eq!(
            required(Area::Manifest, &Method::HEAD),
            (Action::Pull, false)
        );
        assert_eq!(
            required(Area::Manifest, &Method::PUT),
            (Action::Push, false)
        );
        assert_eq!(
            required(Area::Manifest, &Method::DELETE),
            (Action::Delete, false)
        );
        assert_eq!(required(Area::Upload, &Method::GET), (Action::Push, false));
        assert_eq!(required(Area::Blob, &Method::PATCH), (Action::Push, false));
        assert_eq!(
            required(Area::Signatures, &Method::PUT),
            (Action::Push, false)
        );
        assert_eq!(
            required(Area::SignatureDelete, &Method::DELETE),
            (Action::Delete, true)
        );
    }
}
