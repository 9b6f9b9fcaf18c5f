//! Prometheus metrics on the `prometheus` crate: every family Signet feeds, declared
//! once in [`Metrics`]; the one middleware that feeds the request series; and
//! `GET /metrics` in the text exposition format (version 0.0.4).
//!
//! A labelled family appears on its first observation. Names follow Prometheus
//! conventions: `signet_` prefix, counters end in `_total`, units in the name
//! (`_seconds`, `_bytes`). A new series is a field here, fed where it happens:
//!
//! ```ignore
//! crate::ops::metrics::global().sync_items.with_label_values(&[job, "ok"]).inc();
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpResponse, Responder};
use futures::Stream;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::request::Downstream;

/// Latency buckets, in seconds: API calls are milliseconds, blob transfers minutes.
pub const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Every series Signet exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub http_request_bytes: IntCounterVec,
    pub http_response_bytes: IntCounterVec,
    pub uploads_in_flight: IntGauge,
    pub gc_runs: IntCounterVec,
    pub gc_removed: IntCounterVec,
    pub gc_freed_bytes: IntCounterVec,
    pub retention_runs: IntCounterVec,
    pub retention_manifests: IntCounterVec,
    pub pulls_recorded: IntCounterVec,
    pub sync_running: IntGaugeVec,
    pub sync_items: IntCounterVec,
    pub sync_bytes: IntCounterVec,
    pub pull_through_fetches: IntCounterVec,
    pub pull_through_refused: IntCounterVec,
    pub trust_reloads: IntCounterVec,
    pub verification_verdicts: IntCounterVec,
    pub events_delivered: IntCounterVec,
    pub event_delivery_failures: IntCounterVec,
    pub events_dead: IntCounterVec,
    pub events_dropped: IntCounterVec,
    pub event_backlog: IntGaugeVec,
}

/// The process-wide set `/metrics` serves.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        Metrics {
            http_requests: counters(
                r,
                "signet_http_requests_total",
                "HTTP requests answered, by route, method and status.",
                &["route", "method", "status"],
            ),
            http_request_duration: histograms(
                r,
                "signet_http_request_duration_seconds",
                "Time to the response head, by route and method.",
                SECONDS,
                &["route", "method"],
            ),
            http_request_bytes: counters(
                r,
                "signet_http_request_bytes_total",
                "Request body bytes received, by route.",
                &["route"],
            ),
            http_response_bytes: counters(
                r,
                "signet_http_response_bytes_total",
                "Response body bytes sent, by route.",
                &["route"],
            ),
            uploads_in_flight: register(
                r,
                IntGauge::new("signet_uploads_in_flight", "Upload requests being served."),
            ),
            gc_runs: counters(
                r,
                "signet_gc_runs_total",
                "Garbage collections run by the server, by outcome.",
                &["outcome"],
            ),
            gc_removed: counters(
                r,
                "signet_gc_removed_total",
                "Objects garbage collection removed, by kind.",
                &["kind"],
            ),
            // Unlabelled, but a vector all the same: it appears once GC runs.
            gc_freed_bytes: counters(
                r,
                "signet_gc_freed_bytes_total",
                "Bytes of blobs garbage collection deleted.",
                &[],
            ),
            retention_runs: counters(
                r,
                "signet_retention_runs_total",
                "Scheduled retention runs, by outcome.",
                &["outcome"],
            ),
            retention_manifests: counters(
                r,
                "signet_retention_manifests_total",
                "Manifests retention deleted (with their attachments), or skipped because they changed after it read them.",
                &["outcome"],
            ),
            pulls_recorded: counters(
                r,
                "signet_pulls_recorded_total",
                "Manifest pulls written to the metadata store (the last of each manifest in each batch).",
                &[],
            ),
            sync_running: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "signet_sync_running",
                        "1 while a run of the sync job is in progress.",
                    ),
                    &["job"],
                ),
            ),
            sync_items: counters(
                r,
                "signet_sync_items_total",
                "Items (selected tags) sync runs finished, by job and outcome.",
                &["job", "outcome"],
            ),
            sync_bytes: counters(
                r,
                "signet_sync_bytes_total",
                "Blob bytes sync runs copied from upstream, by job.",
                &["job"],
            ),
            pull_through_fetches: counters(
                r,
                "signet_pull_through_fetches_total",
                "Pull-through fetches from upstream, by prefix, kind and outcome.",
                &["prefix", "kind", "outcome"],
            ),
            pull_through_refused: counters(
                r,
                "signet_pull_through_refused_total",
                "Pull-through misses answered without a fetch, by prefix and reason.",
                &["prefix", "reason"],
            ),
            trust_reloads: counters(
                r,
                "signet_trust_reloads_total",
                "Reloads of the trust configuration (SIGHUP), by result.",
                &["result"],
            ),
            verification_verdicts: counters(
                r,
                "signet_verification_verdicts_total",
                "Verdicts reached on signatures and attestations, by verdict.",
                &["verdict"],
            ),
            events_delivered: counters(
                r,
                "signet_events_delivered_total",
                "Events a notification endpoint acknowledged (2xx), by endpoint.",
                &["endpoint"],
            ),
            event_delivery_failures: counters(
                r,
                "signet_event_delivery_failures_total",
                "Failed tries at delivering an event (an error, a timeout or a non-2xx answer), by endpoint.",
                &["endpoint"],
            ),
            events_dead: counters(
                r,
                "signet_events_dead_total",
                "Events an endpoint gave up on after their tries (dead letters), by endpoint.",
                &["endpoint"],
            ),
            events_dropped: counters(
                r,
                "signet_events_dropped_total",
                "Pull-refused events dropped because the queue to the outbox was full.",
                &[],
            ),
            event_backlog: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "signet_event_backlog",
                        "Events recorded after an endpoint's cursor (not yet delivered or passed over).",
                    ),
                    &["endpoint"],
                ),
            ),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "metrics could not be rendered");
                String::new()
            })
    }
}

