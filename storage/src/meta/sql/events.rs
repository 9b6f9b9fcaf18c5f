//! [`Events`] in SQL: the outbox, endpoint cursors and dead letters.

use async_trait::async_trait;

use crate::error::{StorageError, StorageResult};
use crate::events::{DeadLetter, EventData, EventType, Journal, NewEvent, StoredEvent};
use crate::meta::*;

use super::query::*;
use super::SqlMetadata;

/// Appends `events` in `tx`, numbered after every event committed before. The counter
/// row's lock is held until `tx` ends, so numbers follow commit order: a reader that has
/// seen event n has seen every event before it, and an endpoint's cursor never skips
/// one. Call it as the transaction's last statement, so the lock is held briefly.
pub(super) async fn append_in_tx(tx: &mut impl Conn, events: &[NewEvent]) -> StorageResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let row = tx
        .first(
            query("UPDATE event_counter SET last_id = last_id + $1 WHERE id = 1 RETURNING last_id")
                .bind(events.len() as i64),
        )
        .await?
        .ok_or_else(|| StorageError::Corrupt("the event counter row is missing".into()))?;
    let last = row.i64("last_id")?;
    let first = last - events.len() as i64 + 1;
    let at = now();
    for (n, event) in events.iter().enumerate() {
        let data = serde_json::to_string(&event.data)
            .map_err(|e| StorageError::Corrupt(format!("event not serializable: {e}")))?;
        tx.execute(
            query(
                "INSERT INTO events (id, event_id, type, repository, data, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(first + n as i64)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(event.event_type.as_str())
            .bind(event.data.repository.as_str())
            .bind(data)
            .bind(at),
        )
        .await?;
    }
    Ok(())
}

/// Appends what `make` describes when `journal` records events.
pub(super) async fn journal_in_tx(
    tx: &mut impl Conn,
    journal: Journal<'_>,
    make: impl FnOnce() -> Vec<NewEvent>,
) -> StorageResult<()> {
    if journal.enabled() {
        append_in_tx(tx, &make()).await?;
    }
    Ok(())
}

fn event_from_row(row: &impl RowExt) -> StorageResult<StoredEvent> {
    let type_name = row.text("type")?;
    let event_type = EventType::parse(&type_name)
        .ok_or_else(|| StorageError::Corrupt(format!("unknown event type {type_name:?}")))?;
    let data: EventData = serde_json::from_str(&row.text("data")?)
        .map_err(|e| StorageError::Corrupt(format!("event data unreadable: {e}")))?;
    Ok(StoredEvent {
        id: row.i64("id")?,
        event_id: row.text("event_id")?,
        event_type,
        created_at: row.i64("created_at")?,
        data,
    })
}

#[async_trait]
impl<E: Engine> Events for SqlMetadata<E> {
    async fn append_events(&self, events: &[NewEvent]) -> StorageResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.engine.begin(Access::Write).await?;
        append_in_tx(&mut tx, events).await?;
        tx.commit().await
    }

    async fn events_after(&self, after: i64, limit: u32) -> StorageResult<Vec<StoredEvent>> {
        let q = query(
            "SELECT id, event_id, type, data, created_at FROM events
              WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64);
        let rows = self.engine.readers().fetch(q).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn latest_event_id(&self) -> StorageResult<i64> {
        let q = query("SELECT last_id FROM event_counter WHERE id = 1");
        match self.engine.readers().first(q).await? {
            Some(row) => row.i64("last_id"),
            None => Ok(0),
        }
    }

    async fn event_cursor(&self, endpoint: &str) -> StorageResult<Option<i64>> {
        let q = query("SELECT last_id FROM event_cursors WHERE endpoint = $1").bind(endpoint);
        self.engine
            .writer()
            .first(q)
            .await?
            .map(|r| r.i64("last_id"))
            .transpose()
    }

    async fn set_event_cursor(&self, endpoint: &str, id: i64) -> StorageResult<()> {
        let q = query(
            "INSERT INTO event_cursors (endpoint, last_id) VALUES ($1, $2)
             ON CONFLICT (endpoint) DO UPDATE SET last_id = excluded.last_id
              WHERE event_cursors.last_id < excluded.last_id",
        )
        .bind(endpoint)
        .bind(id);
        self.engine.writer().execute(q).await?;
        Ok(())
    }

    async fn put_dead_letter(
        &self,
        endpoint: &str,
        id: i64,
        attempts: u32,
        error: &str,
    ) -> StorageResult<()> {
        let q = query(
            "INSERT INTO event_dead_letters (endpoint, event, attempts, error, failed_at, requeued)
             VALUES ($1, $2, $3, $4, $5, 0)
             ON CONFLICT (endpoint, event) DO UPDATE SET attempts = excluded.attempts,
                 error = excluded.error, failed_at = excluded.failed_at, requeued = 0",
        )
        .bind(endpoint)
        .bind(id)
        .bind(attempts as i64)
        .bind(error)
        .bind(now());
        self.engine.writer().execute(q).await?;
        Ok(())
    }

    async fn dead_letters(&self, endpoint: Option<&str>) -> StorageResult<Vec<DeadLetter>> {
        let q = query(
            "SELECT d.endpoint, d.attempts, d.error, d.failed_at, d.requeued,
                    e.id, e.event_id, e.type, e.data, e.created_at
               FROM event_dead_letters d JOIN events e ON e.id = d.event
              WHERE $1 = '' OR d.endpoint = $1
              ORDER BY e.id, d.endpoint",
        )
        .bind(endpoint.unwrap_or(""));
        let rows = self.engine.writer().fetch(q).await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    endpoint: row.text("endpoint")?,
                    event: event_from_row(row)?,
                    attempts: row.i64("attempts")? as u32,
                    error: row.text("error")?,
                    failed_at: row.i64("failed_at")?,
                    requeued: row.i64("requeued")? != 0,
                })
            })
            .collect()
    }

    async fn requeue_dead_letters(
        &self,
        endpoint: Option<&str>,
        ids: &[i64],
    ) -> StorageResult<u64> {
        let mut tx = self.engine.begin(Access::Write).await?;
        let mut marked = 0;
        let endpoint = endpoint.unwrap_or("");
        if ids.is_empty() {
            marked += tx
                .execute(
                    query(
                        "UPDATE event_dead_letters SET requeued = 1
                          WHERE ($1 = '' OR endpoint = $1) AND requeued = 0",
                    )
                    .bind(endpoint),
                )
                .await?;
        }
        for id in ids {
            marked += tx
                .execute(
                    query(
                        "UPDATE event_dead_letters SET requeued = 1
                          WHERE ($1 = '' OR endpoint = $1) AND event = $2 AND requeued = 0",
                    )
                    .bind(endpoint)
                    .bind(*id),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(marked)
    }

    async fn remove_dead_letter(&self, endpoint: &str, id: i64) -> StorageResult<()> {
        let q = query("DELETE FROM event_dead_letters WHERE endpoint = $1 AND event = $2")
            .bind(endpoint)
            .bind(id);
        self.engine.writer().execute(q).await?;
        Ok(())
    }

    async fn prune_events(&self, through: i64, before: i64) -> StorageResult<u64> {
        let q = query(
            "DELETE FROM events WHERE id <= $1 AND created_at < $2
               AND NOT EXISTS (SELECT 1 FROM event_dead_letters d WHERE d.event = events.id)",
        )
        .bind(through)
        .bind(before);
        self.engine.writer().execute(q).await
    }
}
