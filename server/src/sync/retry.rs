//! Retrying a source's transient failures with exponential backoff, counting every
//! retry for the run's report.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::upstream::{failure, retry_after, Failure};

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Retry {
    /// Retries per request of a transient failure, and the first backoff.
    retries: u32,
    base: Duration,
    /// Requests retried so far.
    retried: AtomicU64,
    /// What a refused credential means for this source (it names the account, never
    /// the password).
    refusal: String,
}

impl Retry {
    pub fn new(retries: u32, base: Duration, refusal: String) -> Self {
        Retry {
            retries,
            base: base.max(Duration::from_millis(1)),
            retried: AtomicU64::new(0),
            refusal,
        }
    }

    /// Requests retried so far (after a transient failure).
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been retried
    /// `retries` times; waits `base * 2^n` (at most [`MAX_BACKOFF`], or what a 429's
    /// `Retry-After` asks where the answer is visible) between attempts.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let mut n = 0u32;
        loop {
            let e = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let kind = failure(&e);
            if n < self.retries && matches!(kind, Failure::Unavailable | Failure::Throttled) {
                let backoff = self.base.saturating_mul(1u32 << n.min(16)).min(MAX_BACKOFF);
                // A 429 whose Retry-After the client does not pass on waits at least a
                // second.
                let wait = retry_after(&e).unwrap_or(if kind == Failure::Throttled {
                    backoff.max(Duration::from_secs(1))
                } else {
                    backoff
                });
                n += 1;
                self.retried.fetch_add(1, Ordering::Relaxed);
                tracing::info!(what, attempt = n, wait_ms = wait.as_millis() as u64, error = %format!("{e:#}"), "sync: retrying a transient upstream failure");
                tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
                continue;
            }
            let e = if n > 0 {
                e.context(format!("after {n} retries"))
            } else {
                e
            };
            return Err(if kind == Failure::Refused {
                e.context(self.refusal.clone())
            } else {
                e
            });
        }
    }
}
