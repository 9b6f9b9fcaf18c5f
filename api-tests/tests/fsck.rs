//! `signet fsck` on a real server's data: content pushed over HTTP checks clean; a
//! kill -9 in the middle of a monolithic upload leaves staging that `fsck` reports and
//! `fsck --repair` removes.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use reqwest::Body;
use signet_api_tests::oci::{push_image, staged_upload_files};
use signet_api_tests::{client, random_bytes, sha256, Registry};

/// `signet fsck ARGS` on the registry's stores, with staging treated as old at once
/// (the upload expiry set to 0 for this command only): (exit success, stdout, stderr).
fn fsck(r: &Registry, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["fsck"];
    all.extend_from_slice(args);
    let out = r
        .cli(&all)
        .env("SIGNET__UPLOADS__EXPIRE_AFTER_SECS", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run signet fsck");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn fsck_reports_and_repairs_staging_left_by_a_crash() {
    let mut r = Registry::start();
    let c = client();
    push_image(&c, &r, "fsck/app", "v1", &[&random_bytes(50_000)]).await;

    let (ok, out, err) = fsck(&r, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("clean"), "{out}");
    assert!(out.contains("3 blobs") || out.contains("2 blobs"), "{out}");

    // A monolithic upload, killed half way.
    let bytes = random_bytes(300_000);
    let digest = sha256(&bytes);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let pending = tokio::spawn(
        c.post(r.v2(&format!("fsck/app/blobs/uploads/?digest={digest}")))
            .body(Body::wrap_stream(rx))
            .send(),
    );
    tx.send(Ok(Bytes::copy_from_slice(&bytes[..150_000])))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    r.kill();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), pending).await;
    let staging = r.data_dir.join("blobs").join("uploads");
    let leftovers: Vec<String> = std::fs::read_dir(&staging)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.iter().any(|f| f.starts_with("direct-")),
        "the crash left no staging folder: {leftovers:?}"
    );

    let (ok, out, _) = fsck(&r, &[]);
    assert!(!ok, "problems remain: the exit status says so\n{out}");
    assert!(
        out.contains("PROBLEM staging-orphaned uploads/direct-"),
        "{out}"
    );

    let (ok, out, err) = fsck(&r, &["--repair"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("repaired staging-orphaned"), "{out}");
    assert!(out.contains("clean after repair"), "{out}");
    assert!(staged_upload_files(&r).is_empty());
    assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none());

    let (ok, out, err) = fsck(&r, &["--json"]);
    assert!(ok, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]));
}
