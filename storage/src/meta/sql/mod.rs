//! [`MetadataStore`] in SQL, written once for every engine.
//!
//! Statements use `$N` placeholders, which SQLite and PostgreSQL both understand, and
//! the schema each engine's migrations create has the same tables and columns. What
//! differs is behind [`Engine`]: connections, migrations, and how a transaction that
//! reads before it writes keeps others out (SQLite: its one writer; PostgreSQL: row locks
//! and an advisory lock between pushes and the GC sweep). Decisions that are not SQL
//! are in [`super::rules`].

mod atomic_signatures;
mod blob_links;
mod collection;
mod common;
mod events;
mod manifests;
pub(crate) mod query;
mod repositories;
mod retention;
mod revoked_tokens;
mod sync_jobs;
mod transfer;
mod upload_sessions;
mod verdicts;

pub(crate) use query::{query, Query};
pub(crate) use query::{
    sqlx_engine_glue, Access, Conn, EmbeddedMigrations, Engine, RowExt, WriteTx,
};

/// The metadata store on one SQL engine (see [`super::SqliteMetadata`] and
/// [`super::PostgresMetadata`]).
#[derive(Debug, Clone)]
pub struct SqlMetadata<E> {
    pub(crate) engine: E,
}
