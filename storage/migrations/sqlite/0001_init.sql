-- Signet metadata, SQLite flavour. Timestamps are unix seconds.

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- Blobs known to the blob store (the bytes live there, under their address).
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Which blobs a repository may serve: pushed, mounted, or referenced there.
CREATE TABLE repository_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
) WITHOUT ROWID;
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);

CREATE TABLE manifests (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content       BLOB NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
-- The subject → referrer edge.
CREATE INDEX manifests_subject ON manifests(repository_id, subject) WHERE subject IS NOT NULL;

CREATE TABLE tags (
    repository_id INTEGER NOT NULL,
    name          TEXT NOT NULL,
    digest        TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX tags_digest ON tags(repository_id, digest);

-- Edges manifest → config and layer blobs.
CREATE TABLE manifest_blobs (
    repository_id   INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    blob_digest     TEXT NOT NULL,
    PRIMARY KEY (repository_id, manifest_digest, blob_digest),
    FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX manifest_blobs_blob ON manifest_blobs(blob_digest);

-- Edges index → child manifest.
CREATE TABLE manifest_children (
    repository_id INTEGER NOT NULL,
    index_digest  TEXT NOT NULL,
    child_digest  TEXT NOT NULL,
    PRIMARY KEY (repository_id, index_digest, child_digest),
    FOREIGN KEY (repository_id, index_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX manifest_children_child ON manifest_children(repository_id, child_digest);

-- Upload sessions: the committed size and the staged parts (JSON), so a session
-- survives a restart and can be continued by another replica.
CREATE TABLE uploads (
    id             TEXT PRIMARY KEY,
    repository     TEXT NOT NULL,
    committed_size INTEGER NOT NULL,
    parts          TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX uploads_updated ON uploads(updated_at);
