//! Logging: one line per request (method, route, repository, status, bytes, latency),
//! human-readable or JSON.

use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::request::Downstream;

/// Installs the global subscriber; logs go to stderr.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_env("SIGNET_LOG")
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Wraps every request in a span and logs its outcome.
pub async fn request_span(
    req: ServiceRequest,
    next: impl Downstream,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    // Route and repository as the request's one reading names them.
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = tracing::field::Empty,
        repository = tracing::field::Empty,
    );
    match crate::request::target_of(&req) {
        Some(target) => {
            span.record("route", target.pattern());
            if let Some(repository) = target.repository() {
                span.record("repository", repository.as_str());
            }
        }
        None => {
            span.record("route", "unreadable");
        }
    }
    let bytes_in = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let response = next.call(req).instrument(span.clone()).await?;
    let bytes_out = match response.response().body().size() {
        BodySize::Sized(n) => n,
        _ => 0,
    };
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            bytes_in,
            bytes_out,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        )
    });
    Ok(response)
}
