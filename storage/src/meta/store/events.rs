//! The notifications outbox: events appended in the transaction of the change they
//! describe (see [`crate::events`]), each endpoint's place in them, and the events an
//! endpoint gave up on.

use async_trait::async_trait;

use crate::events::{DeadLetter, NewEvent, StoredEvent};
use crate::StorageResult;

/// The notifications outbox.
#[async_trait]
pub trait Events: Send + Sync {
    /// Appends events that belong to no other write (a pull refused, a sync run
    /// finished, a verdict reached), in one transaction, numbered after every event
    /// already committed.
    async fn append_events(&self, events: &[NewEvent]) -> StorageResult<()>;

    /// Events numbered after `after`, in order, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> StorageResult<Vec<StoredEvent>>;

    /// The number of the last event committed (0 when there is none).
    async fn latest_event_id(&self) -> StorageResult<i64>;

    /// Where `endpoint` stands: the last event it has finished with, if it ever started.
    async fn event_cursor(&self, endpoint: &str) -> StorageResult<Option<i64>>;

    /// Moves `endpoint` forward to `id`; never backward.
    async fn set_event_cursor(&self, endpoint: &str, id: i64) -> StorageResult<()>;

    /// Records that `endpoint` gave up on event `id` (replacing an earlier record).
    async fn put_dead_letter(
        &self,
        endpoint: &str,
        id: i64,
        attempts: u32,
        error: &str,
    ) -> StorageResult<()>;

    /// Dead letters, of one endpoint or all, oldest event first.
    async fn dead_letters(&self, endpoint: Option<&str>) -> StorageResult<Vec<DeadLetter>>;

    /// Asks for dead letters to be delivered again: those of `endpoint` (or every
    /// endpoint), only `ids` when given. How many were marked.
    async fn requeue_dead_letters(&self, endpoint: Option<&str>, ids: &[i64])
        -> StorageResult<u64>;

    /// Forgets a dead letter (it was delivered after all).
    async fn remove_dead_letter(&self, endpoint: &str, id: i64) -> StorageResult<()>;

    /// Deletes events numbered up to `through` and created before `before`, except those
    /// a dead letter still names; how many.
    async fn prune_events(&self, through: i64, before: i64) -> StorageResult<u64>;
}
