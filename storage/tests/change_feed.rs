//! The change feed on PostgreSQL: a replica's change token moves within the stated
//! bound after another replica commits, whatever happens to the notifications.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use signet_storage::meta::{
    ChangeToken, ManifestPut, ManifestRecord, Manifests, PostgresMetadata, Repositories,
    STALE_BOUND,
};
use signet_storage::testing::TestDatabase;
use signet_storage::{Digest, RepoName};

fn put(body: &str) -> ManifestPut {
    ManifestPut {
        repo: "feed/app".parse::<RepoName>().unwrap(),
        manifest: ManifestRecord {
            digest: Digest::sha256_of(body.as_bytes()),
            media_type: signet_storage::manifest::OCI_MANIFEST.into(),
            content: Bytes::from(body.to_string()),
            artifact_type: None,
            subject: None,
            annotations: Default::default(),
        },
        blobs: vec![],
        children: vec![],
        sizes: Vec::new(),
        tags: vec!["latest".parse().unwrap()],
        condition: None,
        immutable: Vec::new(),
    }
}

/// The store's token, once it has one (the feed starts with the first question).
async fn token(store: &PostgresMetadata) -> ChangeToken {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(t) = store.change_token() {
            return t;
        }
        assert!(Instant::now() < deadline, "no change token after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Within the bound after `committed`, `store`'s token is no longer `before`; how long
/// that took.
async fn moves_within_bound(
    store: &PostgresMetadata,
    before: &ChangeToken,
    committed: Instant,
) -> Duration {
    loop {
        if store.change_token().as_ref() != Some(before) {
            return committed.elapsed();
        }
        assert!(
            committed.elapsed() <= STALE_BOUND,
            "the token still vouched for answers read before a commit {:?} ago",
            committed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn replicas(db: &TestDatabase) -> (Arc<PostgresMetadata>, Arc<PostgresMetadata>) {
    (
        Arc::new(PostgresMetadata::open(&db.url).await.unwrap()),
        Arc::new(PostgresMetadata::open(&db.url).await.unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_moves_both_replicas_tokens() {
    let db = TestDatabase::create().await;
    let (a, b) = replicas(&db).await;
    let (before_a, before_b) = (token(&a).await, token(&b).await);

    a.put_manifest(&put("{\"n\":1}")).await.unwrap();
    let committed = Instant::now();
    // The writer's own token moved before the write returned.
    assert_ne!(a.change_token(), Some(before_a));
    // The other replica hears of it through the notification, well inside the bound.
    let took = moves_within_bound(&b, &before_b, committed).await;
    assert!(took < STALE_BOUND / 2, "notified after {took:?}");

    // A read changes nothing: the token stays while nothing is written (once the poll
    // has seen the commit too).
    tokio::time::sleep(STALE_BOUND / 2).await;
    let quiet = token(&b).await;
    a.get_manifest(&"feed/app".parse().unwrap(), &"latest".parse().unwrap())
        .await
        .unwrap()
        .expect("stored");
    tokio::time::sleep(STALE_BOUND / 2).await;
    assert_eq!(b.change_token(), Some(quiet));
}

/// The fresh token has seen every commit acknowledged before it was asked, at once:
/// no notification or poll is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fresh_token_sees_an_acknowledged_commit_at_once() {
    let db = TestDatabase::create().await;
    let (a, b) = replicas(&db).await;
    for n in 0..20 {
        let before = b.fresh_change_token().await.expect("a fresh token");
        a.put_manifest(&put(&format!("{{\"fresh\":{n}}}")))
            .await
            .unwrap();
        let after = b.fresh_change_token().await.expect("a fresh token");
        assert_ne!(before, after, "commit {n}");
    }
    // With nothing written, it stays.
    tokio::time::sleep(STALE_BOUND / 2).await;
    let quiet = b.fresh_change_token().await;
    assert_eq!(b.fresh_change_token().await, quiet);
}

/// A commit whose notification never comes (the counter moved by hand, as a lost
/// notification would leave it) is caught by the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_catches_a_change_without_its_notification() {
    let db = TestDatabase::create().await;
    let (_a, b) = replicas(&db).await;
    let before = token(&b).await;
    let raw = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE change_feed SET changes = changes + 1 WHERE slot = 3")
        .execute(&raw)
        .await
        .unwrap();
    moves_within_bound(&b, &before, Instant::now()).await;
}

/// The listening connection killed (`pg_terminate_backend`), then a commit: the token
/// moves or goes within the bound, and comes back once the feed has reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_hides_no_commit() {
    let db = TestDatabase::create().await;
    let (a, b) = replicas(&db).await;
    let _ = token(&a).await;
    let before = token(&b).await;
    let raw = sqlx::PgPool::connect(&db.url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(killed, vec![true, true], "both replicas listen");
    a.put_manifest(&put("{\"n\":2}")).await.unwrap();
    moves_within_bound(&b, &before, Instant::now()).await;
    let back = token(&b).await;
    assert_ne!(back, before);
}

/// PostgreSQL restarted as after a crash: no token vouches for what was read before,
/// and a commit after the restart is seen by the other replica within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_hides_no_commit() {
    let db = TestDatabase::create_in_own_cluster().await;
    let (a, b) = replicas(&db).await;
    let _ = token(&a).await;
    let before = token(&b).await;
    db.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match a.put_manifest(&put("{\"n\":3}")).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying after the restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no write 20 s after the restart: {e}"),
        }
    }
    moves_within_bound(&b, &before, Instant::now()).await;
    let after = token(&b).await;
    assert_ne!(after, before);
    // And the feed works again: the next commit is heard.
    a.put_manifest(&put("{\"n\":4}")).await.unwrap();
    moves_within_bound(&b, &after, Instant::now()).await;
}

/// Every table has the trigger that feeds the change counter, except those no cached
/// answer reads: a new table must be put on one side or the other.
#[tokio::test]
async fn every_table_a_cache_reads_feeds_the_counter() {
    let db = TestDatabase::create().await;
    let _store = PostgresMetadata::open(&db.url).await.unwrap();
    let raw = sqlx::PgPool::connect(&db.url).await.unwrap();
    let without: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::TEXT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind = 'r'
           AND NOT EXISTS (SELECT 1 FROM pg_trigger t
                           WHERE t.tgrelid = c.oid AND t.tgname = 'changed')
         ORDER BY 1",
    )
    .fetch_all(&raw)
    .await
    .unwrap();
    assert_eq!(
        without,
        [
            "_sqlx_migrations",
            "blob_deletions",
            "blob_pins",
            "blobs",
            "change_feed",
            "event_counter",
            "event_cursors",
            "event_dead_letters",
            "events",
            "gc_lease",
            "leases",
            "manifest_pulls",
            "revoked_tokens",
            "sync_jobs",
            "uploads",
        ]
    );
}
