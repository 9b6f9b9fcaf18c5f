//! Limits per client (by peer address): a request rate (token bucket; 429
//! `TOOMANYREQUESTS` with `Retry-After`) and a cap on open upload sessions. Both off
//! by default. They run before authentication, so a flood of wrong passwords cannot
//! keep bcrypt busy.
//!
//! The counts live in this process: with several replicas each enforces its own share.
//! The rate is `governor`'s keyed GCRA limiter (a token bucket without a timer); the
//! session cap, which no rate limiter models, is counted here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, ResponseError};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::request::Downstream;
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
    rate: Option<Rate>,
    sessions: Mutex<HashMap<String, (IpAddr, Instant)>>,
}

/// Requests per client: `burst` at once, then one per `1 / requests_per_sec`.
struct Rate<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for Rate<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rate").finish_non_exhaustive()
    }
}

impl<C: Clock + Clone> Rate<C> {
    fn new(config: &RateLimitConfig, clock: C) -> Option<Self> {
        let rate = config.requests_per_sec;
        if !(rate > 0.0 && rate.is_finite()) {
            return None;
        }
        let burst = NonZeroU32::new(config.burst.max(1)).expect("at least one");
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))?.allow_burst(burst);
        Some(Rate {
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// Takes one request's token; `Err(seconds to wait)` when the client has none.
    fn take(&self, client: IpAddr) -> Result<(), u64> {
        if self.limiter.len() >= SWEEP_AT {
            // A client idle long enough to have its whole burst back loses nothing.
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }
}

impl Limits {
    pub fn new(config: &RateLimitConfig, session_lifetime: Duration) -> Self {
        Limits {
            config: config.clone(),
            session_lifetime,
            rate: Rate::new(config, DefaultClock::default()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn active(&self) -> bool {
        self.rate.is_some() || self.config.max_upload_sessions_per_client > 0
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
    next: impl Downstream,
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
    if let Err(wait) = limits.rate.as_ref().map_or(Ok(()), |r| r.take(client)) {
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
    let upload_id = match target.as_deref().map(|t| &t.route) {
        Some(Route::Repository {
            area: Area::Upload { session, .. },
            ..
        }) => Some(session.clone()),
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
    fn each_client_has_its_burst_then_its_rate() {
        let clock = governor::clock::FakeRelativeClock::default();
        let config = RateLimitConfig {
            requests_per_sec: 2.0,
            burst: 3,
            max_upload_sessions_per_client: 0,
        };
        let rate = Rate::new(&config, clock.clone()).unwrap();
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..3 {
            assert!(rate.take(client).is_ok());
        }
        assert_eq!(rate.take(client), Err(1));
        // Another client has its own bucket.
        assert!(rate.take(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))).is_ok());
        clock.advance(Duration::from_millis(600));
        assert!(rate.take(client).is_ok());
        assert!(rate.take(client).is_err());
        // No rate configured, or one that is not a number: no limiter.
        for off in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let config = RateLimitConfig {
                requests_per_sec: off,
                ..config.clone()
            };
            assert!(Rate::new(&config, clock.clone()).is_none(), "{off}");
        }
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
