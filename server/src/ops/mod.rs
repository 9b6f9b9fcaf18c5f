//! What operators expect of a server: health and readiness probes, Prometheus metrics,
//! and a graceful drain on SIGTERM.
//!
//! The drain: on SIGTERM (or SIGINT) `/readyz` turns 503 at once while the server keeps
//! serving for `[server] drain_secs`, so load balancers stop sending; then actix stops
//! accepting and gives in-flight requests `[server] shutdown_timeout_secs` to finish. A
//! second signal skips the rest of the wait. Upload sessions cut off stay resumable:
//! their state is in the stores.

pub mod health;
pub mod metrics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::web;

/// Process-wide operational state, shared by the probes and the signal watcher.
#[derive(Debug, Default)]
pub struct Ops {
    /// Set when a drain begins; never cleared.
    pub draining: AtomicBool,
    /// `[metrics] public`: `/metrics` open to all even when authentication is on.
    pub metrics_public: bool,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::request::{resource, Kind};
    cfg.service(resource(Kind::Healthz).on(Method::GET, health::healthz))
        .service(resource(Kind::Readyz).on(Method::GET, health::readyz))
        .service(resource(Kind::Metrics).on(Method::GET, metrics::serve));
}

/// Resolves when the server should stop: after a SIGTERM/SIGINT and the drain period
/// (cut short by a second signal). Marks `ops` draining as soon as the first arrives.
pub async fn shutdown_signal(ops: Arc<Ops>, drain: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    ops.draining.store(true, Ordering::SeqCst);
    tracing::info!(
        signal = which,
        drain_secs = drain.as_secs(),
        "draining: /readyz now answers 503; still serving until the drain ends"
    );
    tokio::select! {
        _ = tokio::time::sleep(drain) => {}
        _ = term.recv() => tracing::info!("second signal: ending the drain early"),
        _ = int.recv() => tracing::info!("second signal: ending the drain early"),
    }
    tracing::info!("drain over: finishing in-flight requests, accepting no more");
}
