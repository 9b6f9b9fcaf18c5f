//! `/v2/token`: the Docker/OCI token service. `GET` with `service`, `scope`
//! (repeatable; also space-separated) and Basic credentials or none; `POST` with an
//! OAuth2 form (`grant_type=password` or `refresh_token`). Either answers a JWT granting
//! what the rules allow of what was asked — asking for push where only pull is allowed
//! gives pull — or 401 for wrong credentials.
//!
//! Refresh tokens (only with a configured token key) are bound to the credential they
//! were issued for: a changed password, a removed account or a revoked robot ends them.
//! Those of the OAuth2 password grant (`access_type=offline`: the web UI, OAuth clients)
//! are good once: using one returns its replacement and uses it up, across replicas
//! (`revoked_tokens` in the metadata store), so a stolen copy dies at the next
//! legitimate use and a replayed one is refused. Docker's identity token, asked for at
//! `docker login` (`GET` with `offline_token=true`), is presented as stored on every later
//! command, so it is reusable until it expires, its credential changes or it is revoked.
//! `POST /v2/token/revoke` (`token=...`, RFC 7009) gives one up at sign-out.

use actix_web::http::header;
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde_json::json;

use super::rules::{Action, Identity, Scope};
use super::tokens::{now, Access, Claims, ISSUER};
use super::{parse_basic, Auth};
use crate::error::{ApiError, ApiResult};
use crate::request::query::{Param, Params};
use crate::request::{Route, Target};
use crate::state::AppState;

/// The largest token request body (an OAuth2 form).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The fields of an OAuth2 token request this service reads.
const FORM_FIELDS: [Param; 8] = [
    Param::one("grant_type", ApiError::Unsupported),
    Param::one("username", ApiError::Unsupported),
    Param::one("password", ApiError::Unsupported),
    Param::one("refresh_token", ApiError::Unsupported),
    Param::one("service", ApiError::Unsupported),
    Param::one("client_id", ApiError::Unsupported),
    Param::one("access_type", ApiError::Unsupported),
    Param::many("scope", ApiError::Unsupported),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        crate::request::resource(crate::request::Kind::TokenService)
            .on(Method::GET, get_token)
            .on(Method::POST, post_token),
    )
    .service(
        crate::request::resource(crate::request::Kind::TokenRevoke).on(Method::POST, revoke_token),
    );
}

fn auth_of(req: &HttpRequest) -> ApiResult<&web::Data<Auth>> {
    req.app_data::<web::Data<Auth>>()
        .filter(|a| a.enabled())
        .ok_or(ApiError::RouteNotFound)
}

async fn get_token(req: HttpRequest, target: Target) -> ApiResult<HttpResponse> {
    let auth = auth_of(&req)?;
    let Route::Token(query) = target.route else {
        return Err(ApiError::RouteNotFound);
    };
    let scopes = scopes_of(query.scopes.iter())?;
    let offline = query.offline;
    let identity = match req.headers().get(header::AUTHORIZATION) {
        None => Identity::anonymous(),
        Some(value) => {
            let value = value.to_str().map_err(|_| ApiError::Unauthorized)?;
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(ApiError::Unauthorized);
            }
            let (name, password) = parse_basic(rest.trim()).ok_or(ApiError::Unauthorized)?;
            verified(auth, &req, &name, &password).await?
        }
    };
    let refresh = offline.then_some(Refresh::Reusable);
    respond(auth, &identity, &scopes, refresh, false)
}

/// The refresh token an answer carries, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// Good once: its use returns the next one.
    Once,
    /// Docker's identity token: reusable until it expires or is revoked.
    Reusable,
}

/// The form of a token request or revocation, read like a query string: a field given
/// twice is refused, not first- or last-wins.
async fn read_form(mut body: web::Payload, fields: &[Param]) -> ApiResult<Params> {
    let mut form = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::Unsupported(format!("reading body: {e}")))?;
        if form.len() + chunk.len() > MAX_FORM_BYTES {
            return Err(ApiError::SizeInvalid("token request too large".into()));
        }
        form.extend_from_slice(&chunk);
    }
    let form = std::str::from_utf8(&form)
        .map_err(|_| ApiError::Unsupported("malformed token request: not UTF-8".into()))?;
    Params::read(form, fields)
}