/// Registers a collector whose name and labels are fixed here (a bad one is a bug
/// that the tests meet first).
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("a valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric registered once");
    metric
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels))
}

fn histograms(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(registry, HistogramVec::new(opts, labels))
}

// ---------------------------------------------------------------------------------
// What the server's own paths feed.

/// One garbage collection's outcome (`maintenance.rs`, the scheduled collector).
pub fn record_gc(result: Result<&signet_storage::gc::GcReport, ()>) {
    let m = global();
    let outcome = if result.is_ok() { "ok" } else { "error" };
    m.gc_runs.with_label_values(&[outcome]).inc();
    if let Ok(report) = result {
        for (kind, count) in [
            ("manifest", report.manifests_count),
            ("link", report.links_count),
            ("blob", report.blobs_count),
        ] {
            m.gc_removed.with_label_values(&[kind]).inc_by(count);
        }
        m.gc_freed_bytes
            .with_label_values::<&str>(&[])
            .inc_by(report.bytes_freed);
    }
}

/// A scheduled retention run ended.
pub fn record_retention_run(ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    global().retention_runs.with_label_values(&[outcome]).inc();
}

/// Retention deleted `n` manifests (one with its attachments).
pub fn record_retention_deleted(n: usize) {
    global()
        .retention_manifests
        .with_label_values(&["deleted"])
        .inc_by(n as u64);
}

/// Retention left a manifest alone that changed after it was read.
pub fn record_retention_skipped() {
    global()
        .retention_manifests
        .with_label_values(&["skipped"])
        .inc();
}

