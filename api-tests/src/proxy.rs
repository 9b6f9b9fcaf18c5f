//! A small fault-injecting HTTP/1.1 proxy for tests: it forwards every request to an
//! upstream, and can answer every Nth one with `503 Service Unavailable` (or `429` with
//! `Retry-After`) instead, or delay each one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does; change it while it runs.
#[derive(Default)]
pub struct Faults {
    /// Every Nth request (counting all) fails; 0 = none.
    pub fail_every: AtomicU64,
    /// Answer failures with `429` + `Retry-After: 1` instead of 503 (when 1).
    pub too_many: AtomicU64,
    /// Never fail `GET /v2/` (when 1): clients probe it for the auth challenge and
    /// may tolerate its failure silently, which makes retry counts unpredictable.
    /// Spared requests do not count towards `fail_every`.
    pub spare_base: AtomicU64,
    /// Milliseconds each request waits before it is forwarded.
    pub delay_ms: AtomicU64,
    /// Requests seen, and those answered with a failure.
    pub requests: AtomicU64,
    /// Requests that count towards `fail_every`.
    pub counted: AtomicU64,
    pub failed: AtomicU64,
    /// `METHOD target` of each failed request.
    pub failed_requests: std::sync::Mutex<Vec<String>>,
}

pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`) on the current
    /// tokio runtime.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(Faults::default());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        let upstream = upstream.trim_end_matches('/').to_string();
        let f = faults.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (f, client, upstream) = (f.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &f, &client, &upstream).await;
                });
            }
        });
        Proxy { url, faults, task }
    }

    pub fn requests(&self) -> u64 {
        self.faults.requests.load(Ordering::SeqCst)
    }

    /// `METHOD target` of each failed request.
    pub fn failed_requests(&self) -> Vec<String> {
        self.faults.failed_requests.lock().unwrap().clone()
    }

    pub fn failed(&self) -> u64 {
        self.faults.failed.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    faults: &Faults,
    client: &reqwest::Client,
    upstream: &str,
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // The request head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("GET").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut length = 0usize;
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_string(), v.trim().to_string());
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        while buf.len() < length {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf.drain(..length).collect();

        let spared =
            faults.spare_base.load(Ordering::SeqCst) == 1 && (target == "/v2/" || target == "/v2");
        faults.requests.fetch_add(1, Ordering::SeqCst);
        let n = if spared {
            0
        } else {
            faults.counted.fetch_add(1, Ordering::SeqCst) + 1
        };
        let delay = faults.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let every = faults.fail_every.load(Ordering::SeqCst);
        if every > 0 && n > 0 && n % every == 0 {
            faults.failed.fetch_add(1, Ordering::SeqCst);
            faults
                .failed_requests
                .lock()
                .unwrap()
                .push(format!("{method} {target}"));
            let answer: &[u8] = if faults.too_many.load(Ordering::SeqCst) == 1 {
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
            } else {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
            };
            stream.write_all(answer).await?;
            continue;
        }

        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let is_head = method == reqwest::Method::HEAD;
        let mut req = client.request(method, format!("{upstream}{target}"));
        for (k, v) in &headers {
            let lower = k.to_ascii_lowercase();
            if ["host", "content-length", "connection", "transfer-encoding"]
                .contains(&lower.as_str())
            {
                continue;
            }
            req = req.header(k, v);
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(_) => {
                stream
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    .await?;
                continue;
            }
        };
        let status = resp.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut head_length = None;
        for (k, v) in resp.headers() {
            let k = k.as_str();
            if k == "content-length" {
                head_length = Some(String::from_utf8_lossy(v.as_bytes()).into_owned());
                continue;
            }
            if k == "transfer-encoding" || k == "connection" {
                continue;
            }
            out.push_str(&format!(
                "{k}: {}\r\n",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
        let body = resp.bytes().await.unwrap_or_default();
        if is_head {
            out.push_str(&format!(
                "content-length: {}\r\n\r\n",
                head_length.unwrap_or_else(|| "0".into())
            ));
            stream.write_all(out.as_bytes()).await?;
        } else {
            out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
    }
}
