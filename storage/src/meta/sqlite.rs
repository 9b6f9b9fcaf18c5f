//! The embedded metadata backend: SQLite in WAL mode, one writer connection (SQLite
//! serialises writers anyway; one connection avoids lock upgrades that would fail with
//! SQLITE_BUSY) and a pool of readers that never wait for it. The statements are
//! [`super::sql`]'s; this is the engine they run on.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::migrations;
use super::sql::{sqlx_engine_glue, Access, EmbeddedMigrations, Engine, SqlMetadata};
use super::wal_index::WalIndex;
use super::ChangeToken;
use crate::error::StorageResult;

/// Write transactions start with the write lock: with another process writing the same
/// database (`signet gc` beside the server), a deferred one that reads before it writes
/// would fail at its first write (SQLITE_BUSY_SNAPSHOT) instead of waiting. Holding the
/// one write lock is also what keeps a GC sweep and pushes apart.
const IMMEDIATE: &str = "BEGIN IMMEDIATE";

/// The metadata store on SQLite.
pub type SqliteMetadata = SqlMetadata<SqliteEngine>;

/// SQLite's connections: the one writer and the readers; and the WAL-index header that
/// tells of commits (`None` for an in-memory database, which has none).
#[derive(Debug, Clone)]
pub struct SqliteEngine {
    writer: SqlitePool,
    readers: SqlitePool,
    changes: Option<Arc<WalIndex>>,
}

sqlx_engine_glue!(Sqlite, SqliteRow);

impl SqlMetadata<SqliteEngine> {
    pub async fn open(url: &str) -> StorageResult<Self> {
        let base = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives a crash of the process (kill -9) without fsync per
            // commit; only a power loss can drop the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let changes = (!in_memory).then(|| Arc::new(WalIndex::new(base.get_filename())));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(base.clone())
            .await?;
        Migrator::new(EmbeddedMigrations(migrations::SQLITE))
            .await?
            .run(&writer)
            .await?;
        // An in-memory database exists only inside its one connection.
        let readers = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(base.read_only(true))
                .await?
        };
        Ok(Self {
            engine: SqliteEngine {
                writer,
                readers,
                changes,
            },
        })
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    type Row = SqliteRow;
    type Pool = SqlitePool;
    type Tx = Transaction<'static, Sqlite>;

    const LOCK_ROWS: &'static str = "";

    fn readers(&self) -> SqlitePool {
        self.readers.clone()
    }

    fn writer(&self) -> SqlitePool {
        self.writer.clone()
    }

    async fn begin(&self, _access: Access) -> StorageResult<Self::Tx> {
        Ok(self.writer.begin_with(IMMEDIATE).await?)
    }

    fn change_token(&self) -> Option<ChangeToken> {
        self.changes.as_ref()?.token()
    }
}
