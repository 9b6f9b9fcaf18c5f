//! The change token on PostgreSQL: how one replica learns that another committed.
//!
//! A transaction that changes a table some cached answer reads bumps a counter in
//! `change_feed` as it commits and notifies channel `signet_changes` (a deferred
//! trigger, migration `0008_change_feed`), whoever the writer. Each process keeps a
//! generation number, and its token is that number. The number moves:
//! - when this process commits a write (read-after-write on one replica is exact);
//! - when a notification arrives (another replica committed; milliseconds later);
//! - when a read of the counters finds them moved: one runs every [`POLL_EVERY`], so a
//!   notification lost with a dropped connection or a restarted database is caught;
//! - when the listening connection comes back, for what it missed while down.
//!
//! The plain token ([`ChangeFeed::token`]) is missing (callers cache nothing) while the
//! listening connection is down, or while no read of the counters has succeeded for
//! [`STALE_BOUND`]. So a commit made at time `t` is never hidden from it after
//! `t + STALE_BOUND`.
//!
//! A request path needs more: a client that had a write acknowledged by one replica
//! and then asks another must see it, however soon it asks. The fresh token
//! ([`ChangeFeed::fresh_token`]) waits for a read of the counters that began after it was
//! asked, so it has seen every commit acknowledged before. One read answers every
//! question asked while the one before ran: under load the database sees one small
//! query per round trip, not one per request.
//!
//! The listener and the reader start with the first question for a token (a command
//! that never caches never starts them), and stop when the store is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnection, PgListener, PgPool};
use sqlx::Connection;
use tokio::sync::{watch, Notify};

use crate::meta::ChangeToken;

/// The channel the trigger notifies.
const CHANNEL: &str = "signet_changes";
/// How often the counters are read.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// The longest a commit can stay unseen: without a successful poll begun this recently,
/// there is no token.
pub const STALE_BOUND: Duration = Duration::from_secs(1);
/// Reconnection delays of the listener: doubling from the first to the second.
const RECONNECT: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// One process's view of the feed; shared by the engine's clones.
#[derive(Debug)]
pub(crate) struct ChangeFeed {
    state: Arc<FeedState>,
    pool: PgPool,
    /// Dropped with the feed, which ends its tasks.
    stop: watch::Sender<()>,
    started: OnceLock<()>,
    reads: Arc<Reads>,
}

/// The reads of the counters, in rounds.
#[derive(Debug)]
struct Reads {
    /// The number of the last round begun.
    begun: AtomicU64,
    /// The last round finished, and whether its read succeeded.
    finished: watch::Sender<(u64, bool)>,
    /// Asks the reader for a round now.
    wanted: Notify,
}

#[derive(Debug)]
struct FeedState {
    generation: AtomicU64,
    listening: AtomicBool,
    /// When the last successful poll began: milliseconds since `epoch`, plus one; 0 when
    /// none has.
    polled: AtomicU64,
    epoch: Instant,
}

