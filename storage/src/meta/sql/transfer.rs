//! [`Transfer`] in SQL.

use async_trait::async_trait;

use crate::error::{StorageError, StorageResult};
use crate::meta::rules::{self};
use crate::meta::*;
use crate::names::Tag;

use super::common::*;
use super::query::*;
use super::SqlMetadata;
use crate::meta::schema::{Kind, Table, EXPORTED};

#[async_trait]
impl<E: Engine> Transfer for SqlMetadata<E> {
    async fn export_blob_rows(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> StorageResult<Vec<BlobRow>> {
        let q = query(
            "SELECT digest, size, created_at FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit));
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter()
            .map(|r| {
                Ok(BlobRow {
                    digest: r.digest("digest")?,
                    size: r.i64("size")? as u64,
                    created_at: r.i64("created_at")?,
                })
            })
            .collect()
    }

    async fn export_repository(
        &self,
        name: &str,
        only: Option<&[&str]>,
        rows: ExportRows<'_>,
    ) -> StorageResult<Option<RepositoryExport>> {
        // One read transaction: the export is a consistent snapshot of what it selects.
        let mut tx = self.engine.begin(Access::Write).await?;
        let Some(repo) = tx
            .first(query("SELECT id, created_at FROM repositories WHERE name = $1").bind(name))
            .await?
        else {
            return Ok(None);
        };
        let (id, created_at) = (repo.i64("id")?, repo.i64("created_at")?);
        let mut tables = Vec::new();
        for schema in EXPORTED {
            if only.is_some_and(|only| !only.contains(&schema.name)) {
                continue;
            }
            let mut exported = Vec::new();
            for q in selections(schema, id, rows) {
                for row in tx.fetch(q).await? {
                    exported.push(
                        schema
                            .columns
                            .iter()
                            .map(|(c, kind)| read_column(&row, c, *kind))
                            .collect::<StorageResult<Vec<_>>>()?,
                    );
                }
            }
            tables.push(ExportTable {
                table: schema.name.to_string(),
                columns: schema.columns.iter().map(|(c, _)| c.to_string()).collect(),
                rows: exported,
            });
        }
        tx.rollback().await?;
        Ok(Some(RepositoryExport {
            name: name.to_string(),
            created_at,
            tables,
        }))
    }

    async fn import_blob_rows(&self, rows: &[BlobRow]) -> StorageResult<u64> {
        let mut tx = self.engine.begin(Access::Push).await?;
        let mut inserted = 0;
        for row in rows {
            inserted += tx
                .execute(
                    query(
                        "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3)
                         ON CONFLICT (digest) DO NOTHING",
                    )
                    .bind(&row.digest)
                    .bind(row.size as i64)
                    .bind(row.created_at),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn import_repository(&self, export: &RepositoryExport) -> StorageResult<u64> {
        let mut tx = self.engine.begin(Access::Push).await?;
        let mut inserted = tx
            .execute(
                query(
                    "INSERT INTO repositories (name, created_at) VALUES ($1, $2)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(export.name.as_str())
                .bind(export.created_at),
            )
            .await?;
        let repo_id = tx
            .first(query("SELECT id FROM repositories WHERE name = $1").bind(export.name.as_str()))
            .await?
            .ok_or_else(|| StorageError::Other(format!("repository {} vanished", export.name)))?
            .i64("id")?;
        for table in &export.tables {
            // Only the tables and columns this module exports: names go into SQL text.
            let known = EXPORTED
                .iter()
                .find(|schema| schema.name == table.table)
                .filter(|schema| {
                    schema.columns.len() == table.columns.len()
                        && schema
                            .columns
                            .iter()
                            .zip(&table.columns)
                            .all(|((c, _), t)| c == t)
                });
            if known.is_none() {
                return Err(StorageError::Other(format!(
                    "cannot import table {} with columns {:?}",
                    table.table, table.columns
                )));
            }
            let placeholders: Vec<String> = (2..table.columns.len() + 2)
                .map(|i| format!("${i}"))
                .collect();
            let sql = format!(
                "INSERT INTO {} (repository_id, {}) VALUES ($1, {}) ON CONFLICT DO NOTHING",
                table.table,
                table.columns.join(", "),
                placeholders.join(", ")
            );
            for row in &table.rows {
                let q = row.iter().fold(query(sql.clone()).bind(repo_id), |q, v| {
                    q.bind(match v {
                        ExportValue::Null => Arg::Text(None),
                        ExportValue::Int(i) => Arg::I64(*i),
                        ExportValue::Text(t) => Arg::Text(Some(t.clone())),
                        ExportValue::Bytes(b) => Arg::Bytes(b.clone()),
                    })
                });
                inserted += tx.execute(q).await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn rebuild_manifest_rows(&self, put: &ManifestPut) -> StorageResult<bool> {
        let m = &put.manifest;
        let mut tx = self.engine.begin(Access::Push).await?;
        let Some(repo) = tx
            .first(query("SELECT id FROM repositories WHERE name = $1").bind(put.repo.as_str()))
            .await?
        else {
            return Ok(false);
        };
        let repo_id = repo.i64("id")?;
        // Tags do not move while the rows they imply are rebuilt.
        lock_tags::<E>(&mut tx, repo_id).await?;
        let present = tx
            .exists(
                query("SELECT 1 AS one FROM manifests WHERE repository_id = $1 AND digest = $2")
                    .bind(repo_id)
                    .bind(&m.digest),
            )
            .await?;
        if !present {
            tx.rollback().await?;
            return Ok(false);
        }
        for sql in [
            "DELETE FROM manifest_blobs WHERE repository_id = $1 AND manifest_digest = $2",
            "DELETE FROM manifest_children WHERE repository_id = $1 AND index_digest = $2",
            "DELETE FROM attachments WHERE repository_id = $1 AND carrier = $2 AND source <> 'extension'",
        ] {
            tx.execute(query(sql).bind(repo_id).bind(&m.digest)).await?;
        }
        insert_edges(&mut tx, repo_id, put).await?;
        let tags = tx
            .fetch(
                query(
                    "SELECT name FROM tags WHERE repository_id = $1 AND digest = $2 ORDER BY name",
                )
                .bind(repo_id)
                .bind(&m.digest),
            )
            .await?
            .iter()
            .map(|row| row.text("name"))
            .collect::<StorageResult<Vec<_>>>()?
            .into_iter()
            .filter_map(|name| name.parse::<Tag>().ok())
            .collect::<Vec<_>>();
        let described =
            describe_entries(&mut tx, repo_id, &rules::entries_to_describe(put, &tags)).await?;
        let rows = rules::put_rows(put, &tags, &described);
        let at = now();
        for row in rows {
            insert_attachment(&mut tx, repo_id, row, at).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

/// The statements that read the rows of `table` that `rows` selects in repository
/// `repo_id` (several for a long list of owners; none for a table without owners
/// unless every row is asked for).
fn selections(table: &Table, repo_id: i64, rows: ExportRows<'_>) -> Vec<Query> {
    let columns: Vec<String> = table
        .columns
        .iter()
        .map(|(c, _)| format!("t.{c}"))
        .collect();
    let select = format!(
        "SELECT {} FROM {} t WHERE t.repository_id = $1",
        columns.join(", "),
        table.name
    );
    let order = format!("ORDER BY {}", table.order);
    let owner = match (rows, table.owner) {
        (ExportRows::All, _) => return vec![query(format!("{select} {order}")).bind(repo_id)],
        (_, None) => return Vec::new(),
        (_, Some(owner)) => owner,
    };
    // Rows picked by owner come in owner order first, so that the owner's index both
    // finds and orders them. Ordered by the table's own key alone (a tag's name),
    // SQLite walked that key instead: every tag of the repository for each window of
    // fsck, whose cost then grew with the square of the tags.
    let by_owner = format!("ORDER BY t.{owner}, {}", table.order);
    match rows {
        ExportRows::All => unreachable!("answered above"),
        ExportRows::Window { after, limit } => vec![query(format!(
            "{select} AND t.{owner} IN (SELECT m.digest FROM manifests m
             WHERE m.repository_id = $1 AND m.digest > $2 ORDER BY m.digest LIMIT $3) {by_owner}"
        ))
        .bind(repo_id)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))],
        ExportRows::Of(digests) => digests
            .chunks(DIGESTS_PER_STATEMENT)
            .map(|batch| {
                let sql = format!(
                    "{select} AND t.{owner} IN ({}) {by_owner}",
                    placeholders(2, batch.len())
                );
                batch
                    .iter()
                    .fold(query(sql).bind(repo_id), |q, d| q.bind(d))
            })
            .collect(),
        ExportRows::Unowned => vec![query(format!(
            "{select} AND NOT EXISTS (SELECT 1 FROM manifests m
             WHERE m.repository_id = $1 AND m.digest = t.{owner}) {order}"
        ))
        .bind(repo_id)],
    }
}

/// One column of a row, read the way its schema says.
fn read_column(row: &impl RowExt, column: &str, kind: Kind) -> StorageResult<ExportValue> {
    Ok(match kind {
        Kind::Int => ExportValue::Int(row.i64(column)?),
        Kind::Text => ExportValue::Text(row.text(column)?),
        Kind::OptText => row
            .opt_text(column)?
            .map_or(ExportValue::Null, ExportValue::Text),
        Kind::Bytes => ExportValue::Bytes(row.bytes(column)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::schema::EXPORTED;
    use crate::meta::sql::Engine;
    use crate::meta::sqlite::SqliteMetadata;
    use sqlx::Row;

    /// SQLite's plan for each statement that picks rows by owner finds them through an
    /// index on the owner, never by walking the repository's rows.
    #[tokio::test]
    async fn rows_picked_by_owner_are_found_by_their_owner() {
        let store = SqliteMetadata::open("sqlite::memory:").await.unwrap();
        let pool = store.engine.readers();
        let asked = [Digest::sha256_of(b"a"), Digest::sha256_of(b"b")];
        let picks = [
            ExportRows::Window {
                after: Some("sha256:"),
                limit: 8,
            },
            ExportRows::Of(&asked),
        ];
        for table in EXPORTED {
            let Some(owner) = table.owner else { continue };
            for rows in picks {
                for q in selections(table, 1, rows) {
                    let explained = q.explained();
                    let plan: Vec<String> = explained
                        .to_sqlx::<sqlx::Sqlite>()
                        .fetch_all(&pool)
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.get::<String, _>("detail"))
                        .collect();
                    let outer = plan
                        .iter()
                        .find(|line| line.contains(" t "))
                        .unwrap_or_else(|| panic!("{}: {plan:?}", table.name));
                    assert!(
                        outer.contains(&format!("{owner}=?")),
                        "{} {rows:?}: {plan:?}",
                        table.name
                    );
                }
            }
        }
    }
}
