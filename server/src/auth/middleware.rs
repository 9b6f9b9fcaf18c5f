//! The gate every request passes: what it touches (the request's one reading,
//! [`crate::request::Target`], seen as a [`Gate`]), who sends it
//! (`Auth::authenticate`), whether that is allowed, and the audit line.
//!
//! The gate reads the same `Target` the handler acts on, so a request is judged on the
//! repository, reference and parameters its handler will use. A path no route has needs
//! an authenticated caller (and then gets 404): a route added to the table without a
//! gate of its own is closed, not open.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpMessage, ResponseError};

use super::rules::Action;
use super::{Auth, AuthFailure, Caller, CatalogFilter};
use crate::error::ApiError;
use crate::request::Downstream;
use crate::request::{target_of, Area, Kind, Route, Target};
use std::rc::Rc;

/// What a request touches, as far as authorisation is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
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
    /// A repository route: the action it needs decides.
    Repository {
        name: String,
        kind: Kind,
    },
    /// `/v2/_signet/sync/...` (the sync admin API): the admin role.
    Admin,
    /// A path no route has: an authenticated caller (then 404).
    Other,
}

impl Gate {
    pub fn of(target: &Target) -> Gate {
        match &target.route {
            Route::Base | Route::Discover => Gate::Base,
            Route::Catalog(_) => Gate::Catalog,
            Route::Token(_) | Route::TokenRevoke => Gate::TokenService,
            Route::Healthz | Route::Readyz => Gate::Probe,
            Route::Ui(_) => Gate::Static,
            Route::Metrics => Gate::Metrics,
            Route::SyncJobs
            | Route::SyncJob(_)
            | Route::SyncJobRun(_)
            | Route::SyncJobCancel(_) => Gate::Admin,
            Route::Repository { repo, .. } => match target.kind() {
                Some(kind) => Gate::Repository {
                    name: repo.to_string(),
                    kind,
                },
                None => Gate::Other,
            },
            Route::Unknown => Gate::Other,
        }
    }
}

