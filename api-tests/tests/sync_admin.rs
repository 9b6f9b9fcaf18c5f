//! The sync admin API (`/v2/_signet/sync/jobs...`): list, create, run now (202; 409
//! while running), live status, cancel (between items); scheduled runs (a run still
//! going when the next one is due is skipped); jobs stored in the database (shared by
//! replicas, kept across restarts, deleted); the `signet_sync_*` metrics; and the
//! admin role when authentication is on. Upstream: a second Signet, behind the
//! test proxy to slow it down.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::oci::push_image;
use signet_api_tests::proxy::Proxy;
use signet_api_tests::{client, metrics, random_bytes, Registry};

const JOBS: &str = "/v2/_signet/sync/jobs";

async fn populate(c: &Client, upstream: &Registry, repo: &str, tags: std::ops::Range<usize>) {
    for t in tags {
        let layer = random_bytes(10_000);
        push_image(c, upstream, repo, &format!("v{t}"), &[&layer]).await;
    }
}

/// Tag → manifest digest of `repo` (empty when the repository is unknown).
async fn tags(c: &Client, base: &str, repo: &str) -> Vec<(String, String)> {
    let resp = c
        .get(format!("{base}/v2/{repo}/tags/list"))
        .send()
        .await
        .unwrap();
    if resp.status() == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    let list: Value = resp.json().await.unwrap();
    let mut out = Vec::new();
    for t in list["tags"].as_array().cloned().unwrap_or_default() {
        let t = t.as_str().unwrap().to_string();
        let resp = c
            .head(format!("{base}/v2/{repo}/manifests/{t}"))
            .header("Accept", signet_api_tests::oci::OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let digest = resp.headers()["Docker-Content-Digest"]
            .to_str()
            .unwrap()
            .to_string();
        out.push((t, digest));
    }
    out.sort();
    out
}

async fn get_json(c: &Client, url: String) -> Value {
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
    resp.json().await.unwrap()
}

/// Polls the job until `done` holds for it (at most 60 s).
async fn wait_for(c: &Client, base: &str, job: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let v = get_json(c, format!("{base}{JOBS}/{job}")).await;
        if done(&v) {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job {job} never got there: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn finished(v: &Value) -> bool {
    let s = v["run"]["status"].as_str().unwrap_or("");
    !s.is_empty() && s != "running" && s != "cancelling"
}

fn job_toml(name: &str, upstream: &str, repo: &str, extra: &str) -> String {
    format!("[[sync.jobs]]\nname = \"{name}\"\nupstream = \"{upstream}\"\nrepositories = [\"{repo}\"]\n{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_reports_live_progress_refuses_a_second_run_and_feeds_metrics() {
    let c = client();
    let upstream = Registry::start();
    let repo = "admin/app";
    populate(&c, &upstream, repo, 0..4).await;
    let proxy = Proxy::start(&upstream.url).await;
    proxy.faults.delay_ms.store(150, Ordering::SeqCst);
    let mirror = Registry::start_with_config(&job_toml("api", &proxy.url, repo, "concurrency = 1"));
    let m = mirror.url.as_str();

    let list = get_json(&c, format!("{m}{JOBS}")).await;
    let jobs = list["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{list}");
    assert_eq!(jobs[0]["name"], "api");
    assert_eq!(jobs[0]["source"], "config");
    assert_eq!(jobs[0]["config"]["upstream"], proxy.url.as_str());
    assert!(jobs[0]["run"].is_null(), "{list}");

    let resp = c.post(format!("{m}{JOBS}/api/run")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = c.post(format!("{m}{JOBS}/api/run")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(resp.json::<Value>().await.unwrap()["id"], id.as_str());

    // Live progress: items known and some done while the run goes on.
    let live = wait_for(&c, m, "api", |v| {
        v["run"]["progress"]["items_total"].as_u64() == Some(4) || finished(v)
    })
    .await;
    assert_eq!(live["run"]["id"], id.as_str());
    assert_eq!(live["run"]["trigger"], "api");
    assert_eq!(live["run"]["status"], "running", "{live}");
    assert!(live["run"]["finished_at"].is_null());
    let running = metrics(m).await;
    assert!(
        running.contains("signet_sync_running{job=\"api\"} 1"),
        "{running}"
    );

    let done = wait_for(&c, m, "api", finished).await;
    let run = &done["run"];
    assert_eq!(run["status"], "succeeded", "{done}");
    assert_eq!(run["progress"]["items_done"], 4, "{done}");
    assert_eq!(run["progress"]["items_total"], 4, "{done}");
    assert!(run["progress"]["errors"].as_array().unwrap().is_empty());
    assert!(run["progress"]["bytes_copied"].as_u64().unwrap() > 40_000);
    assert!(run["finished_at"].is_string());
    assert!(!run["last"].as_str().unwrap().is_empty());
    assert_eq!(tags(&c, m, repo).await, tags(&c, &upstream.url, repo).await);

    let metrics = metrics(m).await;
    assert!(
        metrics.contains("signet_sync_items_total{job=\"api\",outcome=\"ok\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("signet_sync_running{job=\"api\"} 0"),
        "{metrics}"
    );
    let bytes = format!(
        "signet_sync_bytes_total{{job=\"api\"}} {}",
        run["progress"]["bytes_copied"]
    );
    assert!(metrics.contains(&bytes), "{bytes} in {metrics}");

    // The list shows the last run; nothing to cancel; unknown jobs are 404.
    let list = get_json(&c, format!("{m}{JOBS}")).await;
    assert_eq!(list["jobs"][0]["run"]["id"], id.as_str());
    let resp = c
        .post(format!("{m}{JOBS}/api/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    for url in [
        format!("{m}{JOBS}/nope/run"),
        format!("{m}{JOBS}/nope/cancel"),
    ] {
        assert_eq!(
            c.post(url).send().await.unwrap().status(),
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        c.get(format!("{m}{JOBS}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_run_between_items_and_a_rerun_finishes_it() {
    let c = client();
    let upstream = Registry::start();
    let repo = "admin/many";
    populate(&c, &upstream, repo, 0..8).await;
    let proxy = Proxy::start(&upstream.url).await;
    proxy.faults.delay_ms.store(200, Ordering::SeqCst);
    let mirror =
        Registry::start_with_config(&job_toml("slow", &proxy.url, repo, "concurrency = 1"));
    let m = mirror.url.as_str();

    let resp = c.post(format!("{m}{JOBS}/slow/run")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    wait_for(&c, m, "slow", |v| {
        v["run"]["progress"]["items_done"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let resp = c
        .post(format!("{m}{JOBS}/slow/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let done = wait_for(&c, m, "slow", finished).await;
    assert_eq!(done["run"]["status"], "cancelled", "{done}");
    assert_eq!(done["run"]["progress"]["cancelled"], true);
    let items = done["run"]["progress"]["items_done"].as_u64().unwrap();
    assert!(items < 8, "{done}");
    // What was mirrored before the cancel is whole.
    let partial = tags(&c, m, repo).await;
    let want = tags(&c, &upstream.url, repo).await;
    assert_eq!(partial.len() as u64, items, "{done}");
    assert!(partial.iter().all(|t| want.contains(t)));

    proxy.faults.delay_ms.store(0, Ordering::SeqCst);
    let resp = c.post(format!("{m}{JOBS}/slow/run")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let done = wait_for(&c, m, "slow", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{done}");
    assert_eq!(
        done["run"]["progress"]["tags_unchanged"].as_u64(),
        Some(items)
    );
    assert_eq!(tags(&c, m, repo).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_created_through_the_api_run_on_their_schedule_and_overlaps_are_skipped() {
    let c = client();
    let upstream = Registry::start();
    let repo = "sched/app";
    populate(&c, &upstream, repo, 0..1).await;
    let proxy = Proxy::start(&upstream.url).await;
    let mirror = Registry::start();
    let m = mirror.url.as_str();

    let job =
        json!({"name": "every", "upstream": proxy.url, "repositories": [repo], "interval_secs": 1});
    let resp = c
        .post(format!("{m}{JOBS}"))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["source"], "api");
    let resp = c
        .post(format!("{m}{JOBS}"))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    for bad in [
        json!({"name": "x", "upstream": proxy.url}),
        json!({"name": "y", "upstream": "ftp://h", "repositories": ["a"]}),
        json!({"name": "z", "upstream": proxy.url, "repositories": ["a"], "nope": 1}),
        json!({"name": "a/b", "upstream": proxy.url, "repositories": ["a"]}),
    ] {
        let resp = c
            .post(format!("{m}{JOBS}"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }

    // The schedule runs it (the first run one interval after creation).
    let first = wait_for(&c, m, "every", |v| {
        finished(v) && v["run"]["trigger"] == "schedule"
    })
    .await;
    assert_eq!(first["run"]["status"], "succeeded", "{first}");
    assert_eq!(tags(&c, m, repo).await, tags(&c, &upstream.url, repo).await);

    // A new tag upstream is picked up by a later scheduled run.
    populate(&c, &upstream, repo, 1..2).await;
    let want = tags(&c, &upstream.url, repo).await;
    let started = Instant::now();
    while tags(&c, m, repo).await != want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "new tag not mirrored"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A run slower than the interval: the next ticks are skipped, not stacked.
    proxy.faults.delay_ms.store(1500, Ordering::SeqCst);
    let skipped = wait_for(&c, m, "every", |v| {
        v["scheduled_runs_skipped"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert_eq!(skipped["run"]["status"], "running", "{skipped}");
    proxy.faults.delay_ms.store(0, Ordering::SeqCst);
    let list = get_json(&c, format!("{m}{JOBS}")).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_sync_api_needs_the_admin_role() {
    let hash = |p: &str| bcrypt::hash(p, 4).unwrap();
    let config = format!(
        "[auth]\nenabled = true\nadmins = [\"root\"]\n\n[[auth.users]]\nname = \"root\"\npassword_bcrypt = \"{}\"\n\n[[auth.users]]\nname = \"alice\"\npassword_bcrypt = \"{}\"\n\n{}",
        hash("rootpw"),
        hash("alicepw"),
        job_toml("j", "http://127.0.0.1:9", "a", "")
    );
    let r = Registry::start_with_config(&config);
    let c = client();
    let url = format!("{}{JOBS}", r.url);
    assert_eq!(
        c.get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let alice = c
        .get(&url)
        .basic_auth("alice", Some("alicepw"))
        .send()
        .await
        .unwrap();
    assert_eq!(alice.status(), StatusCode::FORBIDDEN);
    let run = c
        .post(format!("{url}/j/run"))
        .basic_auth("alice", Some("alicepw"))
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), StatusCode::FORBIDDEN);
    let create = c
        .post(&url)
        .basic_auth("alice", Some("alicepw"))
        .json(&json!({"name": "k", "upstream": "http://h:1", "repositories": ["a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::FORBIDDEN);
    let root = c
        .get(&url)
        .basic_auth("root", Some("rootpw"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), StatusCode::OK);
    let listed: Value = root.json().await.unwrap();
    assert_eq!(listed["jobs"][0]["name"], "j");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_run_one_job_at_once() {
    let c = client();
    let upstream = Registry::start();
    let repo = "replicas/app";
    populate(&c, &upstream, repo, 0..3).await;
    let proxy = Proxy::start(&upstream.url).await;
    proxy.faults.delay_ms.store(150, Ordering::SeqCst);
    // Two servers on one data folder (one database): the job's lease keeps their
    // scheduled runs apart.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signet.toml");
    std::fs::write(
        &config,
        job_toml(
            "shared",
            &proxy.url,
            repo,
            "interval_secs = 1\nconcurrency = 1",
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let a = Registry::start_in(&data, Some(config.clone()));
    let b = Registry::start_in(&data, Some(config));

    let started = Instant::now();
    let mut refused = false;
    let mut finished_runs = std::collections::HashSet::new();
    while started.elapsed() < Duration::from_secs(10) {
        let va = get_json(&c, format!("{}{JOBS}/shared", a.url)).await;
        let vb = get_json(&c, format!("{}{JOBS}/shared", b.url)).await;
        let running = |v: &Value| v["run"]["status"] == "running";
        assert!(
            !(running(&va) && running(&vb)),
            "both replicas run it:\n{va}\n{vb}"
        );
        for (v, other) in [(&va, &b), (&vb, &a)] {
            if running(v) && !refused {
                // Asking the other replica for a run while one goes: refused.
                let resp = c
                    .post(format!("{}{JOBS}/shared/run", other.url))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::CONFLICT);
                refused = true;
            }
        }
        for v in [&va, &vb] {
            if v["run"]["status"] == "succeeded" {
                finished_runs.insert(v["run"]["id"].as_str().unwrap().to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "no run was seen going");
    assert!(!finished_runs.is_empty(), "no run finished");
    let skipped: u64 = [&a, &b]
        .iter()
        .map(|r| async {
            get_json(&c, format!("{}{JOBS}/shared", r.url)).await["scheduled_runs_skipped"]
                .as_u64()
                .unwrap()
        })
        .collect::<futures::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert!(skipped >= 1, "no scheduled run was skipped");
    assert_eq!(
        tags(&c, &a.url, repo).await,
        tags(&c, &upstream.url, repo).await
    );
}

#[tokio::test]
async fn api_jobs_are_stored_shared_by_replicas_survive_restarts_and_can_be_deleted() {
    let c = client();
    let upstream = Registry::start();
    let repo = "stored/app";
    populate(&c, &upstream, repo, 0..2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signet.toml");
    std::fs::write(&config, job_toml("from-file", &upstream.url, repo, "")).unwrap();
    let data = dir.path().join("data");
    let mut a = Registry::start_in(&data, Some(config.clone()));
    let b = Registry::start_in(&data, Some(config));

    let job = json!({"name": "stored", "upstream": upstream.url, "repositories": [repo], "tags_include": ["v1"]});
    let resp = c
        .post(format!("{}{JOBS}", a.url))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The name is taken on the other replica too, and the file's job names are taken.
    let resp = c
        .post(format!("{}{JOBS}", b.url))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let resp = c
        .post(format!("{}{JOBS}", b.url))
        .json(&json!({"name": "from-file", "upstream": upstream.url, "repositories": [repo]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);

    // The other replica sees it at once, and runs it.
    let shown = get_json(&c, format!("{}{JOBS}/stored", b.url)).await;
    assert_eq!(shown["source"], "api", "{shown}");
    assert_eq!(shown["config"]["tags_include"], json!(["v1"]), "{shown}");
    let resp = c
        .post(format!("{}{JOBS}/stored/run", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let done = wait_for(&c, &b.url, "stored", finished).await;
    assert_eq!(done["run"]["status"], "succeeded", "{done}");
    let mirrored = tags(&c, &b.url, repo).await;
    assert_eq!(
        mirrored.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["v1"]
    );

    // It survives a restart, and `signet sync run` knows it.
    a.crash_and_restart();
    let list = get_json(&c, format!("{}{JOBS}", a.url)).await;
    let names: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["from-file", "stored"], "{list}");
    let out = a
        .cli(&["sync", "run", "stored", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["tags_unchanged"], 1, "{summary}");

    // Deleting: the file's job is refused, the stored one goes for every replica.
    let resp = c
        .delete(format!("{}{JOBS}/from-file", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "JOB_FROM_CONFIG");
    let resp = c
        .delete(format!("{}{JOBS}/stored", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for r in [&a, &b] {
        let resp = c
            .get(format!("{}{JOBS}/stored", r.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let resp = c
        .delete(format!("{}{JOBS}/stored", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
