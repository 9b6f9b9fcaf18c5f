-- Verification verdicts, computed off the request path and kept per attachment: one
-- row per (repository, subject, attachment), as the attachment index names them (an
-- atomic signature by the digest of its bytes). `fingerprint` identifies the trust
-- configuration the verdict was reached under: a row with another one is stale and
-- gets recomputed. `root` is the trust root the verdict names ('' when none does).
CREATE TABLE verdicts (
    repository_id  INTEGER NOT NULL,
    subject        TEXT NOT NULL,
    attachment     TEXT NOT NULL,
    root           TEXT NOT NULL,
    verdict        TEXT NOT NULL,  -- valid | invalid | no-trust-root | unsupported
    reason         TEXT,
    predicate_type TEXT,
    signer         TEXT,
    fingerprint    TEXT NOT NULL,
    checked_at     INTEGER NOT NULL,
    PRIMARY KEY (repository_id, subject, attachment)
) WITHOUT ROWID;
CREATE INDEX verdicts_fingerprint ON verdicts(fingerprint);

-- A verdict goes with the last attachment row naming it, in the same transaction,
-- whatever removed that row (manifest delete and its cascade, GC, a tag move, an
-- atomic signature delete).
CREATE TRIGGER verdicts_follow_attachments AFTER DELETE ON attachments
WHEN NOT EXISTS (
    SELECT 1 FROM attachments
     WHERE repository_id = OLD.repository_id
       AND subject = OLD.subject
       AND attachment = OLD.attachment
)
BEGIN
    DELETE FROM verdicts
     WHERE repository_id = OLD.repository_id
       AND subject = OLD.subject
       AND attachment = OLD.attachment;
END;
