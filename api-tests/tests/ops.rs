//! What operators rely on: `/healthz` and `/readyz` (open even with authentication on),
//! Prometheus `/metrics` fed by real traffic (admin-only with authentication on, unless
//! `[metrics] public`), and the graceful drain on SIGTERM: `/readyz` turns 503 at once,
//! a slow streamed PATCH in flight finishes, and the upload session resumes on the
//! restarted server.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;
use signet_api_tests::oci::{absolute, header, push_image, start_upload};
use signet_api_tests::{client, random_bytes, sha256, Registry};

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn auth_config(extra: &str) -> String {
    let hash = |p: &str| bcrypt::hash(p, 4).unwrap();
    format!(
        "{extra}\n[auth]\nenabled = true\nadmins = [\"root\"]\n\
         [[auth.users]]\nname = \"root\"\npassword_bcrypt = \"{}\"\n\
         [[auth.users]]\nname = \"alice\"\npassword_bcrypt = \"{}\"\n",
        hash("root-pw"),
        hash("alice-pw")
    )
}

async fn status_of(c: &reqwest::Client, url: &str, auth: Option<&str>) -> (StatusCode, String) {
    let mut req = c.get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap())
}

/// The value of one series line (`name{labels} value`) whose text starts with `prefix`.
fn series(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn probes_answer_and_metrics_count_real_traffic() {
    let r = Registry::start();
    let c = client();
    let (status, body) = status_of(&c, &format!("{}/healthz", r.url), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = status_of(&c, &format!("{}/readyz", r.url), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ready"
    );

    let layer = random_bytes(10_000);
    push_image(&c, &r, "ops/app", "v1", &[&layer]).await;
    let digest = sha256(&layer);
    let (status, _) = status_of(&c, &r.v2(&format!("ops/app/blobs/{digest}")), None).await;
    assert_eq!(status, StatusCode::OK);

    let resp = c.get(format!("{}/metrics", r.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(resp.headers(), "content-type").starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("# TYPE signet_http_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE signet_http_request_duration_seconds histogram"),
        "{text}"
    );
    let manifests_put = series(
        &text,
        // (The exposition lists labels in name order.)
        "signet_http_requests_total{method=\"PUT\",route=\"/v2/{name:.+}/manifests/{reference}\",status=\"201\"}",
    );
    assert_eq!(manifests_put, Some(1.0), "{text}");
    let blob_route = "route=\"/v2/{name:.+}/blobs/{digest}\"";
    let sent = series(
        &text,
        &format!("signet_http_response_bytes_total{{{blob_route}}}"),
    );
    assert!(sent.unwrap_or(0.0) >= 10_000.0, "{text}");
    let received = text
        .lines()
        .filter(|l| l.starts_with("signet_http_request_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(received >= 10_000.0, "bytes in counted: {text}");
    assert_eq!(
        series(&text, "signet_uploads_in_flight "),
        Some(0.0),
        "{text}"
    );
    // Nothing ran GC: its series do not exist (no placeholders).
    assert!(!text.contains("signet_gc_"), "{text}");
}

#[tokio::test]
async fn probes_are_open_and_metrics_need_an_admin_when_auth_is_on() {
    let r = Registry::start_with_config(&auth_config(""));
    let c = client();
    for probe in ["healthz", "readyz"] {
        let (status, body) = status_of(&c, &format!("{}/{probe}", r.url), None).await;
        assert_eq!(status, StatusCode::OK, "{probe}: {body}");
    }
    let metrics = format!("{}/metrics", r.url);
    assert_eq!(
        status_of(&c, &metrics, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let alice = basic("alice", "alice-pw");
    assert_eq!(
        status_of(&c, &metrics, Some(&alice)).await.0,
        StatusCode::FORBIDDEN
    );
    let root = basic("root", "root-pw");
    let (status, text) = status_of(&c, &metrics, Some(&root)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("signet_http_requests_total"), "{text}");

    let open = Registry::start_with_config(&auth_config("[metrics]\npublic = true\n"));
    let (status, _) = status_of(&c, &format!("{}/metrics", open.url), None).await;
    assert_eq!(status, StatusCode::OK);
    // Public metrics open nothing else.
    assert_eq!(
        status_of(&c, &open.v2("_catalog"), None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sigterm_drains_readyz_flips_and_the_upload_resumes_after_restart() {
    let mut r =
        Registry::start_with_config("[server]\ndrain_secs = 4\nshutdown_timeout_secs = 20\n");
    let c = client();
    let upload = start_upload(&c, &r, "drain/app").await;
    let path = upload.strip_prefix(&r.url).unwrap().to_string();
    let (first, second, last) = (
        random_bytes(256 * 1024),
        random_bytes(256 * 1024),
        random_bytes(1000),
    );

    // A PATCH streamed in two halves (chunked, no Content-Length), with a pause between
    // them during which the server is told to stop.
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (a, b) = (first.clone(), second.clone());
    let body = futures::stream::unfold((0, Some(go_rx)), move |(step, go)| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            match step {
                0 => Some((Ok::<Bytes, std::io::Error>(a), (1, go))),
                1 => {
                    let _ = go.unwrap().await;
                    Some((Ok(b), (2, None)))
                }
                _ => None,
            }
        }
    });
    let patch = tokio::spawn({
        let c = c.clone();
        let url = upload.clone();
        async move {
            c.patch(url)
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!patch.is_finished(), "the PATCH waits for its second half");

    let readyz = format!("{}/readyz", r.url);
    assert_eq!(status_of(&c, &readyz, None).await.0, StatusCode::OK);
    std::process::Command::new("kill")
        .args(["-TERM", &r.pid().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let (status, body) = loop {
        let (status, body) = status_of(&c, &readyz, None).await;
        if status != StatusCode::OK || Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("draining"), "{body}");
    // Still alive while it drains.
    assert_eq!(
        status_of(&c, &format!("{}/healthz", r.url), None).await.0,
        StatusCode::OK
    );

    // The in-flight PATCH finishes.
    go_tx.send(()).unwrap();
    let resp = patch.await.unwrap().expect("the PATCH in flight completes");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header(resp.headers(), "range"),
        format!("0-{}", first.len() + second.len() - 1)
    );

    // The process exits by itself once drained.
    let exited = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&r.host).is_ok() {
        assert!(
            Instant::now() < exited,
            "signet did not stop after the drain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(r.stderr().contains("draining"), "{}", r.stderr());

    // A new process on the same stores continues the session.
    r.crash_and_restart();
    let upload = absolute(&r, &path);
    let resp = c.get(&upload).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(resp.headers(), "range"),
        format!("0-{}", first.len() + second.len() - 1)
    );
    let mut all = first.to_vec();
    all.extend_from_slice(&second);
    all.extend_from_slice(&last);
    let digest = sha256(&all);
    let sep = if upload.contains('?') { '&' } else { '?' };
    let resp = c
        .put(format!("{upload}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(last.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let (status, bytes) =
        signet_api_tests::oci::get(&c, &r.v2(&format!("drain/app/blobs/{digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha256(&bytes), digest);
}
