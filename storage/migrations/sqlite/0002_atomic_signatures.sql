-- "Simple signing" (atomic, GPG) signatures stored through the signatures extension.
-- They live and die with their manifest.
CREATE TABLE atomic_signatures (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id   INTEGER NOT NULL,
    manifest_digest TEXT NOT NULL,
    signature_id    TEXT NOT NULL,
    content         BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    UNIQUE (repository_id, manifest_digest, signature_id),
    FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
