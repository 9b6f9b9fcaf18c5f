//! The shared metadata backend: PostgreSQL, one pool per process, any number of
//! replicas on one database. The statements are [`super::sql`]'s; this is the engine
//! they run on, and how its transactions keep each other consistent:
//!
//! - Rows read and then changed are locked (`LOCK_ROWS`); a tag moves only under its
//!   repository's row lock, so two conditional PUTs of one tag cannot both pass.
//!   Everything else is an `INSERT ... ON CONFLICT`, which two replicas pushing the
//!   same blob, manifest or tag resolve to one row.
//! - A GC sweep decides on rows pushes write (a link a manifest PUT has just checked, a
//!   tombstone a link must see). On SQLite the one writer orders them; here every push
//!   holds a transaction-level advisory lock shared, and the sweep holds it exclusively:
//!   pushes run beside each other, and each sees a sweep whole or not at all.
//! - The collector's lease is the `gc_lease` row, as on SQLite: one atomic upsert, with
//!   the holder and expiry the GC protocol relies on (renewal, take-over of a lease a
//!   dead collector left). A session-level advisory lock would belong to one pooled
//!   connection rather than to the collector, and would not expire.
//! - Replicas learn of each other's commits through the change feed
//!   ([`change_feed`]), which is what lets them cache.

mod change_feed;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};

use super::migrations;
use super::sql::{
    query, sqlx_engine_glue, Access, Conn, EmbeddedMigrations, Engine, Query, SqlMetadata, WriteTx,
};
use crate::error::StorageResult;
use change_feed::ChangeFeed;
pub use change_feed::STALE_BOUND;

/// The advisory lock between pushes (shared) and the GC sweep (exclusive): "SIGNETGC".
const SWEEP_LOCK: i64 = 0x5349_474E_4554_4743;

/// How long a request waits for a database connection before it fails.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The metadata store on PostgreSQL.
pub type PostgresMetadata = SqlMetadata<PostgresEngine>;

/// PostgreSQL's connections, and this process's view of the change feed.
#[derive(Debug, Clone)]
pub struct PostgresEngine {
    pool: PgPool,
    feed: Arc<ChangeFeed>,
}

sqlx_engine_glue!(Postgres, PgRow);

impl SqlMetadata<PostgresEngine> {
    /// Connects (`postgres://user:password@host:port/database`) and runs the migrations;
    /// replicas starting together migrate once (sqlx holds a lock while it migrates).
    pub async fn open(url: &str) -> StorageResult<Self> {
        // No JIT compilation: every statement here reads a bounded set of rows through
        // indexes, yet a plan with per-row index probes (GC's windows) is estimated
        // costly enough that PostgreSQL compiles it, taking longer (100–150 ms) than the
        // statement itself.
        let options = PgConnectOptions::from_str(url)?.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // A replica cut off from the database answers 5xx within this, and the
            // client's retry goes to another replica, rather than holding requests for
            // sqlx's default 30 s.
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Migrator::new(EmbeddedMigrations(migrations::POSTGRES))
            .await?
            .run(&pool)
            .await?;
        Ok(Self {
            engine: PostgresEngine {
                feed: Arc::new(ChangeFeed::new(pool.clone())),
                pool,
            },
        })
    }
}

#[async_trait]
impl Engine for PostgresEngine {
    type Row = PgRow;
    type Pool = PgConn;
    type Tx = PgTx;

    const LOCK_ROWS: &'static str = " FOR NO KEY UPDATE";

    fn readers(&self) -> PgConn {
        PgConn {
            pool: self.pool.clone(),
            feed: None,
        }
    }

    fn writer(&self) -> PgConn {
        PgConn {
            pool: self.pool.clone(),
            feed: Some(self.feed.clone()),
        }
    }

    async fn begin(&self, access: Access) -> StorageResult<Self::Tx> {
        let mut tx = self.pool.begin().await?;
        let lock = match access {
            Access::Write => None,
            Access::Push => Some("SELECT pg_advisory_xact_lock_shared($1)"),
            Access::Sweep => Some("SELECT pg_advisory_xact_lock($1)"),
        };
        if let Some(lock) = lock {
            tx.execute(query(lock).bind(SWEEP_LOCK)).await?;
        }
        Ok(PgTx {
            tx,
            feed: self.feed.clone(),
        })
    }

    fn change_token(&self) -> Option<super::ChangeToken> {
        self.feed.token()
    }

    async fn fresh_change_token(&self) -> Option<super::ChangeToken> {
        self.feed.fresh_token().await
    }
}

/// The pool as the SQL code sees it: the writer's tells the change feed of each write
/// once it has run (committed, or failed and changed nothing).
pub(crate) struct PgConn {
    pool: PgPool,
    feed: Option<Arc<ChangeFeed>>,
}

#[async_trait]
impl Conn for PgConn {
    type Row = PgRow;

    async fn fetch(&mut self, q: Query) -> StorageResult<Vec<PgRow>> {
        let rows = self.pool.fetch(q).await;
        if let Some(feed) = &self.feed {
            feed.committed();
        }
        rows
    }

    async fn execute(&mut self, q: Query) -> StorageResult<u64> {
        let changed = self.pool.execute(q).await;
        if let Some(feed) = &self.feed {
            feed.committed();
        }
        changed
    }
}

/// A write transaction that tells the change feed when it has committed.
pub(crate) struct PgTx {
    tx: Transaction<'static, Postgres>,
    feed: Arc<ChangeFeed>,
}

#[async_trait]
impl Conn for PgTx {
    type Row = PgRow;

    async fn fetch(&mut self, q: Query) -> StorageResult<Vec<PgRow>> {
        self.tx.fetch(q).await
    }

    async fn execute(&mut self, q: Query) -> StorageResult<u64> {
        self.tx.execute(q).await
    }
}

#[async_trait]
impl WriteTx for PgTx {
    async fn commit(self) -> StorageResult<()> {
        let committed = WriteTx::commit(self.tx).await;
        self.feed.committed();
        committed
    }

    async fn rollback(self) -> StorageResult<()> {
        WriteTx::rollback(self.tx).await
    }
}
