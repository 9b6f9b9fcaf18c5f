//! Delivery. One replica at a time holds the `notifications` lease; while it does, a
//! task per endpoint walks the outbox from the endpoint's cursor in event order (commit
//! order, so per repository too). An event the endpoint's filters leave out is passed
//! over; any other is tried until the receiver answers 2xx, waiting
//! `initial_backoff_ms`, doubling up to `max_backoff_secs`, between tries. After
//! `max_attempts` it becomes a dead letter and the walk goes on. The cursor moves past
//! an event only after that, so a process killed mid-delivery leaves the event to be
//! sent again: at least once, with the event id for the receiver to deduplicate on.
//!
//! The walk goes on only while the lease is surely held: until the start of the last
//! successful acquire plus the lease's length (less a second), however late the next
//! renewal. So a stalled replica stops before another can take over; the new holder
//! may send the event that was in flight again, which at-least-once allows.

use std::sync::Arc;
use std::time::Duration;

use signet_storage::events::StoredEvent;
use signet_storage::meta::MetadataStore;
use tokio::sync::watch;

use super::endpoint::{Endpoint, Sent};
use super::NotificationsConfig;
use crate::state::AppState;

const LEASE: &str = "notifications";
/// Events read per query.
const BATCH: u32 = 64;
/// How often an idle endpoint looks for other replicas' events.
const POLL: Duration = Duration::from_millis(500);
/// How often an endpoint looks for dead letters asked to be redelivered.
const REDELIVERY_CHECK: Duration = Duration::from_secs(2);
/// How often the lease holder deletes events every endpoint has finished with.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Opens every endpoint, and starts a new one at the newest event: it receives what
/// happens from now on. Runs before the server listens, so no event recorded once it
/// serves is before an endpoint's start.
pub async fn prepare(state: &AppState) -> anyhow::Result<Vec<Arc<Endpoint>>> {
    let config = &state.config.notifications;
    config.validate()?;
    let mut endpoints = Vec::new();
    for e in &config.endpoints {
        let endpoint = Endpoint::open(e)?;
        if state.meta.event_cursor(&endpoint.name).await?.is_none() {
            let latest = state.meta.latest_event_id().await?;
            state.meta.set_event_cursor(&endpoint.name, latest).await?;
        }
        endpoints.push(Arc::new(endpoint));
    }
    Ok(endpoints)
}

/// Starts delivery to `endpoints` (from [`prepare`]).
pub fn spawn(state: Arc<AppState>, endpoints: Vec<Arc<Endpoint>>) {
    if endpoints.is_empty() {
        return;
    }
    let holder = format!("notify-{}", uuid::Uuid::new_v4().simple());
    let (held_tx, held) = watch::channel(None);
    actix_web::rt::spawn(hold_lease(
        state.clone(),
        holder,
        held_tx,
        endpoints.clone(),
    ));
    for endpoint in endpoints {
        let walker = Walker {
            meta: state.meta.clone(),
            config: state.config.notifications.clone(),
            endpoint,
            held: held.clone(),
            redeliveries_checked: None,
        };
        let wake = state.events.wake().subscribe();
        actix_web::rt::spawn(walker.run(wake));
    }
}

/// Until when this replica holds the lease, if it does: the time its last successful
/// acquire began plus the lease's length, less a margin. A walker stops when it passes,
/// however late a renewal is, so two replicas never walk at once.
type Held = Option<tokio::time::Instant>;

/// Takes and renews the lease, publishing until when this replica holds it; the holder
/// also prunes (beside the renewals, never delaying one).
async fn hold_lease(
    state: Arc<AppState>,
    holder: String,
    held: watch::Sender<Held>,
    endpoints: Vec<Arc<Endpoint>>,
) {
    let ttl = state.config.notifications.lease_secs.max(3) as i64;
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        let asked = tokio::time::Instant::now();
        let until = match state.meta.lease_acquire(LEASE, &holder, ttl).await {
            Ok(true) => Some(asked + Duration::from_secs(ttl as u64 - 1)),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the notifications lease");
                None
            }
        };
        held.send_replace(until);
        if until.is_some() && last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(tokio::time::Instant::now());
            let (state, endpoints) = (state.clone(), endpoints.clone());
            actix_web::rt::spawn(async move { prune(&state, &endpoints).await });
        }
        tokio::time::sleep(Duration::from_secs((ttl / 3).max(1) as u64)).await;
    }
}

fn holds(held: &watch::Receiver<Held>) -> bool {
    held.borrow()
        .is_some_and(|until| tokio::time::Instant::now() < until)
}

