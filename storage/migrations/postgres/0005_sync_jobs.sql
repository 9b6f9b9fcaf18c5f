-- Sync jobs created through the admin API (`POST /v2/_signet/sync/jobs`), so they
-- survive restarts and every replica sees them. `config` is the job as JSON.
CREATE TABLE sync_jobs (
    name        TEXT PRIMARY KEY,
    config      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