/// The action a request on a repository route needs, and whether it also needs the
/// admin role.
pub fn required(kind: Kind, method: &Method) -> (Action, bool) {
    let read = method == Method::GET || method == Method::HEAD;
    match kind {
        Kind::SignatureDelete => (Action::Delete, true),
        // Upload sessions are the push path, their status included.
        Kind::UploadStart | Kind::Upload => (Action::Push, false),
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
    req: ServiceRequest,
    next: impl Downstream,
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
    // A request that was not read is never passed (`request::refuse_unreadable` answers
    // it first); should one get here, it is refused.
    let Some(target) = target_of(&req) else {
        let response = ApiError::Internal("authorisation found no request target".into());
        return Ok(req.error_response(response).map_into_right_body());
    };
    let gate = Gate::of(&target);
    let open = match gate {
        Gate::Probe | Gate::Static => true,
        Gate::Metrics => req
            .app_data::<web::Data<crate::ops::Ops>>()
            .is_some_and(|ops| ops.metrics_public),
        _ => false,
    };
    let mut caller = None;
    if auth.enabled() && !open {
        let authenticated = auth
            .authenticate(req.headers().get(header::AUTHORIZATION))
            .await;
        match decide(&auth, &gate, req.method(), authenticated) {
            Ok(allowed) => {
                if gate == Gate::Catalog {
                    req.extensions_mut()
                        .insert(CatalogFilter::new(auth.clone(), &allowed));
                }
                if matches!(
                    &target.route,
                    Route::Repository {
                        area: Area::UploadStart(_),
                        ..
                    }
                ) {
                    restrict_mount(&auth, &allowed, &req, &target);
                } else if overrides_immutable(&target) && !allowed.identity.admin {
                    tracing::info!(target: "audit", event = "immutable-override-refused", who = %allowed.identity, path = %req.path(), "override of the immutable-tag rules without the admin role");
                    let refusal = ApiError::TagImmutable(
                        "overriding the immutable-tag rules needs the admin role".into(),
                    );
                    return Ok(req.error_response(refusal).map_into_right_body());
                }
                req.extensions_mut()
                    .insert(super::Actor(allowed.identity.to_string()));
                caller = Some(allowed);
            }
            Err((refusal, who)) => return Ok(refuse(&auth, req, &gate, refusal, &who)),
        }
    }
    let response = next.call(req).await?;
    // The response carries its request: method, path and peer are read there, and
    // nothing is copied for the requests that write no audit line.
    let request = response.request();
    audit_write(
        &gate,
        request.method(),
        request.path(),
        response.status(),
        response.headers(),
        caller.as_ref(),
        request.peer_addr(),
    );
    Ok(response.map_into_left_body())
}

/// Allowed (with the caller) or refused (with who asked, for the audit line).
fn decide(
    auth: &Arc<Auth>,
    gate: &Gate,
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
            let scope = match gate {
                Gate::Repository { name, kind } => Some(scope_for(name, required(*kind, method).0)),
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
    match gate {
        Gate::TokenService | Gate::Probe | Gate::Static => Ok(caller),
        Gate::Metrics | Gate::Admin => {
            if caller.identity.admin {
                Ok(caller)
            } else if caller.presented {
                Err((
                    Refusal {
                        status: Unauthenticated::Denied,
                        reason: if *gate == Gate::Admin {
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
        Gate::Base | Gate::Other => {
            if caller.presented {
                Ok(caller)
            } else {
                challenge("no credentials", None)
            }
        }
        Gate::Catalog => {
            if caller.presented {
                Ok(caller)
            } else {
                challenge("no credentials", Some("registry:catalog:*".into()))
            }
        }
        Gate::Repository { name, kind } => {
            let (action, admin_only) = required(*kind, method);
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

/// Whether the request asks to move or delete a tag past the immutable-tag rules.
fn overrides_immutable(target: &Target) -> bool {
    matches!(
        &target.route,
        Route::Repository {
            area: Area::Manifest {
                override_immutable: true,
                ..
            },
            ..
        }
    )
}

/// A cross-repository mount needs pull on the source. Without it (or without `from`,
/// which would search every repository) the mount is dropped from the request's
/// reading, and the handler opens an ordinary upload session, as the spec allows.
fn restrict_mount(auth: &Auth, caller: &Caller, req: &ServiceRequest, target: &Target) {
    let Route::Repository {
        area: Area::UploadStart(start),
        ..
    } = &target.route
    else {
        return;
    };
    let Some(mount) = &start.mount else {
        return;
    };
    let from = mount.from.as_ref().map(|f| f.to_string());
    if from
        .as_deref()
        .is_some_and(|from| auth.may(caller, from, Action::Pull))
    {
        return;
    }
    tracing::info!(
        target: "audit",
        event = "mount-refused",
        who = %caller.identity,
        from = from.as_deref().unwrap_or(""),
        path = %req.path(),
        "cross-repository mount without pull on the source: uploading instead"
    );
    let mut reading = target.clone();
    if let Route::Repository {
        area: Area::UploadStart(start),
        ..
    } = &mut reading.route
    {
        start.mount = None;
    }
    req.extensions_mut().insert(Rc::new(reading));
}

fn refuse<B>(
    auth: &Auth,
    req: ServiceRequest,
    gate: &Gate,
    refusal: Refusal,
    who: &str,
) -> ServiceResponse<EitherBody<B>> {
    let repository = match gate {
        Gate::Repository { name, .. } => name.as_str(),
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
    if *gate == Gate::Base {
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
    gate: &Gate,
    method: &Method,
    path: &str,
    status: StatusCode,
    headers: &header::HeaderMap,
    caller: Option<&Caller>,
    peer_addr: Option<SocketAddr>,
) {
    let Gate::Repository { name, kind } = gate else {
        return;
    };
    if !status.is_success() {
        return;
    }
    let event = match (kind, method.as_str(), status.as_u16()) {
        (Kind::Manifest, "PUT", _) => "push-manifest",
        (Kind::UploadStart, "POST", 201) | (Kind::Upload, "PUT", _) => "push-blob",
        (Kind::Manifest | Kind::Blob, "DELETE", _) => "delete",
        (Kind::Signatures, "PUT", _) => "signature-write",
        (Kind::SignatureDelete, "DELETE", _) => "signature-delete",
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

    fn gate(path: &str) -> Gate {
        Gate::of(&Target::read(&Method::GET, path, "").unwrap())
    }

    fn repo(name: &str, kind: Kind) -> Gate {
        Gate::Repository {
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn gates_of_the_routes() {
        assert_eq!(gate("/v2/"), Gate::Base);
        assert_eq!(gate("/v2/_oci/ext/discover"), Gate::Base);
        assert_eq!(gate("/v2/_catalog"), Gate::Catalog);
        assert_eq!(gate("/v2/token"), Gate::TokenService);
        assert_eq!(
            gate("/v2/a/b/blobs/uploads/"),
            repo("a/b", Kind::UploadStart)
        );
        assert_eq!(
            gate("/v2/a/b/c/manifests/v1"),
            repo("a/b/c", Kind::Manifest)
        );
        assert_eq!(gate("/metrics"), Gate::Metrics);
        assert_eq!(gate("/v2/_signet/sync/jobs"), Gate::Admin);
        assert_eq!(gate("/v2/_signet/sync/jobs/a/run"), Gate::Admin);
        assert_eq!(gate("/healthz"), Gate::Probe);
        assert_eq!(gate("/readyz"), Gate::Probe);
        assert_eq!(gate("/healthz/x"), Gate::Other);
        assert_eq!(gate("/v2/a/b/_signet/tags"), repo("a/b", Kind::SignetTags));
        assert_eq!(gate("/ui"), Gate::Static);
        assert_eq!(gate("/ui/image"), Gate::Static);
        assert_eq!(gate("/uix"), Gate::Other);
    }

    #[test]
    fn actions_by_method() {
        assert_eq!(
            required(Kind::Manifest, &Method::GET),
            (Action::Pull, false)
        );
        assert_eq!(
            required(Kind::Manifest, &Method::HEAD),
            (Action::Pull, false)
        );
        assert_eq!(
            required(Kind::Manifest, &Method::PUT),
            (Action::Push, false)
        );
        assert_eq!(
            required(Kind::Manifest, &Method::DELETE),
            (Action::Delete, false)
        );
        assert_eq!(required(Kind::Upload, &Method::GET), (Action::Push, false));
        assert_eq!(required(Kind::Blob, &Method::PATCH), (Action::Push, false));
        assert_eq!(
            required(Kind::Signatures, &Method::PUT),
            (Action::Push, false)
        );
        assert_eq!(
            required(Kind::SignatureDelete, &Method::DELETE),
            (Action::Delete, true)
        );
    }
}
