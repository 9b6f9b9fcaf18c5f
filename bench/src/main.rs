//! `signet-bench`: a small HTTP/1.1 keep-alive load generator used by `bench/bench.py`
//! where `wrk` cannot go: `wrk` 4.1 waits for a body after a `HEAD` response and stalls.
//!
//! `signet-bench --url http://127.0.0.1:5000/v2/x/manifests/latest --method HEAD
//!  -c 64 -d 3 --max-requests 1000000 -H 'Accept: ...'` prints one JSON line:
//! `{"requests":..,"duration_us":..,"bytes":..,"p50_us":..,"p99_us":..,"errors":..}`.
//! Every run is bounded in time (`-d`) and in requests (`--max-requests`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use signet_bench::http1::{read_response, split_url};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Target URL (plain HTTP, e.g. loopback).
    #[arg(long)]
    url: String,
    /// GET or HEAD.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Extra request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Concurrent connections.
    #[arg(short = 'c', long, default_value_t = 1)]
    connections: usize,
    /// Duration in seconds.
    #[arg(short = 'd', long, default_value_t = 3.0)]
    duration: f64,
    /// Stop after this many requests in total.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Runtime worker threads.
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
}

struct Target {
    addr: String,
    request: Vec<u8>,
    head: bool,
}

fn parse_target(args: &Args) -> Result<Target> {
    let (authority, path) = split_url(&args.url)?;
    let method = args.method.to_ascii_uppercase();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for h in &args.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    Ok(Target {
        addr: authority.to_string(),
        request: request.into_bytes(),
        head: method == "HEAD",
    })
}

struct Totals {
    issued: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
}

async fn connection(
    target: Arc<Target>,
    totals: Arc<Totals>,
    deadline: Instant,
    max: u64,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    'reconnect: while Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect(&target.addr).await else {
            totals.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut buf = Vec::with_capacity(64 * 1024);
        while Instant::now() < deadline {
            if totals.issued.fetch_add(1, Ordering::Relaxed) >= max {
                break 'reconnect;
            }
            let start = Instant::now();
            let result = async {
                stream.write_all(&target.request).await?;
                read_response(&mut stream, &mut buf, target.head).await
            };
            match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), result).await {
                Err(_) => {
                    // the run ended with this request in flight: not counted
                    totals.issued.fetch_sub(1, Ordering::Relaxed);
                    break 'reconnect;
                }
                Ok(Ok(response)) => {
                    latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    totals
                        .bytes
                        .fetch_add(response.body_len as u64, Ordering::Relaxed);
                    if !(200..400).contains(&response.status) {
                        totals.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Err(_)) => {
                    totals.errors.fetch_add(1, Ordering::Relaxed);
                    continue 'reconnect;
                }
            }
        }
    }
    latencies
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<()> {
    let args = Args::parse();
    let target = Arc::new(parse_target(&args)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let totals = Arc::new(Totals {
        issued: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let (latencies, elapsed) = runtime.block_on(async {
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(args.duration);
        let tasks: Vec<_> = (0..args.connections.max(1))
            .map(|_| {
                tokio::spawn(connection(
                    target.clone(),
                    totals.clone(),
                    deadline,
                    args.max_requests,
                ))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await?);
        }
        anyhow::Ok((all, start.elapsed()))
    })?;
    let mut sorted = latencies;
    sorted.sort_unstable();
    let mean = if sorted.is_empty() {
        0.0
    } else {
        sorted.iter().map(|&v| f64::from(v)).sum::<f64>() / sorted.len() as f64
    };
    println!(
        "{}",
        serde_json::json!({
            "requests": sorted.len(),
            "duration_us": elapsed.as_micros() as u64,
            "bytes": totals.bytes.load(Ordering::Relaxed),
            "p50_us": percentile(&sorted, 50.0),
            "p99_us": percentile(&sorted, 99.0),
            "mean_us": mean,
            "errors": totals.errors.load(Ordering::Relaxed),
        })
    );
    Ok(())
}
