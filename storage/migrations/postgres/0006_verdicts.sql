-- Verification verdicts, computed off the request path and kept per attachment: one
-- row per (repository, subject, attachment), as the attachment index names them (an
-- atomic signature by the digest of its bytes). `fingerprint` identifies the trust
-- configuration the verdict was reached under: a row with another one is stale and
-- gets recomputed. `root` is the trust root the verdict names ('' when none does).
CREATE TABLE verdicts (
    repository_id  BIGINT NOT NULL,
    subject        TEXT COLLATE "C" NOT NULL,
    attachment     TEXT COLLATE "C" NOT NULL,
    root           TEXT NOT NULL,
    verdict        TEXT NOT NULL,  -- valid | invalid | no-trust-root | unsupported
    reason         TEXT,
    predicate_type TEXT,
    signer         TEXT,
    fingerprint    TEXT COLLATE "C" NOT NULL,
    checked_at     BIGINT NOT NULL,
    PRIMARY KEY (repository_id, subject, attachment)
);
CREATE INDEX verdicts_fingerprint ON verdicts(fingerprint);

-- A verdict goes with the last attachment row naming it, in the same transaction,
-- whatever removed that row (manifest delete and its cascade, GC, a tag move, an
-- atomic signature delete).
CREATE FUNCTION verdicts_follow_attachments() RETURNS trigger AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM attachments
         WHERE repository_id = OLD.repository_id
           AND subject = OLD.subject
           AND attachment = OLD.attachment
    ) THEN
        DELETE FROM verdicts
         WHERE repository_id = OLD.repository_id
           AND subject = OLD.subject
           AND attachment = OLD.attachment;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER verdicts_follow_attachments AFTER DELETE ON attachments
    FOR EACH ROW EXECUTE FUNCTION verdicts_follow_attachments();
