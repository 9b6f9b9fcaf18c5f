//! Sync under upstream faults: transient failures (503, 429 with `Retry-After`) from
//! a fault-injecting proxy in front of a Signet upstream are retried and the mirror
//! comes out identical; and a `signet sync run` killed with SIGKILL midway leaves
//! nothing half-written visible, and a rerun completes it without fetching again what
//! it already copied.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;
use signet_api_tests::oci::push_image;
use signet_api_tests::proxy::Proxy;
use signet_api_tests::{client, random_bytes, sha256, Registry};

/// Repositories and tags the upstream holds: each tag an image with two layers.
async fn populate(c: &Client, upstream: &Registry, repos: &[&str], tags: usize) {
    for repo in repos {
        for t in 0..tags {
            let a = random_bytes(20_000);
            let b = random_bytes(5_000);
            push_image(c, upstream, repo, &format!("v{t}"), &[&a, &b]).await;
        }
    }
}

/// Every tag of every repository: (repo, tag) → manifest bytes; and checks that
/// every blob each manifest names is served with its digest.
async fn contents(c: &Client, base: &str, repos: &[&str]) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for repo in repos {
        let resp = c
            .get(format!("{base}/v2/{repo}/tags/list"))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::NOT_FOUND {
            continue;
        }
        let list: Value = resp.json().await.unwrap();
        let mut tags: Vec<String> = list["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        tags.sort();
        for tag in tags {
            let resp = c
                .get(format!("{base}/v2/{repo}/manifests/{tag}"))
                .header("Accept", signet_api_tests::oci::OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "{repo}:{tag} listed but not served"
            );
            let body = resp.bytes().await.unwrap().to_vec();
            let m: Value = serde_json::from_slice(&body).unwrap();
            let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
            for l in m["layers"].as_array().unwrap() {
                blobs.push(l["digest"].as_str().unwrap().to_string());
            }
            for digest in blobs {
                let resp = c
                    .get(format!("{base}/v2/{repo}/blobs/{digest}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    resp.status(),
                    StatusCode::OK,
                    "{repo}:{tag} is served but its blob {digest} is not"
                );
                assert_eq!(sha256(&resp.bytes().await.unwrap()), digest);
            }
            out.push((repo.to_string(), tag, body));
        }
    }
    out
}

struct Mirror {
    registry: Registry,
}

impl Mirror {
    fn start(job: &str, upstream: &str, repos: &[&str], extra: &str) -> Mirror {
        let repos: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
        Mirror {
            registry: Registry::start_with_config(&format!(
                "[[sync.jobs]]\nname = \"{job}\"\nupstream = \"{upstream}\"\nrepositories = [{}]\n{extra}\n",
                repos.join(", ")
            )),
        }
    }

    fn command(&self, job: &str) -> Command {
        self.registry.cli(&["sync", "run", job, "--json"])
    }

    /// Runs the job to the end (in a blocking thread: the proxy lives on this
    /// runtime); its summary and whether it exited successfully.
    async fn sync(&self, job: &str) -> (Value, bool, String) {
        let mut cmd = self.command(job);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let summary = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("summary {stdout:?}: {e}\nstderr:\n{stderr}"));
        (summary, out.status.success(), stderr)
    }
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_upstream_failures_are_retried_and_the_mirror_is_identical() {
    let upstream = Registry::start();
    let c = client();
    let repos = ["faults/a", "faults/b"];
    populate(&c, &upstream, &repos, 3).await;
    let proxy = Proxy::start(&upstream.url).await;
    // Every 4th request answers 503: every kind of request meets one. (`GET /v2/`
    // is spared: oci-client's token probe shrugs off a failure without a retry.)
    proxy
        .faults
        .spare_base
        .store(1, std::sync::atomic::Ordering::SeqCst);
    proxy
        .faults
        .fail_every
        .store(4, std::sync::atomic::Ordering::SeqCst);
    let mirror = Mirror::start("flaky", &proxy.url, &repos, "retry_base_ms = 20");
    let (summary, ok, stderr) = mirror.sync("flaky").await;
    assert!(ok, "{summary}\n{stderr}");
    assert!(
        summary["errors"].as_array().unwrap().is_empty(),
        "{summary}"
    );
    assert!(proxy.failed() > 0);
    // Every failed request was retried, and counted: tag lookups (`HEAD`) included.
    assert_eq!(
        n(&summary, "retries"),
        proxy.failed(),
        "{summary}\n{:#?}\n{stderr}",
        proxy.failed_requests()
    );
    assert_eq!(n(&summary, "items_done"), 6, "{summary}");
    assert_eq!(n(&summary, "items_total"), 6, "{summary}");
    let want = contents(&c, &upstream.url, &repos).await;
    assert_eq!(want.len(), 6);
    assert_eq!(contents(&c, &mirror.registry.url, &repos).await, want);

    // 429 with Retry-After: retried after about a second each (oci-client does not
    // pass the header on; a 429 waits at least a second).
    let more = ["faults/c"];
    populate(&c, &upstream, &more, 1).await;
    proxy
        .faults
        .too_many
        .store(1, std::sync::atomic::Ordering::SeqCst);
    proxy
        .faults
        .fail_every
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let before = proxy.failed();
    let mirror2 = Mirror::start("busy", &proxy.url, &more, "retry_base_ms = 20");
    let started = Instant::now();
    let (summary, ok, stderr) = mirror2.sync("busy").await;
    assert!(ok, "{summary}\n{stderr}");
    let throttled = proxy.failed() - before;
    assert!(throttled > 0);
    let retries = n(&summary, "retries");
    assert_eq!(
        retries,
        throttled,
        "{summary}\n{:#?}",
        proxy.failed_requests()
    );
    assert!(
        // (Transfers run in parallel, so the waits may overlap.)
        started.elapsed() >= Duration::from_millis(900),
        "429s were retried without waiting: {retries} in {:?}",
        started.elapsed()
    );
    assert_eq!(
        contents(&c, &mirror2.registry.url, &more).await,
        contents(&c, &upstream.url, &more).await
    );

    // Beyond the retries: reported per item, the run goes on and says so.
    proxy
        .faults
        .too_many
        .store(0, std::sync::atomic::Ordering::SeqCst);
    proxy
        .faults
        .fail_every
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let mirror3 = Mirror::start(
        "down",
        &proxy.url,
        &["faults/a"],
        "retries = 2\nretry_base_ms = 10",
    );
    let (summary, ok, _) = mirror3.sync("down").await;
    assert!(!ok, "{summary}");
    assert!(
        !summary["errors"].as_array().unwrap().is_empty(),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_leaves_nothing_half_written_and_a_rerun_completes_it() {
    let upstream = Registry::start();
    let c = client();
    let repos = ["crash/a", "crash/b"];
    populate(&c, &upstream, &repos, 4).await;
    let proxy = Proxy::start(&upstream.url).await;
    // Slow upstream: each request waits, so the run is well under way when killed.
    proxy
        .faults
        .delay_ms
        .store(120, std::sync::atomic::Ordering::SeqCst);
    let mirror = Mirror::start("crash", &proxy.url, &repos, "concurrency = 2");
    let mut child = mirror
        .command("crash")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some blobs landed, then SIGKILL.
    let started = Instant::now();
    loop {
        let landed = signet_api_tests::oci::stored_blob_files(&mirror.registry).len();
        if landed >= 6 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not get going"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before it was killed");

    // What is served is whole: every listed tag resolves, with every blob.
    let partial = contents(&c, &mirror.registry.url, &repos).await;
    let want = contents(&c, &upstream.url, &repos).await;
    assert_eq!(want.len(), 8);
    assert!(partial.len() < want.len(), "nothing was left to do");
    for item in &partial {
        assert!(
            want.contains(item),
            "{}:{} differs from upstream",
            item.0,
            item.1
        );
    }

    proxy
        .faults
        .delay_ms
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let (summary, ok, stderr) = mirror.sync("crash").await;
    assert!(ok, "{summary}\n{stderr}");
    assert_eq!(contents(&c, &mirror.registry.url, &repos).await, want);
    // Blobs copied before the kill were not fetched again.
    let total_blobs = 8 * 3;
    assert!(
        n(&summary, "blobs_copied") < total_blobs,
        "the rerun fetched everything again: {summary}"
    );

    // And a third run has nothing to do.
    let (again, ok, _) = mirror.sync("crash").await;
    assert!(ok);
    assert_eq!(n(&again, "blobs_copied"), 0, "{again}");
    assert_eq!(n(&again, "manifests_copied"), 0, "{again}");
}
