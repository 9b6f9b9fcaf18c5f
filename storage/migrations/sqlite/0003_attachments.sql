-- The attachment index: every way an attachment reached the registry, in one table.
-- Derived from manifests, tags and atomic signatures, and written in the same
-- transaction as the change that makes or unmakes it.
CREATE TABLE attachments (
    repository_id INTEGER NOT NULL,
    subject       TEXT NOT NULL,
    -- The attachment manifest's digest (an atomic signature: the digest of its bytes).
    attachment    TEXT NOT NULL,
    kind          TEXT NOT NULL,  -- signature | attestation | sbom | other
    source        TEXT NOT NULL,  -- subject | tag | fallback-tag | extension
    format        TEXT NOT NULL,  -- cosign | sigstore-bundle | notation | atomic | oci
    artifact_type TEXT,
    -- The tag that made it an attachment (sources tag and fallback-tag).
    tag           TEXT,
    -- The manifest whose presence keeps this row: the attachment itself, the fallback
    -- index, or (extension) the subject.
    carrier       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, subject, attachment, source),
    FOREIGN KEY (repository_id, carrier) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX attachments_attachment ON attachments(repository_id, attachment);
CREATE INDEX attachments_tag ON attachments(repository_id, tag) WHERE tag IS NOT NULL;
CREATE INDEX attachments_carrier ON attachments(repository_id, carrier);
