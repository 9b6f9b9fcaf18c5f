//! `GET /healthz` (liveness) and `GET /readyz` (readiness).
//!
//! - `/healthz`: 200 whenever the process is serving. It checks nothing else, so an
//!   orchestrator does not restart a replica because its database is down.
//! - `/readyz`: 200 when the metadata database answers a ping and the blob store
//!   answers a lookup; 503 with `{"status":"unavailable","reason":...}` otherwise, and
//!   from the moment a drain begins (SIGTERM), so a load balancer stops sending.
//!
//! Both are open without credentials (`auth::middleware::classify`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::Ops;
use crate::state::AppState;

/// How long each readiness probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<AppState>, ops: web::Data<Ops>) -> HttpResponse {
    match readiness(&state, &ops).await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "unavailable", "reason": reason})),
    }
}

async fn readiness(state: &AppState, ops: &Ops) -> Result<(), String> {
    if ops.draining.load(Ordering::SeqCst) {
        return Err("draining: the server is shutting down".into());
    }
    match tokio::time::timeout(PROBE_TIMEOUT, state.meta.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: metadata database ping failed");
            return Err("metadata database unreachable".into());
        }
        Err(_) => return Err("metadata database ping timed out".into()),
    }
    // A lookup of a digest that need not exist: absent and present both prove the
    // store answers.
    let probe = signet_storage::Digest::sha256_of(b"");
    match tokio::time::timeout(PROBE_TIMEOUT, state.blobs.size(&probe)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: blob store lookup failed");
            Err("blob store unreachable".into())
        }
        Err(_) => Err("blob store lookup timed out".into()),
    }
}
