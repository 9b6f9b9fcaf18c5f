//! `signet-push-blobs`: pushes many small, distinct blobs into one repository, the way a
//! client does (`POST` an upload, `PUT` it with `?digest=`), over keep-alive connections.
//! `bench/growth.py` loads its GC and fsck stores with it: at a million blobs a Python
//! client is the bottleneck, not the registry.
//!
//! Blob `i` holds the text `<prefix><i, zero-padded to --width digits>`, so a later
//! manifest can name it by digest without being told it.
//!
//! `signet-push-blobs --base http://127.0.0.1:5000 --repo bench/gc --first 0 --count 1000
//!  --prefix 'gc blob ' -c 16` prints one JSON line: `{"pushed":..,"seconds":..,"retries":..}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use sha2::{Digest, Sha256};
use signet_bench::http1::{read_response, split_url, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The registry, `http://host:port` (plain HTTP, loopback).
    #[arg(long)]
    base: String,
    /// Repository to push into.
    #[arg(long)]
    repo: String,
    /// Index of the first blob.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// How many blobs to push.
    #[arg(long)]
    count: u64,
    /// Text every blob starts with; its index follows.
    #[arg(long, default_value = "blob ")]
    prefix: String,
    /// Digits the index is zero-padded to.
    #[arg(long, default_value_t = 9)]
    width: usize,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 16)]
    connections: usize,
    /// Runtime worker threads.
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
}

/// Attempts per blob: a busy answer (429/503) or a dropped connection is retried.
const ATTEMPTS: u32 = 6;

struct Job {
    authority: String,
    repo: String,
    prefix: String,
    width: usize,
    end: u64,
    next: AtomicU64,
    retries: AtomicU64,
}

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(authority: &str) -> Result<Self> {
        let stream = TcpStream::connect(authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    async fn send(&mut self, head: &str, body: &[u8]) -> Result<Response> {
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        read_response(&mut self.stream, &mut self.buf, false).await
    }
}

/// The path and query of an upload's `Location`, which may be absolute or relative.
fn location_path(location: &str) -> Result<&str> {
    if location.starts_with('/') {
        return Ok(location);
    }
    Ok(split_url(location)?.1)
}

enum Outcome {
    Done,
    Retry(Duration),
}

async fn push_one(
    conn: &mut Connection,
    job: &Job,
    content: &[u8],
    digest: &str,
) -> Result<Outcome> {
    let post = format!(
        "POST /v2/{}/blobs/uploads/ HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        job.repo, job.authority
    );
    let started = conn.send(&post, b"").await?;
    if let Some(wait) = busy(&started) {
        return Ok(Outcome::Retry(wait));
    }
    if started.status != 202 {
        bail!("POST of an upload answered {}", started.status);
    }
    let location = started
        .location
        .context("upload started without a Location")?;
    let path = location_path(&location)?;
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = format!(
        "PUT {path}{sep}digest={digest} HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        job.authority,
        content.len()
    );
    let finished = conn.send(&put, content).await?;
    if let Some(wait) = busy(&finished) {
        return Ok(Outcome::Retry(wait));
    }
    if finished.status != 201 {
        bail!("PUT of blob {digest} answered {}", finished.status);
    }
    Ok(Outcome::Done)
}

fn busy(response: &Response) -> Option<Duration> {
    matches!(response.status, 429 | 503)
        .then(|| Duration::from_secs_f64(response.retry_after.unwrap_or(0.5).clamp(0.0, 5.0)))
}

async fn worker(job: Arc<Job>) -> Result<()> {
    let mut conn = Connection::open(&job.authority).await?;
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        if i >= job.end {
            return Ok(());
        }
        let content = format!("{}{:0width$}", job.prefix, i, width = job.width).into_bytes();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&content)));
        let mut attempt = 1;
        loop {
            let wait = match push_one(&mut conn, &job, &content, &digest).await {
                Ok(Outcome::Done) => break,
                Ok(Outcome::Retry(wait)) => wait,
                Err(e) if e.downcast_ref::<std::io::Error>().is_some() => {
                    conn = Connection::open(&job.authority).await?;
                    Duration::ZERO
                }
                Err(e) => return Err(e.context(format!("blob {i}"))),
            };
            if attempt == ATTEMPTS {
                bail!("blob {i}: still refused after {ATTEMPTS} attempts");
            }
            attempt += 1;
            job.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (authority, _) = split_url(&args.base)?;
    let job = Arc::new(Job {
        authority: authority.to_string(),
        repo: args.repo,
        prefix: args.prefix,
        width: args.width,
        end: args.first + args.count,
        next: AtomicU64::new(args.first),
        retries: AtomicU64::new(0),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let start = Instant::now();
    runtime.block_on(async {
        let workers: Vec<_> = (0..args.connections.max(1))
            .map(|_| tokio::spawn(worker(job.clone())))
            .collect();
        for w in workers {
            w.await??;
        }
        anyhow::Ok(())
    })?;
    println!(
        "{}",
        serde_json::json!({
            "pushed": args.count,
            "seconds": start.elapsed().as_secs_f64(),
            "retries": job.retries.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
