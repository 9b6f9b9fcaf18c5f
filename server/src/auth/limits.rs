//! Limits per client (by peer address): a request rate (token bucket; 429
//! `TOOMANYREQUESTS` with `Retry-After`) and a cap on open upload sessions. Both off
//! by default. They run before authentication, so a flood of wrong passwords cannot
//! keep bcrypt busy.
//!
//! The counts live in this process: with several replicas each enforces its own share.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::request::{target_of, Area, Kind, Route};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second per client; 0: no rate limit.
    pub requests_per_sec: f64,
    /// Requests a client may send at once above the sustained rate.
    pub burst: u32,
    /// Open upload sessions per client; 0: no cap.
    pub max_upload_sessions_per_client: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests_per_sec: 0.0,
            burst: 100,
            max_upload_sessions_per_client: 0,
        }
    }
}

/// Tracked clients above this many are swept of idle ones.
const SWEEP_AT: usize = 50_000;

#[derive(Debug)]
pub struct Limits {
    config: RateLimitConfig,
    /// How long an upload session counts against its client if never finished.
    session_lifetime: Duration,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    sessions: Mutex<HashMap<String, (IpAddr, Instant)>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limits {
    pub fn new(config: &RateLimitConfig, session_lifetime: Duration) -> Self {
        Limits {
            config: config.clone(),
            session_lifetime,
            buckets: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn active(&self) -> bool {
        self.config.requests_per_sec > 0.0 || self.config.max_upload_sessions_per_client > 0
    }

    /// Takes one token; `Err(seconds to wait)` when the bucket is empty.
    fn take(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let rate = self.config.requests_per_sec;
        if rate <= 0.0 {
            return Ok(());
        }
        let capacity = f64::from(self.config.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= SWEEP_AT {
            // A client idle long enough to have refilled its bucket loses nothing.
            let full_after = Duration::from_secs_f64(capacity / rate);
            buckets.retain(|_, b| now.duration_since(b.at) < full_after);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    fn open_sessions(&self, client: IpAddr, now: Instant) -> usize {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, (_, started)| now.duration_since(*started) < self.session_lifetime);
        sessions.values().filter(|(c, _)| *c == client).count()
    }

    fn session_opened(&self, id: &str, client: IpAddr) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(id.to_string(), (client, Instant::now()));
    }

    fn session_closed(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(id);
    }
}

fn too_many(retry_after: u64) -> actix_web::HttpResponse {
    let mut response = ApiError::TooManyRequests.error_response();
    if let Ok(value) = header::HeaderValue::from_str(&retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

pub async fn enforce(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(limits) = req
        .app_data::<web::Data<Limits>>()
        .map(|l| l.clone().into_inner())
        .filter(|l| l.active())
    else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let client = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let now = Instant::now();
    if let Err(wait) = limits.take(client, now) {
        tracing::warn!(target: "audit", event = "denied", reason = "rate limit", method = %req.method(), path = %req.path(), status = 429, peer = %client);
        return Ok(req.into_response(too_many(wait)).map_into_right_body());
    }
    let cap = limits.config.max_upload_sessions_per_client;
    let target = target_of(&req);
    let kind = target.as_ref().and_then(|t| t.kind());
    let method = req.method().clone();
    if cap > 0
        && kind == Some(Kind::UploadStart)
        && method == Method::POST
        && limits.open_sessions(client, now) >= cap
    {
        tracing::warn!(target: "audit", event = "denied", reason = "too many open upload sessions", path = %req.path(), status = 429, peer = %client);
        return Ok(req
            .into_response(too_many(limits.session_lifetime.as_secs().clamp(1, 60)))
            .map_into_right_body());
    }
    let upload_id = match target.map(|t| t.route) {
        Some(Route::Repository {
            area: Area::Upload { session, .. },
            ..
        }) => Some(session),
        _ => None,
    };
    let response = next.call(req).await?;
    if cap > 0 {
        let status = response.status();
        match kind {
            Some(Kind::UploadStart) if status == StatusCode::ACCEPTED => {
                if let Some(id) = response
                    .headers()
                    .get(crate::api::UPLOAD_UUID_HEADER)
                    .and_then(|v| v.to_str().ok())
                {
                    limits.session_opened(id, client);
                }
            }
            Some(Kind::Upload)
                if (method == Method::PUT || method == Method::DELETE)
                    && (status.is_success() || status == StatusCode::NOT_FOUND) =>
            {
                if let Some(id) = &upload_id {
                    limits.session_closed(id);
                }
            }
            _ => {}
        }
    }
    Ok(response.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refills() {
        let limits = Limits::new(
            &RateLimitConfig {
                requests_per_sec: 2.0,
                burst: 3,
                max_upload_sessions_per_client: 0,
            },
            Duration::from_secs(60),
        );
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limits.take(client, t0).is_ok());
        }
        assert_eq!(limits.take(client, t0), Err(1));
        // Another client has its own bucket.
        assert!(limits
            .take(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), t0)
            .is_ok());
        assert!(limits.take(client, t0 + Duration::from_millis(600)).is_ok());
        assert!(limits
            .take(client, t0 + Duration::from_millis(600))
            .is_err());
    }

    #[test]
    fn sessions_count_until_closed_or_expired() {
        let limits = Limits::new(&RateLimitConfig::default(), Duration::from_secs(60));
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        limits.session_opened("a", client);
        limits.session_opened("b", client);
        assert_eq!(limits.open_sessions(client, Instant::now()), 2);
        limits.session_closed("a");
        assert_eq!(limits.open_sessions(client, Instant::now()), 1);
        assert_eq!(
            limits.open_sessions(client, Instant::now() + Duration::from_secs(61)),
            0
        );
    }
}
