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

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Transaction};

use super::sql::{query, sqlx_engine_glue, Access, Conn, EmbeddedMigrations, Engine, SqlMetadata};
use crate::error::StorageResult;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "leases",
        include_str!("../../migrations/postgres/0002_leases.sql"),
    ),
    (
        4,
        "upload progress",
        include_str!("../../migrations/postgres/0004_upload_progress.sql"),
    ),
    (
        5,
        "sync jobs",
        include_str!("../../migrations/postgres/0005_sync_jobs.sql"),
    ),
    (
        6,
        "verdicts",
        include_str!("../../migrations/postgres/0006_verdicts.sql"),
    ),
    (
        7,
        "revoked tokens",
        include_str!("../../migrations/postgres/0007_revoked_tokens.sql"),
    ),
];

/// The advisory lock between pushes (shared) and the GC sweep (exclusive): "SIGNETGC".
const SWEEP_LOCK: i64 = 0x5349_474E_4554_4743;

/// The metadata store on PostgreSQL.
pub type PostgresMetadata = SqlMetadata<PostgresEngine>;

/// PostgreSQL's connections.
#[derive(Debug, Clone)]
pub struct PostgresEngine {
    pool: PgPool,
}

sqlx_engine_glue!(Postgres, PgRow);

impl SqlMetadata<PostgresEngine> {
    /// Connects (`postgres://user:password@host:port/database`) and runs the migrations;
    /// replicas starting together migrate once (sqlx holds a lock while it migrates).
    pub async fn open(url: &str) -> StorageResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect_with(options)
            .await?;
        Migrator::new(EmbeddedMigrations(MIGRATIONS))
            .await?
            .run(&pool)
            .await?;
        Ok(Self {
            engine: PostgresEngine { pool },
        })
    }
}

#[async_trait]
impl Engine for PostgresEngine {
    type Row = PgRow;
    type Pool = PgPool;
    type Tx = Transaction<'static, Postgres>;

    const LOCK_ROWS: &'static str = " FOR NO KEY UPDATE";

    fn readers(&self) -> PgPool {
        self.pool.clone()
    }

    fn writer(&self) -> PgPool {
        self.pool.clone()
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
        Ok(tx)
    }

    /// No change feed between replicas yet: nothing is cached on PostgreSQL.
    fn change_token(&self) -> Option<super::ChangeToken> {
        None
    }
}
