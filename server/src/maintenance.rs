//! Work that runs beside the requests: closing abandoned upload sessions.

use std::sync::Arc;
use std::time::Duration;

use crate::state::AppState;

pub fn spawn(state: Arc<AppState>) {
    let interval = Duration::from_secs(state.config.uploads.expiry_interval_secs.max(1));
    actix_web::rt::spawn(async move {
        let mut ticker = actix_web::rt::time::interval(interval);
        loop {
            ticker.tick().await;
            let max_idle = state.config.uploads.expire_after_secs as i64;
            match state.uploads.expire(max_idle).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(sessions = n, "expired idle upload sessions"),
                Err(e) => tracing::warn!(error = %e, "upload expiry failed"),
            }
        }
    });
}
