//! Prometheus metrics: a small registry written here (no client crate), the one
//! middleware that feeds the request series, and `GET /metrics` in the text exposition
//! format (version 0.0.4).
//!
//! Only series that something feeds exist: a family appears on its first observation.
//! Features that come later (sync progress, verification verdicts) use the same
//! process-wide registry, [`global`]:
//!
//! ```ignore
//! let m = signet_server::ops::metrics::global();
//! m.counter_add("signet_sync_blobs_copied_total", "Blobs copied by sync.", &[("peer", "eu")], 1.0);
//! m.gauge_set("signet_sync_lag_seconds", "Age of the oldest unsynced change.", &[], 4.0);
//! m.observe("signet_verify_seconds", "Time to verify a signature.", SECONDS, &[], 0.02);
//! ```
//!
//! Names follow Prometheus conventions: `signet_` prefix, counters end in `_total`,
//! units in the name (`_seconds`, `_bytes`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpResponse, Responder};
use futures::Stream;

/// Latency buckets, in seconds: API calls are milliseconds, blob transfers minutes.
pub const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone)]
enum Series {
    Value(f64),
    Histogram {
        bounds: Vec<f64>,
        /// Per bucket (not cumulative), plus one for +Inf.
        counts: Vec<u64>,
        sum: f64,
        count: u64,
    },
}

type Labels = Vec<(String, String)>;

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<Labels, Series>,
}

/// A set of metric families, rendered by [`Registry::render`].
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

/// The process-wide registry `/metrics` serves.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Registry {
    fn with_series(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        pairs: &[(&str, &str)],
        init: impl FnOnce() -> Series,
        update: impl FnOnce(&mut Series),
    ) {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            tracing::warn!(metric = name, "metric used with two types; ignored");
            return;
        }
        update(family.series.entry(labels(pairs)).or_insert_with(init));
    }

    /// Adds `by` (≥ 0) to a counter.
    pub fn counter_add(&self, name: &str, help: &str, labels: &[(&str, &str)], by: f64) {
        self.with_series(
            name,
            help,
            Kind::Counter,
            labels,
            || Series::Value(0.0),
            |s| {
                if let Series::Value(v) = s {
                    *v += by.max(0.0);
                }
            },
        );
    }

    pub fn gauge_set(&self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.with_series(
            name,
            help,
            Kind::Gauge,
            labels,
            || Series::Value(0.0),
            |s| *s = Series::Value(value),
        );
    }

    pub fn gauge_add(&self, name: &str, help: &str, labels: &[(&str, &str)], delta: f64) {
        self.with_series(
            name,
            help,
            Kind::Gauge,
            labels,
            || Series::Value(0.0),
            |s| {
                if let Series::Value(v) = s {
                    *v += delta;
                }
            },
        );
    }

    /// Records one observation in a histogram with upper bounds `buckets` (ascending;
    /// the first use of a series fixes them).
    pub fn observe(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.with_series(
            name,
            help,
            Kind::Histogram,
            labels,
            || Series::Histogram {
                bounds: buckets.to_vec(),
                counts: vec![0; buckets.len() + 1],
                sum: 0.0,
                count: 0,
            },
            |s| {
                if let Series::Histogram {
                    bounds,
                    counts,
                    sum,
                    count,
                } = s
                {
                    let i = bounds
                        .iter()
                        .position(|b| value <= *b)
                        .unwrap_or(bounds.len());
                    counts[i] += 1;
                    *sum += value;
                    *count += 1;
                }
            },
        );
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            if family.series.is_empty() {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.name());
            for (labels, series) in &family.series {
                match series {
                    Series::Value(v) => {
                        let _ = writeln!(out, "{name}{} {}", render_labels(labels, None), num(*v));
                    }
                    Series::Histogram {
                        bounds,
                        counts,
                        sum,
                        count,
                    } => {
                        let mut cumulative = 0;
                        for (i, n) in counts.iter().enumerate() {
                            cumulative += n;
                            let le = bounds.get(i).map_or("+Inf".to_string(), |b| num(*b));
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {cumulative}",
                                render_labels(labels, Some(&le))
                            );
                        }
                        let l = render_labels(labels, None);
                        let _ = writeln!(out, "{name}_sum{l} {}", num(*sum));
                        let _ = writeln!(out, "{name}_count{l} {count}");
                    }
                }
            }
        }
        out
    }
}

fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

// ---------------------------------------------------------------------------------
// What Signet itself feeds.

const UPLOADS_IN_FLIGHT: &str = "signet_uploads_in_flight";