/// Deletes the events every configured endpoint has finished with, once `keep_secs` old.
async fn prune(state: &AppState, endpoints: &[Arc<Endpoint>]) {
    let mut through = i64::MAX;
    for e in endpoints {
        match state.meta.event_cursor(&e.name).await {
            Ok(Some(cursor)) => through = through.min(cursor),
            _ => return,
        }
    }
    let before = signet_storage::meta::now() - state.config.notifications.keep_secs as i64;
    match state.meta.prune_events(through, before).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "pruned delivered events"),
        Err(e) => tracing::warn!(error = %e, "could not prune delivered events"),
    }
}

/// What became of an event.
enum Outcome {
    Delivered,
    Dead,
    /// The lease went: another replica carries on from the cursor.
    Abandoned,
}

struct Walker {
    meta: Arc<dyn MetadataStore>,
    config: NotificationsConfig,
    endpoint: Arc<Endpoint>,
    held: watch::Receiver<Held>,
    /// When requeued dead letters were last looked for.
    redeliveries_checked: Option<tokio::time::Instant>,
}

impl Walker {
    async fn run(mut self, mut wake: watch::Receiver<()>) {
        loop {
            if !holds(&self.held) {
                // Until the renewal loop says otherwise (or the lease it saw lapses).
                tokio::select! {
                    changed = self.held.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            wake.borrow_and_update();
            match self.step().await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::select! {
                        _ = wake.changed() => {}
                        _ = tokio::time::sleep(POLL) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoint.name, error = %e, "event delivery stalled");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Redeliveries, then one batch from the cursor. Whether there may be more.
    async fn step(&mut self) -> anyhow::Result<bool> {
        let name = self.endpoint.name.clone();
        // Requeued dead letters, looked for now and then: the list may be long.
        let look = self
            .redeliveries_checked
            .is_none_or(|at| at.elapsed() >= REDELIVERY_CHECK);
        let dead_letters = if look {
            self.redeliveries_checked = Some(tokio::time::Instant::now());
            self.meta.dead_letters(Some(&name)).await?
        } else {
            Vec::new()
        };
        for dead in dead_letters {
            if !dead.requeued {
                continue;
            }
            match self.deliver(&dead.event).await? {
                Outcome::Delivered => self.meta.remove_dead_letter(&name, dead.event.id).await?,
                Outcome::Dead => {}
                Outcome::Abandoned => return Ok(false),
            }
        }
        let cursor = self.meta.event_cursor(&name).await?.unwrap_or(0);
        let batch = self.meta.events_after(cursor, BATCH).await?;
        let latest = self.meta.latest_event_id().await?;
        crate::ops::metrics::global()
            .event_backlog
            .with_label_values(&[&name])
            .set(latest - cursor);
        let full = batch.len() == BATCH as usize;
        // Events the filters pass over move the cursor in one write, with the next
        // delivered event's or at the end (a crash in between looks at them again).
        let mut passed = None;
        let mut abandoned = false;
        for event in &batch {
            if !self.endpoint.wants(event) {
                passed = Some(event.id);
                continue;
            }
            match self.deliver(event).await? {
                Outcome::Delivered | Outcome::Dead => {
                    passed = None;
                    self.meta.set_event_cursor(&name, event.id).await?
                }
                Outcome::Abandoned => {
                    abandoned = true;
                    break;
                }
            }
        }
        if let Some(id) = passed {
            self.meta.set_event_cursor(&name, id).await?;
        }
        Ok(full && !abandoned)
    }

    /// Tries `event` until it is delivered or out of tries (then a dead letter).
    async fn deliver(&mut self, event: &StoredEvent) -> anyhow::Result<Outcome> {
        let metrics = crate::ops::metrics::global();
        let name = self.endpoint.name.as_str();
        let mut wait = Duration::from_millis(self.config.initial_backoff_ms.max(1));
        let longest = Duration::from_secs(self.config.max_backoff_secs.max(1));
        for attempt in 1..=self.config.max_attempts {
            if !holds(&self.held) {
                return Ok(Outcome::Abandoned);
            }
            let error = match self.endpoint.send(&self.config.source, event).await {
                Ok(Sent::Delivered) => {
                    metrics.events_delivered.with_label_values(&[name]).inc();
                    return Ok(Outcome::Delivered);
                }
                Ok(Sent::NotApplicable) => return Ok(Outcome::Delivered),
                Err(error) => error,
            };
            metrics
                .event_delivery_failures
                .with_label_values(&[name])
                .inc();
            tracing::warn!(endpoint = name, event = event.id, attempt, error = %error, "event delivery failed");
            if attempt == self.config.max_attempts {
                self.meta
                    .put_dead_letter(name, event.id, attempt, &error)
                    .await?;
                metrics.events_dead.with_label_values(&[name]).inc();
                tracing::warn!(target: "audit", event = "notification-dead-letter", endpoint = name, id = event.id, event_id = %event.event_id, error = %error, "event given up on after its tries");
                return Ok(Outcome::Dead);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(longest);
        }
        Ok(Outcome::Dead)
    }
}
