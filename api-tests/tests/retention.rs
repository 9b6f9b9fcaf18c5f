//! Retention (`[[retention.rules]]`) against the real binary: the dry run lists exactly
//! what the real run then deletes, attachments go with their subject, a signed release
//! stays pullable by digest, a push racing a run is never lost, and the server runs it
//! on a schedule with the pulls it saw, counted in metrics and the audit log.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use signet_api_tests::cosign::{sign_payload, simple_signing_payload, trust_root, Key};
use signet_api_tests::oci::{get, manifest_digest, push_image, send_manifest, OCI_MANIFEST};
use signet_api_tests::{client, random_bytes, sha256, Registry};

/// Runs `signet retention --json [args]`; the report.
fn retention(r: &Registry, args: &[&str]) -> Value {
    let mut all = vec!["retention", "--json"];
    all.extend_from_slice(args);
    let out = r.cli(&all).output().expect("run signet retention");
    assert!(
        out.status.success(),
        "signet retention failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The deleted manifests of a report: digest, tags and attachments, in order.
fn deleted(report: &Value) -> Vec<Value> {
    report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| json!([d["repository"], d["digest"], d["tags"], d["attachments"]]))
        .collect()
}

fn deleted_digests(report: &Value) -> Vec<String> {
    report["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Pushes a small image tagged `tag`; its digest.
async fn image(c: &Client, r: &Registry, repo: &str, tag: &str) -> String {
    sha256(&push_image(c, r, repo, tag, &[&random_bytes(32)]).await)
}

/// Lets everything pushed so far age past a one-second grace period.
async fn age() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

#[tokio::test]
async fn the_dry_run_lists_what_the_run_then_deletes() {
    let r = Registry::start_with_config(
        r#"
        [retention]
        grace_secs = 1

        [[retention.rules]]
        name = "recent"
        repositories = ["ci/**"]
        keep = { most_recently_pushed = 2 }

        [[retention.rules]]
        name = "releases"
        repositories = ["ci/**"]
        tags = 'v[0-9.]+'
        keep = "always"
        "#,
    );
    let c = client();
    let repo = "ci/app";
    let old = image(&c, &r, repo, "main-1").await;
    let release = image(&c, &r, repo, "v1.0").await;
    let untagged = image(&c, &r, repo, "scratch").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The tag moves on: the manifest it named is left untagged.
    let scratch = image(&c, &r, repo, "scratch").await;
    let newest = image(&c, &r, repo, "main-2").await;
    // A signature on the old image: it goes with its subject.
    let key = Key::generate();
    let payload = simple_signing_payload(&r, repo, &old);
    let sig = sign_payload(&c, &r, repo, &old, &payload, &key).await;
    let elsewhere = image(&c, &r, "other/app", "main-1").await;
    age().await;

    let dry = retention(&r, &["--dry-run"]);
    assert_eq!(dry["dryRun"], true);
    let planned = deleted_digests(&dry);
    assert!(
        planned.contains(&old) && planned.contains(&untagged),
        "{dry:#}"
    );
    for kept in [&release, &scratch, &newest] {
        assert!(!planned.contains(kept), "{dry:#}");
    }
    let first = dry["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == old.as_str())
        .unwrap();
    assert_eq!(first["tags"], json!(["main-1"]));
    assert_eq!(first["attachments"], json!([sig]), "{dry:#}");
    assert_eq!(
        first["why"],
        json!([
            "rule \"recent\": not among the 2 most recently pushed",
            "rule \"releases\": no tag it looks at"
        ])
    );
    for d in [&old, &untagged] {
        assert_eq!(
            manifest_digest(&c, &r, repo, d).await.as_deref(),
            Some(d.as_str()),
            "the dry run deleted nothing"
        );
    }

    let real = retention(&r, &[]);
    assert_eq!(real["dryRun"], false);
    assert_eq!(
        deleted(&real),
        deleted(&dry),
        "the real run did what the dry run said"
    );
    assert_eq!(real["skipped"], json!([]));
    for gone in [&old, &untagged, &sig] {
        assert_eq!(manifest_digest(&c, &r, repo, gone).await, None, "{gone}");
    }
    assert_eq!(manifest_digest(&c, &r, repo, "main-1").await, None);
    for kept in ["v1.0", "main-2", "scratch"] {
        assert!(
            manifest_digest(&c, &r, repo, kept).await.is_some(),
            "{kept}"
        );
    }
    assert_eq!(
        manifest_digest(&c, &r, "other/app", "main-1")
            .await
            .as_deref(),
        Some(elsewhere.as_str()),
        "a repository no rule governs is left alone"
    );
    // Nothing left to do.
    assert_eq!(deleted(&retention(&r, &[])), Vec::<Value>::new());
}

#[tokio::test]
async fn a_signed_release_stays_pullable_by_digest() {
    let keys = tempfile::tempdir().unwrap();
    let key = Key::generate();
    let config = format!(
        r#"
        [gc]
        grace_secs = 0

        [retention]
        grace_secs = 1

        [[retention.rules]]
        name = "latest"
        repositories = ["prod/**"]
        keep = {{ most_recently_pushed = 1 }}

        [[retention.rules]]
        name = "signed"
        repositories = ["prod/**"]
        keep = {{ signed_by = ["release"] }}

        {}
        "#,
        trust_root(
            "release",
            &key.write_public(keys.path(), "release"),
            &["prod/**"]
        )
    );
    let r = Registry::start_with_config(&config);
    let c = client();
    let repo = "prod/app";
    let layer = random_bytes(64);
    let deployed = push_image(&c, &r, repo, "1.0", &[&layer]).await;
    let deployed_digest = sha256(&deployed);
    let payload = simple_signing_payload(&r, repo, &deployed_digest);
    sign_payload(&c, &r, repo, &deployed_digest, &payload, &key).await;
    let unsigned_layer = random_bytes(64);
    let unsigned = sha256(&push_image(&c, &r, repo, "1.1", &[&unsigned_layer]).await);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    image(&c, &r, repo, "1.2").await;
    age().await;

    let report = retention(&r, &[]);
    assert_eq!(
        deleted_digests(&report),
        vec![unsigned.clone()],
        "{report:#}"
    );
    let kept = report["kept"].as_array().unwrap();
    let why = kept
        .iter()
        .find(|k| k["digest"] == deployed_digest.as_str())
        .map(|k| k["why"].as_str().unwrap().to_string());
    assert_eq!(
        why.as_deref(),
        Some("rule \"signed\" keeps those with a valid signature from release")
    );

    // GC reclaims what retention let go, and the deployment's pull by digest still works,
    // layers and all.
    let gc = r.cli(&["gc"]).output().unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let (status, body) = get(&c, &r.v2(&format!("{repo}/manifests/{deployed_digest}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], &deployed[..]);
    let (status, bytes) = get(&c, &r.v2(&format!("{repo}/blobs/{}", sha256(&layer)))).await;
    assert_eq!((status, &bytes[..]), (StatusCode::OK, &layer[..]));
    let (status, _) = get(
        &c,
        &r.v2(&format!("{repo}/blobs/{}", sha256(&unsigned_layer))),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "GC reclaimed the deleted image's layer"
    );
}

#[tokio::test]
async fn a_push_racing_a_run_is_never_lost() {
    let r = Registry::start_with_config(
        r#"
        [retention]
        grace_secs = 1

        [[retention.rules]]
        name = "none"
        repositories = ["race/**"]
        keep = { most_recently_pushed = 0 }
        "#,
    );
    let c = client();
    let repo = "race/app";
    let mut old = Vec::new();
    for i in 0..40 {
        let body = push_image(&c, &r, repo, &format!("old-{i}"), &[&random_bytes(16)]).await;
        old.push(body);
    }
    age().await;

    // Retention deletes the old images one by one while a client tags each of them
    // again and pushes new ones.
    let run = r
        .cli(&["retention", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut acknowledged = Vec::new();
    for (i, body) in old.iter().enumerate() {
        let tag = format!("revived-{i}");
        let resp = send_manifest(&c, &r, repo, &tag, OCI_MANIFEST, body).await;
        if resp.status() == StatusCode::CREATED {
            acknowledged.push((tag, sha256(body)));
        }
        let fresh = format!("fresh-{i}");
        let digest = image(&c, &r, repo, &fresh).await;
        acknowledged.push((fresh, digest));
    }
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let old_digests: Vec<String> = old.iter().map(|b| sha256(b)).collect();
    for d in deleted_digests(&report) {
        assert!(
            old_digests.contains(&d),
            "only what it read as old goes: {d}"
        );
    }
    assert!(!acknowledged.is_empty());
    for (tag, digest) in &acknowledged {
        assert_eq!(
            manifest_digest(&c, &r, repo, tag).await.as_deref(),
            Some(digest.as_str()),
            "acknowledged push {tag} survives retention"
        );
    }
}

/// Polls `repo:reference` until it is gone; false after `limit`.
async fn gone_within(
    c: &Client,
    r: &Registry,
    repo: &str,
    reference: &str,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if manifest_digest(c, r, repo, reference).await.is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test]
async fn the_server_runs_retention_on_schedule_with_the_pulls_it_saw() {
    let r = Registry::start_with_config(
        r#"
        [retention]
        interval_secs = 1
        grace_secs = 1
        record_pulls_every_secs = 1

        [[retention.rules]]
        name = "in-use"
        repositories = ["sched/**"]
        keep = { pulled_within = "10s" }
        "#,
    );
    let c = client();
    let repo = "sched/app";
    let pushed = Instant::now();
    let used = image(&c, &r, repo, "used").await;
    let idle = image(&c, &r, repo, "idle").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _) = get(&c, &r.v2(&format!("{repo}/manifests/used"))).await;
    assert_eq!(status, StatusCode::OK);

    // The idle image goes once ten seconds pass since its push; the pulled one stays for
    // ten seconds after its pull.
    assert!(
        gone_within(&c, &r, repo, &idle, Duration::from_secs(20)).await,
        "the scheduled run deleted the idle image"
    );
    assert!(
        pushed.elapsed() < Duration::from_secs(15),
        "checked in time"
    );
    assert_eq!(
        manifest_digest(&c, &r, repo, "used").await.as_deref(),
        Some(used.as_str()),
        "the image pulled five seconds after its push is kept"
    );

    // Two reads: behind the replicas' round-robin balancer, one from each process.
    let mut metrics = String::new();
    for _ in 0..2 {
        let resp = c.get(format!("{}/metrics", r.url)).send().await.unwrap();
        metrics.push_str(&resp.text().await.unwrap());
    }
    for line in [
        "signet_retention_runs_total{outcome=\"ok\"}",
        "signet_retention_manifests_total{outcome=\"deleted\"}",
        "signet_pulls_recorded_total",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    let log = r.stderr();
    assert!(
        log.contains("retention-delete") && log.contains(&idle),
        "the audit log names the deletion"
    );
}