/// One garbage collection's outcome (`maintenance.rs`, the scheduled collector).
pub fn record_gc(result: Result<&signet_storage::gc::GcReport, ()>) {
    let m = global();
    let outcome = if result.is_ok() { "ok" } else { "error" };
    m.counter_add(
        "signet_gc_runs_total",
        "Garbage collections run by the server, by outcome.",
        &[("outcome", outcome)],
        1.0,
    );
    if let Ok(report) = result {
        let removed = "Objects garbage collection removed, by kind.";
        let total = "signet_gc_removed_total";
        for (kind, count) in [
            ("manifest", report.manifests.len()),
            ("link", report.links.len()),
            ("blob", report.blobs.len()),
        ] {
            m.counter_add(total, removed, &[("kind", kind)], count as f64);
        }
        m.counter_add(
            "signet_gc_freed_bytes_total",
            "Bytes of blobs garbage collection deleted.",
            &[],
            report.bytes_freed as f64,
        );
    }
}

/// Is this request one of an upload session (POST, PATCH, PUT of blob bytes)?
fn is_upload(req: &ServiceRequest) -> bool {
    use crate::request::Kind;
    crate::request::target_of(req)
        .and_then(|t| t.kind())
        .is_some_and(|k| matches!(k, Kind::Upload | Kind::UploadStart))
}

/// Counts an upload request in flight for as long as it lives.
struct InFlight;

impl InFlight {
    fn start() -> Self {
        global().gauge_add(UPLOADS_IN_FLIGHT, "Upload requests being served.", &[], 1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        global().gauge_add(
            UPLOADS_IN_FLIGHT,
            "Upload requests being served.",
            &[],
            -1.0,
        );
    }
}

/// A request body that counts what the handler reads of it.
struct CountingPayload {
    inner: Payload,
    read: Arc<AtomicU64>,
}

impl Stream for CountingPayload {
    type Item = Result<Bytes, actix_web::error::PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &poll {
            self.read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        poll
    }
}

/// A response body that records the bytes actually sent when it is done (or dropped:
/// a client that hangs up mid-blob).
pub struct CountingBody {
    inner: BoxBody,
    route: String,
    sent: u64,
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        global().counter_add(
            "signet_http_response_bytes_total",
            "Response body bytes sent, by route.",
            &[("route", &self.route)],
            self.sent as f64,
        );
    }
}

impl MessageBody for CountingBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &poll {
            self.sent += chunk.len() as u64;
        }
        poll
    }
}

/// The request series, fed once per request: count and latency by route, method and
/// status; body bytes in and out by route; upload requests in flight.
pub async fn track<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<CountingBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let _in_flight = is_upload(&req).then(InFlight::start);
    // Route patterns, not paths: repository names and digests would make every series
    // its own. A request that did not read is counted under "unreadable".
    let route = match crate::request::target_of(&req) {
        Some(target) => target.pattern().to_string(),
        None => "unreadable".to_string(),
    };
    let read = Arc::new(AtomicU64::new(0));
    let payload = CountingPayload {
        inner: req.take_payload(),
        read: read.clone(),
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(payload),
    });
    let response = next.call(req).await?;
    let status = response.status().as_u16().to_string();
    let m = global();
    m.counter_add(
        "signet_http_requests_total",
        "HTTP requests answered, by route, method and status.",
        &[("route", &route), ("method", &method), ("status", &status)],
        1.0,
    );
    m.observe(
        "signet_http_request_duration_seconds",
        "Time to the response head, by route and method.",
        SECONDS,
        &[("route", &route), ("method", &method)],
        started.elapsed().as_secs_f64(),
    );
    m.counter_add(
        "signet_http_request_bytes_total",
        "Request body bytes received, by route.",
        &[("route", &route)],
        read.load(Ordering::Relaxed) as f64,
    );
    Ok(response.map_body(move |_, inner| CountingBody {
        inner: BoxBody::new(inner),
        route,
        sent: 0,
    }))
}

/// `GET /metrics`.
pub async fn serve() -> impl Responder {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(global().render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let r = Registry::default();
        r.counter_add(
            "t_requests_total",
            "Requests.",
            &[("route", "/v2/\"x\"")],
            2.0,
        );
        r.counter_add(
            "t_requests_total",
            "Requests.",
            &[("route", "/v2/\"x\"")],
            1.0,
        );
        r.gauge_set("t_up", "Up.", &[], 1.0);
        r.observe("t_seconds", "Latency.", &[0.1, 1.0], &[], 0.5);
        r.observe("t_seconds", "Latency.", &[0.1, 1.0], &[], 5.0);
        let text = r.render();
        assert!(text.contains("# TYPE t_requests_total counter\n"), "{text}");
        assert!(
            text.contains("t_requests_total{route=\"/v2/\\\"x\\\"\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("t_up 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.1\"} 0\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"1\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(
            text.contains("t_seconds_sum 5.5\nt_seconds_count 2\n"),
            "{text}"
        );
    }

    #[test]
    fn families_without_series_are_not_exported() {
        assert_eq!(Registry::default().render(), "");
    }
}
