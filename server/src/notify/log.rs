//! Events that belong to no write: a sync run finished and a verdict reached are
//! appended at once; pulls refused by policy, which an attacker can make many of, are
//! noted in memory and appended in batches (a full queue drops and counts them).
//!
//! Also the wake-up: the delivery worker sleeps until this process records an event or
//! writes through the registry, or until its poll interval passes (another replica's
//! events).

use std::sync::{Arc, OnceLock};

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

/// Where this process records events outside the write path.
#[derive(Clone, Default)]
pub struct EventLog {
    /// `None` when no endpoint is configured: nothing is recorded.
    meta: Option<Arc<dyn MetadataStore>>,
    wake: Wake,
    queue: Arc<OnceLock<mpsc::Sender<NewEvent>>>,
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

    /// Queues `event` to be appended with others shortly.
    pub fn note(&self, event: NewEvent) {
        let Some(meta) = &self.meta else { return };
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