/// A batch of `n` pulls was written.
pub fn record_pulls(n: usize) {
    global()
        .pulls_recorded
        .with_label_values::<&str>(&[])
        .inc_by(n as u64);
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
        global().uploads_in_flight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        global().uploads_in_flight.dec();
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
pub struct CountingBody<B> {
    inner: B,
    sent_total: IntCounter,
    sent: u64,
    /// The connection's file sends, counted as this response's when it ends.
    from_files: Option<crate::send_file::SendSlot>,
}

impl<B> Drop for CountingBody<B> {
    fn drop(&mut self) {
        let from_files = self.from_files.as_ref().map_or(0, |slot| slot.take_sent());
        self.sent_total.inc_by(self.sent + from_files);
    }
}

impl<B: MessageBody + Unpin> MessageBody for CountingBody<B> {
    type Error = B::Error;

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

/// The series one (route, method, status) feeds.
#[derive(Clone)]
struct RequestSeries {
    requests: IntCounter,
    duration: Histogram,
    request_bytes: IntCounter,
    response_bytes: IntCounter,
}

thread_local! {
    /// Series handles by (route pattern, method, status), found once per worker thread:
    /// `with_label_values` hashes the labels and takes a lock, four times a request.
    /// The keys are bounded: route patterns and methods are a fixed set, statuses three
    /// digits.
    static SERIES: RefCell<HashMap<(&'static str, &'static str, u16), RequestSeries>> =
        RefCell::new(HashMap::new());
}

/// A method as a label: the standard ones by name, any other as `OTHER`, so that a
/// client inventing methods cannot add series without end.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    static KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("OTHER", Method::as_str)
}

fn request_series(route: &'static str, method: &'static str, status: u16) -> RequestSeries {
    SERIES.with(|series| {
        series
            .borrow_mut()
            .entry((route, method, status))
            .or_insert_with(|| {
                let m = global();
                let status = status.to_string();
                RequestSeries {
                    requests: m.http_requests.with_label_values(&[route, method, &status]),
                    duration: m.http_request_duration.with_label_values(&[route, method]),
                    request_bytes: m.http_request_bytes.with_label_values(&[route]),
                    response_bytes: m.http_response_bytes.with_label_values(&[route]),
                }
            })
            .clone()
    })
}

/// The request series, fed once per request: count and latency by route, method and
/// status; body bytes in and out by route; upload requests in flight.
pub async fn track<D>(
    mut req: ServiceRequest,
    next: D,
) -> Result<ServiceResponse<CountingBody<D::Body>>, actix_web::Error>
where
    D: Downstream,
    D::Body: Unpin + 'static,
{
    let started = Instant::now();
    let method = method_label(req.method());
    let _in_flight = is_upload(&req).then(InFlight::start);
    // Route patterns, not paths: repository names and digests would make every series
    // its own. A request that did not read is counted under "unreadable".
    let route = match crate::request::target_of(&req) {
        Some(target) => target.pattern(),
        None => "unreadable",
    };
    // A request without a body (most pulls) has nothing to count.
    let read = match req.take_payload() {
        Payload::None => None,
        inner => {
            let read = Arc::new(AtomicU64::new(0));
            let payload = CountingPayload {
                inner,
                read: read.clone(),
            };
            req.set_payload(Payload::Stream {
                payload: Box::pin(payload),
            });
            Some(read)
        }
    };
    // Bytes a connection sends from a file never pass through the body.
    let from_files = req.conn_data::<crate::send_file::SendSlot>().cloned();
    let response = next.call(req).await?;
    let series = request_series(route, method, response.status().as_u16());
    series.requests.inc();
    series.duration.observe(started.elapsed().as_secs_f64());
    if let Some(read) = read {
        series.request_bytes.inc_by(read.load(Ordering::Relaxed));
    }
    Ok(response.map_body(move |_, inner| CountingBody {
        inner,
        sent_total: series.response_bytes,
        sent: 0,
        from_files,
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
    fn every_family_registers_and_renders_once_fed() {
        // Constructing them checks every name, help and label set.
        let m = Metrics::new();
        m.http_requests
            .with_label_values(&["/v2/\"x\"", "GET", "200"])
            .inc_by(3);
        m.http_request_duration
            .with_label_values(&["/v2/", "GET"])
            .observe(0.2);
        let text = m.render();
        assert!(
            text.contains("# TYPE signet_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "signet_http_requests_total{method=\"GET\",route=\"/v2/\\\"x\\\"\",status=\"200\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "signet_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v2/\",le=\"0.25\"} 1\n"
            ),
            "{text}"
        );
        // A labelled family nobody fed is not exported.
        assert!(!text.contains("signet_sync_items_total"), "{text}");
    }

    #[test]
    fn invented_methods_share_one_label() {
        use actix_web::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for invented in ["BREW", "PROPFIND", "X-1"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "OTHER", "{invented}");
        }
    }

    #[test]
    fn a_series_is_found_once_and_fed_through_its_handles() {
        let route = "/v2/<name>/tests/series";
        let first = request_series(route, "GET", 200);
        first.requests.inc();
        let again = request_series(route, "GET", 200);
        again.requests.inc();
        let counted = global()
            .http_requests
            .with_label_values(&[route, "GET", "200"])
            .get();
        assert_eq!(counted, 2);
    }
}
