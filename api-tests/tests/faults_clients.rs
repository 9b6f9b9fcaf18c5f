//! Slow and vanishing clients: uploads abandoned in the middle of their body (a PATCH
//! with a declared length, a chunked PATCH, a monolithic POST), and readers that stop
//! reading a large blob and then disconnect, many at once. The server's open file
//! descriptors (`/proc/<pid>/fd`) and resident memory (`VmRSS`) come back near where
//! they were, and it still answers correctly.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::StatusCode;
use signet_api_tests::oci::push_blob;
use signet_api_tests::{random_bytes, sha256, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Open file descriptors of a process, except those of the SQLite database (its
/// connection pool grows with concurrency up to its bound, which is no leak).
fn open_fds(pid: u32) -> usize {
    fd_targets(pid)
        .iter()
        .filter(|t| !t.contains("/signet.db"))
        .count()
}

/// What each open descriptor of a process refers to, for messages: a file's path,
/// or the kind of anything else (`socket`, `pipe`, `anon_inode`).
fn fd_targets(pid: u32) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| {
                    let t = t.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        t
                    } else {
                        t.split(':').next().unwrap_or_default().to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Opens an upload session; its path.
async fn session(c: &reqwest::Client, r: &Registry, repo: &str) -> String {
    let resp = c
        .post(r.v2(&format!("{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    location
        .strip_prefix(&r.url)
        .map(str::to_string)
        .unwrap_or(location)
}

/// Writes a request head and part of its body on a raw connection, waits, and drops
/// the connection without finishing.
async fn abandon(host: &str, head: String, body: &[u8], linger: Duration) {
    let mut conn = TcpStream::connect(host).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    // The server may already have answered and closed (a refused request); that is
    // fine, the point is the connection going away mid-body.
    let _ = conn.write_all(body).await;
    tokio::time::sleep(linger).await;
    drop(conn);
}

/// One abusive client, of the kind `i` selects.
async fn misbehave(c: &reqwest::Client, r: &Registry, i: usize, big: &str, big_len: usize) {
    let host = &r.host;
    let partial = random_bytes(200_000);
    let linger = Duration::from_millis(50 + (i as u64 % 5) * 40);
    match i % 4 {
        // PATCH declaring a megabyte, sending a fifth of it.
        0 => {
            let path = session(c, r, "abuse/patch").await;
            let head = format!(
                "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Range: 0-999999\r\nContent-Length: 1000000\r\n\r\n"
            );
            abandon(host, head, &partial, linger).await;
        }
        // Chunked PATCH (as podman sends), cut off between chunks.
        1 => {
            let path = session(c, r, "abuse/chunked").await;
            let head = format!(
                "PATCH {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n\
                 Transfer-Encoding: chunked\r\n\r\n"
            );
            let mut body = format!("{:x}\r\n", partial.len()).into_bytes();
            body.extend_from_slice(&partial);
            body.extend_from_slice(b"\r\n");
            abandon(host, head, &body, linger).await;
        }
        // Monolithic upload (POST ?digest=), cut off.
        2 => {
            let whole = random_bytes(1_000_000);
            let head = format!(
                "POST /v2/abuse/mono/blobs/uploads/?digest={} HTTP/1.1\r\nHost: {host}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n",
                sha256(&whole)
            );
            abandon(host, head, &whole[..300_000], linger).await;
        }
        // A reader of a large blob that reads a little, stalls, and goes away.
        _ => {
            let mut conn = TcpStream::connect(host).await.unwrap();
            let head = format!("GET /v2/abuse/big/blobs/{big} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            conn.write_all(head.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&buf[..n.min(200)])
            );
            assert!(n < big_len, "the reader stopped before the end");
            tokio::time::sleep(linger * 3).await;
            drop(conn);
        }
    }
}

const CLIENTS: usize = 48;
const CONCURRENT: usize = 16;

/// [`CLIENTS`] misbehaving clients, [`CONCURRENT`] at a time.
async fn wave(c: &reqwest::Client, r: &Registry, big: &str, big_len: usize) {
    futures::stream::iter(0..CLIENTS)
        .for_each_concurrent(CONCURRENT, |i| misbehave(c, r, i, big, big_len))
        .await;
}

/// Waits (bounded) until the server's descriptors drop to `limit`; the last count.
async fn settle_fds(pid: u32, limit: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n = open_fds(pid);
        if n <= limit || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_and_stalled_readers_leak_nothing() {
    let r = Registry::start();
    let pid = r.pid();
    // No idle keep-alive connections kept by the test itself: the server's sockets
    // then count only what the misbehaving clients left behind.
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let big = random_bytes(16 * 1024 * 1024);
    let big_digest = push_blob(&c, &r, "abuse/big", &big).await;

    // One wave first: buffers, pools and allocator arenas reach their working size.
    wave(&c, &r, &big_digest, big.len()).await;
    let base_fds = settle_fds(pid, 0).await.max(open_fds(pid));
    let base_rss = rss_kib(pid);
    let base_targets = fd_targets(pid);

    for _ in 0..3 {
        wave(&c, &r, &big_digest, big.len()).await;
    }
    let during = open_fds(pid);
    // Descriptors: every abandoned connection and staging file closed again (slack for
    // a couple of keep-alive connections); a leak would be one per abandoned client,
    // over a hundred.
    let fds = settle_fds(pid, base_fds + 2).await;
    let rss = rss_kib(pid);
    eprintln!(
        "fds: baseline {base_fds}, just after {during}, settled {fds}; \
         RSS KiB: baseline {base_rss}, after {rss}"
    );
    assert!(
        fds <= base_fds + 2,
        "descriptors leaked: {base_fds} before, {fds} after three waves of {CLIENTS} clients\n\
         before: {base_targets:?}\nafter: {:?}",
        fd_targets(pid)
    );
    // Memory: three more waves of the same abuse may not grow it by more than 32 MiB;
    // keeping the abandoned bodies would be over 50 MiB, the stalled readers' buffers
    // more.
    assert!(
        rss <= base_rss + 32 * 1024,
        "memory grew from {base_rss} KiB to {rss} KiB"
    );

    // Still serving, correctly: the large blob whole, a new upload end to end.
    let resp = c
        .get(r.v2(&format!("abuse/big/blobs/{big_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.bytes().await.unwrap() == big,
        "the large blob reads back whole"
    );
    let fresh = Bytes::from(random_bytes(500_000).to_vec());
    let digest = push_blob(&c, &r, "abuse/after", &fresh).await;
    let resp = c
        .get(r.v2(&format!("abuse/after/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap(), fresh);
    // A session abandoned mid-PATCH stands where it stood: nothing of the cut-off body
    // was counted.
    let path = session(&c, &r, "abuse/patch").await;
    abandon(
        &r.host,
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: {}\r\nContent-Range: 0-999999\r\nContent-Length: 1000000\r\n\r\n",
            r.host
        ),
        &random_bytes(300_000),
        Duration::from_millis(200),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = c.get(format!("{}{path}", r.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(resp.headers()["range"].to_str().unwrap(), "0-0");
}
