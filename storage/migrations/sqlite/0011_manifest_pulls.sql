-- When each manifest was last pulled (a manifest GET), written in batches by each
-- process: what retention's "pulled within" reads. No cached answer reads it.
CREATE TABLE manifest_pulls (
    repository_id INTEGER NOT NULL,
    digest        TEXT NOT NULL,
    pulled_at     INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest),
    FOREIGN KEY (repository_id, digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
