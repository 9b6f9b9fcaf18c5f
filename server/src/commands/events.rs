//! `signet events`: the notifications outbox, beside a running server or not. `list`
//! shows recent events, `status` where each configured endpoint stands, `dead` the
//! events endpoints gave up on, and `redeliver` asks the server to try those again
//! (the lease holder sends them before its next event).

use std::fmt::Write;

use serde_json::json;
use signet_storage::events::{DeadLetter, StoredEvent};

use crate::notify::envelope::rfc3339 as when;
use crate::state::AppState;

fn event_json(e: &StoredEvent) -> serde_json::Value {
    json!({
        "sequence": e.id,
        "id": e.event_id,
        "type": e.event_type,
        "time": when(e.created_at),
        "data": e.data,
    })
}

fn event_line(out: &mut String, e: &StoredEvent) {
    let d = &e.data;
    let what = d
        .tag
        .as_deref()
        .map(|t| format!(":{t}"))
        .or_else(|| d.digest.as_deref().map(|x| format!("@{x}")))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{:>8}  {}  {:<19} {}{}{}",
        e.id,
        when(e.created_at),
        e.event_type.as_str(),
        d.repository,
        what,
        d.actor
            .as_deref()
            .map(|a| format!("  by {a}"))
            .unwrap_or_default()
    );
}

/// The most recent `limit` events after `after` (the newest when `after` is absent).
pub async fn list(
    state: &AppState,
    after: Option<i64>,
    limit: u32,
    json: bool,
) -> anyhow::Result<String> {
    let limit = limit.clamp(1, 10_000);
    let after = match after {
        Some(after) => after,
        None => (state.meta.latest_event_id().await? - limit as i64).max(0),
    };
    let events = state.meta.events_after(after, limit).await?;
    if json {
        let list: Vec<_> = events.iter().map(event_json).collect();
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    let mut out = String::new();
    if events.is_empty() {
        out.push_str("no events\n");
    }
    for e in &events {
        event_line(&mut out, e);
    }
    Ok(out)
}

/// Each configured endpoint: its cursor, how many events wait after it, its dead letters.
pub async fn status(state: &AppState, json: bool) -> anyhow::Result<String> {
    let latest = state.meta.latest_event_id().await?;
    let dead = state.meta.dead_letters(None).await?;
    let mut rows = Vec::new();
    for e in &state.config.notifications.endpoints {
        let cursor = state.meta.event_cursor(&e.name).await?;
        let dead_here = dead.iter().filter(|d| d.endpoint == e.name).count();
        rows.push(json!({
            "endpoint": e.name,
            "url": e.shown_url(),
            "cursor": cursor,
            "backlog": cursor.map(|c| latest - c),
            "deadLetters": dead_here,
        }));
    }
    if json {
        return Ok(serde_json::to_string_pretty(&json!({
            "latest": latest,
            "endpoints": rows,
        }))? + "\n");
    }
    let mut out = format!("latest event: {latest}\n");
    if rows.is_empty() {
        out.push_str("no [[notifications.endpoints]] configured\n");
    }
    for r in &rows {
        let _ = writeln!(
            out,
            "{}  {}  cursor {}  backlog {}  dead letters {}",
            r["endpoint"].as_str().unwrap_or_default(),
            r["url"].as_str().unwrap_or_default(),
            r["cursor"],
            r["backlog"],
            r["deadLetters"],
        );
    }
    Ok(out)
}

fn dead_json(d: &DeadLetter) -> serde_json::Value {
    json!({
        "endpoint": d.endpoint,
        "attempts": d.attempts,
        "error": d.error,
        "failedAt": when(d.failed_at),
        "requeued": d.requeued,
        "event": event_json(&d.event),
    })
}

/// The dead letters of `endpoint` (or every endpoint).
pub async fn dead(state: &AppState, endpoint: Option<&str>, json: bool) -> anyhow::Result<String> {
    let dead = state.meta.dead_letters(endpoint).await?;
    if json {
        let list: Vec<_> = dead.iter().map(dead_json).collect();
        return Ok(serde_json::to_string_pretty(&list)? + "\n");
    }
    let mut out = String::new();
    if dead.is_empty() {
        out.push_str("no dead letters\n");
    }
    for d in &dead {
        let _ = write!(
            out,
            "{}  {} tries, last {}{}: {}\n  ",
            d.endpoint,
            d.attempts,
            when(d.failed_at),
            if d.requeued {
                " (redelivery asked)"
            } else {
                ""
            },
            d.error
        );
        event_line(&mut out, &d.event);
    }
    Ok(out)
}

/// Marks dead letters for redelivery: of `endpoint` (or all), only `ids` when given.
pub async fn redeliver(
    state: &AppState,
    endpoint: Option<&str>,
    ids: &[i64],
) -> anyhow::Result<String> {
    if let Some(name) = endpoint {
        if !state
            .config
            .notifications
            .endpoints
            .iter()
            .any(|e| e.name == name)
        {
            anyhow::bail!("no endpoint named {name:?} in [[notifications.endpoints]]");
        }
    }
    let n = state.meta.requeue_dead_letters(endpoint, ids).await?;
    Ok(format!(
        "{n} dead letters will be delivered again by the server holding the notifications lease\n"
    ))
}
