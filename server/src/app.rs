//! Builds the HTTP application and runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;

use crate::api;
use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a client has to send a request's head.
pub(crate) const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A bound, running server.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub server: actix_web::dev::Server,
    /// The stores, for what is left to write once the server stops.
    pub state: web::Data<AppState>,
}

/// Binds the listener and starts the HTTP workers and background maintenance. The
/// returned server must be awaited (or spawned) to serve.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let config = Arc::new(config);
    let state = web::Data::new(AppState::open(config.clone()).await?);
    crate::maintenance::spawn(state.clone().into_inner());
    crate::maintenance::spawn_gc(state.clone().into_inner());
    crate::maintenance::spawn_retention(state.clone().into_inner());
    crate::maintenance::spawn_pull_writer(state.clone().into_inner());
    let endpoints = crate::notify::worker::prepare(&state).await?;
    crate::notify::worker::spawn(state.clone().into_inner(), endpoints);
    let sync = web::Data::new(crate::sync::manager::SyncManager::new(
        state.clone().into_inner(),
    )?);
    crate::maintenance::spawn_sync(sync.clone().into_inner());
    let pull_through = web::Data::new(crate::sync::pull_through::PullThrough::new(
        &config.sync.pull_through,
    )?);

    let auth = web::Data::new(crate::auth::Auth::from_config(&config.auth)?);
    if config.auth.enabled && config.auth.token_key.is_empty() {
        // Each process signs with its own key: tokens die with it, and replicas refuse
        // each other's.
        tracing::warn!(
            "authentication is on with a token key generated at start: tokens end with \
             this process, replicas refuse each other's, and no refresh tokens are issued; \
             set [auth] token_key"
        );
    }
    let limits = web::Data::new(crate::auth::limits::Limits::new(
        &config.rate_limit,
        Duration::from_secs(config.uploads.expire_after_secs),
    ));

    let ops = Arc::new(crate::ops::Ops {
        metrics_public: config.metrics.public,
        ..Default::default()
    });
    let ops_data = web::Data::from(ops.clone());

    let app_state = state.clone();
    let application = move || {
        App::new()
            .app_data(app_state.clone())
            .app_data(sync.clone())
            .app_data(pull_through.clone())
            .app_data(ops_data.clone())
            .app_data(auth.clone())
            .app_data(limits.clone())
            // Every layer in front of the handlers (`pipeline`), as one middleware.
            .wrap(from_fn(crate::pipeline::run))
            // The distribution API first: actix tries each route kind in turn.
            .configure(api::configure)
            .configure(crate::ops::configure)
            .configure(crate::auth::configure)
            .configure(crate::ext::configure)
            .configure(crate::ui::configure)
            .default_service(web::to(unmatched))
    };
    // SIGTERM/SIGINT: drain first (`/readyz` 503), then the graceful stop.
    let shutdown = crate::ops::shutdown_signal(ops, Duration::from_secs(config.server.drain_secs));
    let (server, addr) = if config.server.tls.enabled() {
        let certs = crate::tls::ReloadingCert::open(&config.server.tls, crate::tls::provider())?;
        certs.watch(config.server.tls.reload_check_secs);
        let mut server = HttpServer::new(application)
            .shutdown_timeout(config.server.shutdown_timeout_secs)
            .shutdown_signal(shutdown)
            .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
            .bind_rustls_0_23(config.server.listen.as_str(), certs.server_config()?)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        if config.server.workers > 0 {
            server = server.workers(config.server.workers);
        }
        let addr = *server
            .addrs()
            .first()
            .ok_or_else(|| anyhow::anyhow!("no address bound"))?;
        (server.run(), addr)
    } else {
        crate::plain_http::serve(application, &config.server, shutdown)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?
    };
    Ok(RunningServer {
        addr,
        handle: server.handle(),
        server,
        state,
    })
}

/// Paths outside the API, and methods a resource does not take.
async fn unmatched(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    if req.method() == actix_web::http::Method::OPTIONS {
        return Ok(HttpResponse::NoContent()
            .insert_header((header::ALLOW, "GET, HEAD, PUT, PATCH, POST, DELETE"))
            .finish());
    }
    Err(ApiError::RouteNotFound)
}
