-- Named leases held by one process at a time across replicas (a scheduled sync job's
-- run: `sync:<job>`). Rows expire; a holder renews its own.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