async fn post_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let auth = auth_of(&req)?;
    let fields = read_form(body, &FORM_FIELDS).await?;
    let field = |name: &str| fields.one(name);
    let scopes: Vec<String> = fields.all("scope").map(str::to_string).collect();
    let scopes = scopes_of(scopes.iter())?;
    let mut refresh = (field("access_type") == Some("offline")).then_some(Refresh::Once);
    let identity = match field("grant_type") {
        Some("password") => {
            let name = field("username").unwrap_or_default();
            let password = super::Secret::new(field("password").unwrap_or_default());
            verified(auth, &req, name, &password).await?
        }
        Some("refresh_token") => {
            let token = field("refresh_token").unwrap_or_default();
            let (identity, once) = use_refresh_token(auth, &state, &req, token).await?;
            // A token good once is used up: the answer carries its replacement. A
            // reusable one stays with its client, which keeps presenting it.
            refresh = once.then_some(Refresh::Once);
            identity
        }
        other => {
            return Err(ApiError::Unsupported(format!(
                "grant_type {:?} is not supported (password, refresh_token)",
                other.unwrap_or_default()
            )))
        }
    };
    respond(auth, &identity, &scopes, refresh, true)
}

async fn verified(
    auth: &Auth,
    req: &HttpRequest,
    name: &str,
    password: &super::Secret,
) -> ApiResult<Identity> {
    match auth.directory.verify(name, password).await {
        Some(identity) => Ok(identity),
        None => {
            tracing::warn!(
                target: "audit",
                event = "denied",
                who = %name,
                path = "/v2/token",
                reason = "bad credentials",
                peer = %super::middleware::peer(req.peer_addr()),
            );
            Err(ApiError::Unauthorized)
        }
    }
}

/// Most scopes one token request may ask for: a token carries what it grants, and a
/// client asks for a few repositories at a time.
const MAX_SCOPES: usize = 64;

/// The account a refresh token speaks for, and whether it was good once (now used up):
/// signed here for this service, a refresh token, its account still there with the
/// credential it was issued for, and not revoked — nor, for one good once, used before,
/// on any replica.
async fn use_refresh_token(
    auth: &Auth,
    state: &AppState,
    req: &HttpRequest,
    token: &str,
) -> ApiResult<(Identity, bool)> {
    let claims = auth
        .keys
        .verify(token, &auth.config.service)
        .ok()
        .filter(|c| c.refresh)
        .ok_or(ApiError::Unauthorized)?;
    let refuse = |reason: &'static str| {
        tracing::warn!(
            target: "audit",
            event = "denied",
            who = %claims.sub,
            path = "/v2/token",
            reason,
            peer = %super::middleware::peer(req.peer_addr()),
        );
        ApiError::Unauthorized
    };
    let current = auth.directory.credential_fingerprint(&claims.sub);
    if current.is_none() || current != claims.cred {
        return Err(refuse("refresh token of a changed or removed credential"));
    }
    if claims.once {
        let first_use = state
            .meta
            .revoke_token(&claims.jti, claims.exp as i64)
            .await?;
        if !first_use {
            return Err(refuse("refresh token used before, or revoked"));
        }
    } else if state.meta.token_revoked(&claims.jti).await? {
        return Err(refuse("refresh token revoked"));
    }
    // The role is read afresh.
    let identity = auth
        .directory
        .identity(&claims.sub)
        .ok_or_else(|| refuse("refresh token of a removed account"))?;
    Ok((identity, claims.once))
}