impl ChangeFeed {
    pub(crate) fn new(pool: PgPool) -> Self {
        ChangeFeed {
            state: Arc::new(FeedState {
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                polled: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
            pool,
            stop: watch::channel(()).0,
            started: OnceLock::new(),
            reads: Arc::new(Reads {
                begun: AtomicU64::new(0),
                finished: watch::channel((0, false)).0,
                wanted: Notify::new(),
            }),
        }
    }

    /// A token that has seen every commit made before it was asked (see the module's
    /// doc); `None` when the counters cannot be read.
    pub(crate) async fn fresh_token(&self) -> Option<ChangeToken> {
        self.started.get_or_init(|| self.start());
        // A round that begins after this load begins after the question.
        let wanted = self.reads.begun.load(Ordering::SeqCst) + 1;
        let mut finished = self.reads.finished.subscribe();
        self.reads.wanted.notify_one();
        let answered = async {
            loop {
                let (round, read) = *finished.borrow_and_update();
                if round >= wanted {
                    return read.then(|| self.state.current());
                }
                finished.changed().await.ok()?;
            }
        };
        // A read bounded by STALE_BOUND is over well within twice that.
        tokio::time::timeout(STALE_BOUND * 2, answered)
            .await
            .ok()
            .flatten()
    }

    /// The current token; `None` until the feed runs, and whenever it cannot vouch for
    /// the bound (see the module's doc).
    pub(crate) fn token(&self) -> Option<ChangeToken> {
        self.started.get_or_init(|| self.start());
        let state = &self.state;
        if !state.listening.load(Ordering::SeqCst) {
            return None;
        }
        let polled = state.polled.load(Ordering::SeqCst);
        if polled == 0 || state.now() - polled > STALE_BOUND.as_millis() as u64 {
            return None;
        }
        Some(state.current())
    }

    /// This process committed a write: answers read before it are stale.
    pub(crate) fn committed(&self) {
        self.state.bump();
    }

    fn start(&self) {
        // Outside a runtime (never in the server) the feed does not run: no token.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(listen(
            self.state.clone(),
            self.pool.clone(),
            self.stop.subscribe(),
        ));
        runtime.spawn(read(
            self.state.clone(),
            self.reads.clone(),
            self.pool.clone(),
            self.stop.subscribe(),
        ));
    }
}

impl FeedState {
    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn current(&self) -> ChangeToken {
        ChangeToken::new(&self.generation.load(Ordering::SeqCst).to_le_bytes())
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// Keeps a connection listening, reconnecting with growing delays.
async fn listen(state: Arc<FeedState>, pool: PgPool, mut stop: watch::Receiver<()>) {
    let mut delay = RECONNECT.0;
    loop {
        let ended = tokio::select! {
            _ = stop.changed() => return,
            ended = listen_once(&state, &pool) => ended,
        };
        if state.listening.swap(false, Ordering::SeqCst) {
            delay = RECONNECT.0;
        }
        state.bump();
        tracing::warn!(error = %ended, "the change feed's listening connection ended; answers are not cached until it is back");
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RECONNECT.1);
    }
}

/// One listening connection, until it fails; what ended it.
async fn listen_once(state: &FeedState, pool: &PgPool) -> sqlx::Error {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => return e,
    };
    // The listener reconnects on its own when told to; here a lost connection ends it,
    // so that the gap is seen.
    listener.eager_reconnect(false);
    if let Err(e) = listener.listen(CHANNEL).await {
        return e;
    }
    // Commits made while nobody listened are before any answer read from now on.
    state.bump();
    state.listening.store(true, Ordering::SeqCst);
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => state.bump(),
            Ok(None) => return sqlx::Error::Protocol("connection lost".into()),
            Err(e) => return e,
        }
    }
}

/// Reads the counters every [`POLL_EVERY`], and whenever a fresh token is wanted; a
/// change moves the generation.
async fn read(
    state: Arc<FeedState>,
    reads: Arc<Reads>,
    pool: PgPool,
    mut stop: watch::Receiver<()>,
) {
    let mut seen: Option<i64> = None;
    // A connection of its own: one round trip a read, where a pooled connection would
    // add its health check's.
    let mut connection: Option<PgConnection> = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = reads.wanted.notified() => {}
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
        let round = reads.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let began = state.now();
        let total = async {
            if connection.is_none() {
                connection = Some(PgConnection::connect_with(&pool.connect_options()).await?);
            }
            let conn = connection.as_mut().expect("connected above");
            sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(SUM(changes), 0)::BIGINT FROM change_feed",
            )
            .fetch_one(conn)
            .await
        };
        let total = tokio::time::timeout(STALE_BOUND, total).await;
        if !matches!(total, Ok(Ok(_))) {
            // Whatever went wrong, the next read starts on a new connection.
            connection = None;
        }
        let read = match total {
            Ok(Ok(total)) => {
                if seen.is_some_and(|s| s != total) {
                    state.bump();
                }
                seen = Some(total);
                state.polled.store(began, Ordering::SeqCst);
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "reading the change counters failed");
                false
            }
            Err(_) => {
                tracing::debug!("reading the change counters timed out");
                false
            }
        };
        reads.finished.send_replace((round, read));
    }
}
