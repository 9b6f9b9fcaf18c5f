//! Authentication and authorisation, off unless `[auth] enabled = true`.
//!
//! - `config`: the `[auth]` section and the `Secret` newtype that keeps passwords and
//!   hashes out of logs.
//! - `htpasswd`, `users`: the accounts and how their passwords and tokens are checked
//!   (bcrypt verified once, then cached briefly).
//! - `rules`: who may pull, push and delete which repository patterns.
//! - `tokens`, `token_service`: Signet as its own Docker/OCI token service
//!   (`/v2/token`), ES256 JWTs carrying only the granted scopes.
//! - `middleware`: classifies every request (repository and action), authenticates
//!   (Basic or Bearer), decides, answers 401 with a challenge or 403, and writes the
//!   audit log (tracing target `audit`).
//! - `limits`: rate limiting and the cap on open upload sessions per client.
//!
//! Handlers do not know about any of this, with one exception: the catalog lists only
//! what the caller may pull, through the `CatalogFilter` the middleware leaves in the
//! request's extensions.

pub mod config;
pub mod htpasswd;
pub mod limits;
pub mod middleware;
pub mod rules;
pub mod token_service;
pub mod tokens;
pub mod users;

use std::path::Path;
use std::sync::Arc;

use actix_web::http::header::HeaderValue;
use base64::Engine as _;

pub use config::{AuthConfig, Secret};
use rules::{Action, Identity, Rules};
use tokens::{Claims, Issuer, TokenError, TokenKeys};
use users::Directory;

/// Everything authentication needs at run time, built once at start and shared by the
/// workers.
#[derive(Debug)]
pub struct Auth {
    pub config: AuthConfig,
    pub directory: Directory,
    pub rules: Rules,
    pub keys: TokenKeys,
    /// External token issuers trusted by public key.
    pub issuers: Vec<Issuer>,
}

/// Who made a request, and with which token if it came with one.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: Identity,
    /// The bearer token's claims: what it grants is all this request may do.
    pub token: Option<Claims>,
    /// Whether the request carried credentials at all.
    pub presented: bool,
}

/// Who a request acts for, as events name them: the authenticated identity, or
/// `anonymous` (authentication off, or an anonymous pull). Left on the request by the
/// authorisation middleware; a handler takes it as an extractor.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl actix_web::FromRequest for Actor {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        use actix_web::HttpMessage;
        let actor = req.extensions().get::<Actor>().cloned();
        std::future::ready(Ok(actor.unwrap_or_else(|| Actor("anonymous".into()))))
    }
}

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    BadCredentials,
    BadToken(TokenError),
}

impl Auth {
    pub fn from_config(config: &AuthConfig) -> anyhow::Result<Self> {
        let directory = Directory::from_config(config)?;
        for name in Rules::named_accounts(&config.rules) {
            if !directory.contains(name) {
                tracing::warn!(account = %name, "[auth] a rule names an account that does not exist");
            }
        }
        let keys = if config.token_key.is_empty() {
            TokenKeys::generate()?
        } else {
            TokenKeys::load(Path::new(&config.token_key))?
        };
        if config.enabled && config.rules.is_empty() && config.admins.is_empty() {
            tracing::warn!(
                "[auth] is enabled without rules or admins: every request will be refused"
            );
        }
        let mut issuers = Vec::new();
        for issuer in &config.issuers {
            if issuer.name == tokens::ISSUER
                || issuers.iter().any(|i: &Issuer| i.name == issuer.name)
            {
                anyhow::bail!("[[auth.issuers]] {:?}: the name is taken", issuer.name);
            }
            let audience = if issuer.service.is_empty() {
                &config.service
            } else {
                &issuer.service
            };
            issuers.push(Issuer::load(
                &issuer.name,
                Path::new(&issuer.public_key),
                audience,
            )?);
        }
        Ok(Auth {
            config: config.clone(),
            directory,
            rules: Rules::new(&config.rules).map_err(|e| anyhow::anyhow!("[[auth.rules]]: {e}"))?,
            keys,
            issuers,
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Reads the `Authorization` header: Basic credentials, a bearer token, or none.
    pub async fn authenticate(&self, header: Option<&HeaderValue>) -> Result<Caller, AuthFailure> {
        let Some(header) = header else {
            return Ok(Caller {
                identity: Identity::anonymous(),
                token: None,
                presented: false,
            });
        };
        let value = header.to_str().map_err(|_| AuthFailure::BadCredentials)?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (name, password) = parse_basic(rest.trim()).ok_or(AuthFailure::BadCredentials)?;
            let identity = self
                .directory
                .verify(&name, &password)
                .await
                .ok_or(AuthFailure::BadCredentials)?;
            Ok(Caller {
                identity,
                token: None,
                presented: true,
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let token = rest.trim();
            let external = tokens::unverified_issuer(token)
                .and_then(|iss| self.issuers.iter().find(|i| i.name == iss));
            let claims = match external {
                Some(issuer) => issuer.verify(token),
                None => self.keys.verify(token, &self.config.service),
            }
            .map_err(AuthFailure::BadToken)?;
            if claims.refresh {
                return Err(AuthFailure::BadToken(TokenError::Malformed));
            }
            Ok(Caller {
                identity: claims.identity(),
                token: Some(claims),
                presented: true,
            })
        } else {
            Err(AuthFailure::BadCredentials)
        }
    }

    /// Whether the caller may do `action` on `repository`: a token decides by what it
    /// grants, Basic credentials and anonymous callers by the rules.
    pub fn may(&self, caller: &Caller, repository: &str, action: Action) -> bool {
        match &caller.token {
            Some(claims) => claims.access.iter().any(|a| a.allows(repository, action)),
            None => self.rules.allows(&caller.identity, repository, action),
        }
    }
}

/// `base64(name:password)`; the password is wrapped at once.
pub fn parse_basic(encoded: &str) -> Option<(String, Secret)> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), Secret::new(password)))
}

/// Left in a catalog request's extensions when authentication is on: the catalog keeps
/// only what the caller may pull. The account's rules always decide; a bearer token
/// narrows that further, to the repositories it grants pull on, unless it was granted
/// the catalog itself (`registry:catalog:*`), which lists what the account may pull.
#[derive(Clone)]
pub struct CatalogFilter {
    auth: Arc<Auth>,
    identity: Identity,
    token: Option<Claims>,
}

impl CatalogFilter {
    pub fn new(auth: Arc<Auth>, caller: &Caller) -> Self {
        let token = caller.token.clone().filter(|t| {
            !t.access
                .iter()
                .any(|a| a.kind == "registry" && a.name == "catalog")
        });
        CatalogFilter {
            auth,
            identity: caller.identity.clone(),
            token,
        }
    }

    pub fn allows(&self, repository: &str) -> bool {
        let by_rules = self
            .auth
            .rules
            .allows(&self.identity, repository, Action::Pull);
        by_rules
            && self
                .token
                .as_ref()
                .is_none_or(|t| t.access.iter().any(|a| a.allows(repository, Action::Pull)))
    }
}

/// Registers the token endpoint.
pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
    token_service::configure(cfg);
}