/// `POST /v2/token/revoke` with `token=<refresh token>`: the token stops working. As RFC
/// 7009 asks, the answer is 200 whatever the token was, so it tells nothing.
async fn revoke_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Payload,
) -> ApiResult<HttpResponse> {
    let auth = auth_of(&req)?;
    const FIELDS: [Param; 2] = [
        Param::one("token", ApiError::Unsupported),
        Param::one("token_type_hint", ApiError::Unsupported),
    ];
    let fields = read_form(body, &FIELDS).await?;
    let claims = fields
        .one("token")
        .and_then(|t| auth.keys.verify(t, &auth.config.service).ok())
        .filter(|c| c.refresh);
    if let Some(claims) = claims {
        state
            .meta
            .revoke_token(&claims.jti, claims.exp as i64)
            .await?;
        tracing::info!(target: "audit", event = "token-revoked", who = %claims.sub, "refresh token revoked");
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// Scopes from every `scope` value; each value may hold several, space-separated.
fn scopes_of<'a>(values: impl Iterator<Item = &'a String>) -> ApiResult<Vec<Scope>> {
    let scopes: Vec<Scope> = values
        .flat_map(|v| v.split(' '))
        .filter(|s| !s.is_empty())
        .filter_map(Scope::parse)
        .collect();
    if scopes.len() > MAX_SCOPES {
        return Err(ApiError::Unsupported(format!(
            "at most {MAX_SCOPES} scopes may be asked for at once"
        )));
    }
    Ok(scopes)
}

/// What the rules grant of the scopes asked for.
pub fn grant(auth: &Auth, identity: &Identity, scopes: &[Scope]) -> Vec<Access> {
    let mut granted: Vec<Access> = Vec::new();
    for scope in scopes {
        match scope.kind.as_str() {
            // Only names a repository can have: a pattern (`team/**`) or a made-up
            // path names nothing, and must not ride along in a token.
            "repository" if scope.name.parse::<signet_storage::RepoName>().is_err() => {}
            "repository" => {
                let requested = Action::parse_list(&scope.actions);
                let actions = auth.rules.granted(identity, &scope.name, &requested);
                if actions.is_empty() {
                    continue;
                }
                match granted
                    .iter_mut()
                    .find(|a| a.kind == "repository" && a.name == scope.name)
                {
                    Some(existing) => {
                        for a in actions {
                            if !existing.actions.iter().any(|x| x == a.as_str()) {
                                existing.actions.push(a.as_str().to_string());
                            }
                        }
                    }
                    None => granted.push(Access::repository(&scope.name, &actions)),
                }
            }
            // The catalog filters itself by the caller's rules.
            "registry" if scope.name == "catalog" => granted.push(Access {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            }),
            _ => {}
        }
    }
    granted
}

fn respond(
    auth: &Auth,
    identity: &Identity,
    scopes: &[Scope],
    refresh: Option<Refresh>,
    oauth: bool,
) -> ApiResult<HttpResponse> {
    let access = grant(auth, identity, scopes);
    let issued = now();
    let ttl = auth.config.token_ttl_secs.max(1);
    let claims = Claims {
        iss: ISSUER.into(),
        sub: identity.name.clone(),
        aud: auth.config.service.clone(),
        exp: issued + ttl,
        nbf: issued,
        iat: issued,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        access,
        admin: identity.admin,
        robot: identity.robot,
        refresh: false,
        cred: None,
        once: false,
    };
    let token = auth.keys.sign(&claims).map_err(ApiError::internal)?;
    let issued_at = chrono::DateTime::from_timestamp(issued as i64, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": ttl,
        "issued_at": issued_at,
    });
    if oauth {
        let scope: Vec<String> = claims
            .access
            .iter()
            .map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(",")))
            .collect();
        body["scope"] = json!(scope.join(" "));
    }
    // Refresh tokens only with a configured key: a generated one dies with the process,
    // and a client holding a dead refresh token fails until it logs in again.
    let credential = auth.directory.credential_fingerprint(&identity.name);
    if let (Some(kind), Some(cred), true) = (refresh, credential, auth.keys.persistent) {
        let refresh = Claims {
            exp: issued + auth.config.refresh_ttl_secs.max(1),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access: Vec::new(),
            refresh: true,
            cred: Some(cred),
            once: kind == Refresh::Once,
            ..claims
        };
        body["refresh_token"] = json!(auth.keys.sign(&refresh).map_err(ApiError::internal)?);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}
