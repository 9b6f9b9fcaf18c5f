//! Events that belong to no write: a sync run finished and a verdict reached are
//! appended at once; pulls refused by policy, which an attacker can make many of, are
//! noted in memory and appended in batches (the same refusal within a minute once; a
//! full queue drops and counts them).
//!
//! Also the wake-up: the delivery worker sleeps until this process records an event or
//! writes through the registry, or until its poll interval passes (another replica's
//! events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use signet_storage::events::NewEvent;
use signet_storage::meta::{ManifestPut, MetadataStore};
use signet_storage::names::{RepoName, Tag};
use signet_storage::registry::WriteHooks;
use signet_storage::Digest;
use tokio::sync::{mpsc, watch};

/// Raised after each event this process records or change it commits; each delivery
/// task holds a receiver, so no raise is lost between its last look and its wait.
pub type Wake = Arc<watch::Sender<()>>;

/// Pull refusals waiting to be appended; beyond this they are dropped.
const QUEUE: usize = 4096;
/// Refusals appended per transaction.
const BATCH: usize = 256;
/// The same noted event again within this is dropped.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);
/// Noted events remembered for that.
const RECENT_CAPACITY: usize = 10_000;

/// Where this process records events outside the write path.
#[derive(Clone, Default)]
pub struct EventLog {
    /// `None` when no endpoint is configured: nothing is recorded.
    meta: Option<Arc<dyn MetadataStore>>,
    wake: Wake,
    queue: Arc<OnceLock<mpsc::Sender<NewEvent>>>,
    /// When each noted event was last noted (see [`EventLog::note`]).
    recent: Arc<Mutex<HashMap<String, Instant>>>,
}

impl EventLog {
    pub fn new(meta: Option<Arc<dyn MetadataStore>>) -> Self {
        EventLog {
            meta,
            ..EventLog::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.meta.is_some()
    }

    /// Raised when this process records an event.
    pub fn wake(&self) -> Wake {
        self.wake.clone()
    }

    /// Appends `events` now; a failure is logged (the change they describe stands).
    pub async fn append(&self, events: Vec<NewEvent>) {
        let Some(meta) = &self.meta else { return };
        if events.is_empty() {
            return;
        }
        match meta.append_events(&events).await {
            Ok(()) => self.wake.send_replace(()),
            Err(e) => tracing::warn!(error = %e, events = events.len(), "could not record events"),
        }
    }

    /// Queues `event` to be appended with others shortly. The same event (type,
    /// repository, digest, tag, actor) noted again within [`REPEAT_WINDOW`] is dropped: a
    /// client retrying a refused pull, or one refused on purpose again and again, makes
    /// one event a minute, not one per request.
    pub fn note(&self, event: NewEvent) {
        let Some(meta) = &self.meta else { return };
        if self.repeated(&event) {
            return;
        }
        let sender = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write_batches(meta.clone(), rx, self.wake.clone()));
            tx
        });
        if sender.try_send(event).is_err() {
            crate::ops::metrics::global()
                .events_dropped
                .with_label_values::<&str>(&[])
                .inc();
        }
    }
}

impl EventLog {
    fn repeated(&self, event: &NewEvent) -> bool {
        let d = &event.data;
        let key = format!(
            "{}\0{}\0{}\0{}\0{}",
            event.event_type,
            d.repository,
            d.digest.as_deref().unwrap_or(""),
            d.tag.as_deref().unwrap_or(""),
            d.actor.as_deref().unwrap_or("")
        );
        let now = Instant::now();
        let mut seen = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= RECENT_CAPACITY {
            seen.retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
            if seen.len() >= RECENT_CAPACITY {
                seen.clear();
            }
        }
        match seen.get(&key) {
            Some(at) if now.duration_since(*at) < REPEAT_WINDOW => true,
            _ => {
                seen.insert(key, now);
                false
            }
        }
    }
}

async fn write_batches(meta: Arc<dyn MetadataStore>, mut rx: mpsc::Receiver<NewEvent>, wake: Wake) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        loop {
            match meta.append_events(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, events = batch.len(), "could not record events; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
        batch.clear();
        wake.send_replace(());
    }
}

/// The registry hook that wakes the delivery worker after every committed change.
pub struct WakeOnWrite(pub Wake);

impl WriteHooks for WakeOnWrite {
    fn manifest_stored(&self, _: &ManifestPut) {
        self.0.send_replace(());
    }
    fn manifests_deleted(&self, _: &RepoName, _: &[Digest]) {
        self.0.send_replace(());
    }
    fn tag_deleted(&self, _: &RepoName, _: &Tag) {
        self.0.send_replace(());
    }
    fn signature_stored(&self, _: &RepoName, _: &Digest, _: &str) {
        self.0.send_replace(());
    }
}

#[cfg(test)]
mod tests {
    use signet_storage::events::{EventData, EventType};

    use super::*;

    fn refused(digest: &str, actor: &str) -> NewEvent {
        NewEvent::new(
            EventType::PullRefused,
            EventData {
                repository: "prod/app".into(),
                digest: Some(digest.into()),
                actor: Some(actor.into()),
                ..EventData::default()
            },
        )
    }

    #[test]
    fn the_same_refusal_again_within_the_window_is_dropped() {
        let log = EventLog::default();
        assert!(!log.repeated(&refused("sha256:a", "mallory")));
        assert!(log.repeated(&refused("sha256:a", "mallory")));
        // Another manifest or another caller is another event.
        assert!(!log.repeated(&refused("sha256:b", "mallory")));
        assert!(!log.repeated(&refused("sha256:a", "alice")));
    }
}
