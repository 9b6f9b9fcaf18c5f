//! The query layer both engines run: statements with `$N` placeholders and their
//! arguments, connections and transactions as the SQL code sees them ([`Conn`],
//! [`WriteTx`], [`RowExt`]), what an engine provides ([`Engine`]), and the embedded
//! migrations. Nothing here knows a table.

use std::borrow::Cow;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};

use super::common::parse_digest;
use crate::digest::Digest;
use crate::error::StorageResult;

/// A value bound to a placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I64(i64),
    Bool(bool),
    Text(Option<String>),
    Bytes(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::I64(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<&Digest> for Arg {
    fn from(v: &Digest) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Bytes(v.to_vec())
    }
}

/// A statement and its arguments, run by an engine's [`Conn`].
#[derive(Debug, Clone)]
pub(crate) struct Query {
    sql: Cow<'static, str>,
    args: Vec<Arg>,
}

pub(crate) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        args: Vec::new(),
    }
}

impl Query {
    pub fn bind(mut self, arg: impl Into<Arg>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// SQLite's plan of this statement, as a statement.
    #[cfg(test)]
    pub fn explained(&self) -> Query {
        Query {
            sql: format!("EXPLAIN QUERY PLAN {}", self.sql).into(),
            args: self.args.clone(),
        }
    }

    /// The sqlx query for engine `DB`, borrowing this one's text and arguments.
    pub fn to_sqlx<'q, DB: sqlx::Database>(
        &'q self,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        self.args
            .iter()
            .fold(sqlx::query(&self.sql), |q, arg| match arg {
                Arg::I64(v) => q.bind(*v),
                Arg::Bool(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::Bytes(v) => q.bind(v.as_slice()),
            })
    }
}

/// A row read back, by column name.
pub(crate) trait RowExt {
    fn i64(&self, column: &str) -> StorageResult<i64>;
    fn opt_i64(&self, column: &str) -> StorageResult<Option<i64>>;
    fn text(&self, column: &str) -> StorageResult<String>;
    fn opt_text(&self, column: &str) -> StorageResult<Option<String>>;
    fn bytes(&self, column: &str) -> StorageResult<Vec<u8>>;

    fn digest(&self, column: &str) -> StorageResult<Digest> {
        parse_digest(&self.text(column)?)
    }
}

/// Somewhere statements run: a pool (each statement its own transaction) or an open
/// transaction.
#[async_trait]
pub(crate) trait Conn: Send {
    type Row: RowExt + Send;

    async fn fetch(&mut self, q: Query) -> StorageResult<Vec<Self::Row>>;
    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, q: Query) -> StorageResult<u64>;

    async fn first(&mut self, q: Query) -> StorageResult<Option<Self::Row>> {
        Ok(self.fetch(q).await?.into_iter().next())
    }

    async fn exists(&mut self, q: Query) -> StorageResult<bool> {
        Ok(self.first(q).await?.is_some())
    }
}

#[async_trait]
pub(crate) trait WriteTx: Conn + Sized {
    async fn commit(self) -> StorageResult<()>;
    async fn rollback(self) -> StorageResult<()>;
}

/// What a write transaction is for, so the engine can keep the right others out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Changes only rows GC never decides on (upload sessions).
    Write,
    /// Changes blobs, links, manifests, tags or attachments: sees a GC sweep whole or
    /// not at all. Pushes run beside each other.
    Push,
    /// The GC sweep: no push runs beside it.
    Sweep,
}

/// One SQL engine: its connections, and how its transactions begin.
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    type Row: RowExt + Send;
    type Pool: Conn<Row = Self::Row>;
    type Tx: WriteTx<Row = Self::Row>;

    /// Appended to a `SELECT` whose rows the transaction goes on to change: a row lock
    /// where the engine has them, nothing where a write transaction excludes all others.
    const LOCK_ROWS: &'static str;

    /// For reads outside a transaction.
    fn readers(&self) -> Self::Pool;
    /// For single-statement writes.
    fn writer(&self) -> Self::Pool;
    async fn begin(&self, access: Access) -> StorageResult<Self::Tx>;
    /// See [`crate::meta::Repositories::change_token`].
    fn change_token(&self) -> Option<crate::meta::ChangeToken>;
    /// See [`crate::meta::Repositories::fresh_change_token`]; the plain token where it
    /// never lags.
    async fn fresh_change_token(&self) -> Option<crate::meta::ChangeToken> {
        self.change_token()
    }
}

/// Implements [`Conn`], [`WriteTx`] and [`RowExt`] for an sqlx engine's pools,
/// transactions and rows.
macro_rules! sqlx_engine_glue {
    ($db:ty, $row:ty) => {
        #[async_trait::async_trait]
        impl $crate::meta::sql::Conn for sqlx::Pool<$db> {
            type Row = $row;

            async fn fetch(
                &mut self,
                q: $crate::meta::sql::Query,
            ) -> $crate::error::StorageResult<Vec<$row>> {
                Ok(q.to_sqlx::<$db>().fetch_all(&*self).await?)
            }

            async fn execute(
                &mut self,
                q: $crate::meta::sql::Query,
            ) -> $crate::error::StorageResult<u64> {
                Ok(q.to_sqlx::<$db>().execute(&*self).await?.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl $crate::meta::sql::Conn for sqlx::Transaction<'static, $db> {
            type Row = $row;

            async fn fetch(
                &mut self,
                q: $crate::meta::sql::Query,
            ) -> $crate::error::StorageResult<Vec<$row>> {
                Ok(q.to_sqlx::<$db>().fetch_all(&mut **self).await?)
            }

            async fn execute(
                &mut self,
                q: $crate::meta::sql::Query,
            ) -> $crate::error::StorageResult<u64> {
                Ok(q.to_sqlx::<$db>()
                    .execute(&mut **self)
                    .await?
                    .rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl $crate::meta::sql::WriteTx for sqlx::Transaction<'static, $db> {
            async fn commit(self) -> $crate::error::StorageResult<()> {
                Ok(sqlx::Transaction::commit(self).await?)
            }

            async fn rollback(self) -> $crate::error::StorageResult<()> {
                Ok(sqlx::Transaction::rollback(self).await?)
            }
        }

        impl $crate::meta::sql::RowExt for $row {
            fn i64(&self, column: &str) -> $crate::error::StorageResult<i64> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_i64(&self, column: &str) -> $crate::error::StorageResult<Option<i64>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn text(&self, column: &str) -> $crate::error::StorageResult<String> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_text(&self, column: &str) -> $crate::error::StorageResult<Option<String>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn bytes(&self, column: &str) -> $crate::error::StorageResult<Vec<u8>> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}
pub(crate) use sqlx_engine_glue;

/// Migrations compiled into the binary, so no file layout is needed at run time.
#[derive(Debug)]
pub(crate) struct EmbeddedMigrations(pub &'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, name, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(name),
                        MigrationType::Simple,
                        Cow::Borrowed(sql),
                        false,
                    )
                })
                .collect())
        })
    }
}
