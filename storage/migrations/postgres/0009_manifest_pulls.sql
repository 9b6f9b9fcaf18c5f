-- When each manifest was last pulled (a manifest GET), written in batches by each
-- process: what retention's "pulled within" reads. No cached answer reads it, so it
-- does not feed the change counter (a batch of pulls must not empty every cache).
CREATE TABLE manifest_pulls (
    repository_id BIGINT NOT NULL,
    digest        TEXT COLLATE "C" NOT NULL,
    pulled_at     BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest),
    FOREIGN KEY (repository_id, digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
