//! Signet on PostgreSQL (`[storage] metadata_url = "postgres://..."`): an image pushed
//! and pulled over HTTP, still there after the server is killed and started again on the
//! same database, and served by a second replica sharing the database and blob folder.

use reqwest::StatusCode;
use serde_json::Value;
use signet_api_tests::oci::{get, push_image};
use signet_api_tests::{client, random_bytes, sha256, Registry};
use signet_storage::testing::TestDatabase;

fn config(db: &TestDatabase, blob_dir: &std::path::Path) -> String {
    format!(
        "[storage]\nmetadata_url = \"{}\"\nblob_dir = \"{}\"\n",
        db.url,
        blob_dir.display()
    )
}

/// Pulls `repo:tag` as a client does: the manifest, then every blob it names.
async fn pull(c: &reqwest::Client, r: &Registry, repo: &str, tag: &str, manifest: &[u8]) {
    let (status, body) = get(c, &r.v2(&format!("{repo}/manifests/{tag}"))).await;
    assert_eq!(status, StatusCode::OK, "{repo}:{tag} on {}", r.url);
    assert_eq!(body.as_ref(), manifest, "manifest bytes as pushed");
    let m: Value = serde_json::from_slice(&body).unwrap();
    let layers = m["layers"].as_array().unwrap().iter();
    for d in layers.chain(std::iter::once(&m["config"])) {
        let digest = d["digest"].as_str().unwrap();
        let (status, bytes) = get(c, &r.v2(&format!("{repo}/blobs/{digest}"))).await;
        assert_eq!(status, StatusCode::OK, "blob {digest}");
        assert_eq!(sha256(&bytes), digest);
    }
}

#[tokio::test]
async fn signet_runs_on_postgres_and_keeps_its_data_across_restarts() {
    let db = TestDatabase::create().await;
    let shared = tempfile::tempdir().unwrap();
    let toml = config(&db, &shared.path().join("blobs"));
    let c = client();

    let mut r = Registry::start_with_config(&toml);
    let (l1, l2) = (random_bytes(2048), random_bytes(4096));
    let manifest = push_image(&c, &r, "pg/app", "v1", &[&l1, &l2]).await;
    pull(&c, &r, "pg/app", "v1", &manifest).await;
    assert!(
        !r.data_dir.join("signet.db").exists(),
        "the metadata went to PostgreSQL, not to a SQLite file"
    );

    // Killed and started again on the same database: everything is still there.
    r.crash_and_restart();
    pull(&c, &r, "pg/app", "v1", &manifest).await;
    let (status, body) = get(&c, &r.v2("pg/app/tags/list")).await;
    assert_eq!(status, StatusCode::OK);
    let tags: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));

    // A second replica on the same database and blob folder serves what the first
    // pushed, and the first serves what the second pushes.
    let replica = Registry::start_with_config(&toml);
    pull(&c, &replica, "pg/app", "v1", &manifest).await;
    let other = push_image(&c, &replica, "pg/other", "latest", &[&l1]).await;
    pull(&c, &r, "pg/other", "latest", &other).await;
    let (_, body) = get(&c, &format!("{}/v2/_catalog", r.url)).await;
    let catalog: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["pg/app", "pg/other"])
    );
}
