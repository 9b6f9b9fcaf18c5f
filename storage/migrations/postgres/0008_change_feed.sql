-- The change feed between replicas (see meta/postgres/change_feed.rs). A transaction
-- that changes a table some cached answer reads bumps a counter when it commits and
-- notifies channel `signet_changes`; every process listens, and polls the counters in
-- case a notification was missed.
--
-- The bump runs in a deferred trigger, so at commit, after every other lock the
-- transaction takes: holding a counter row never makes it wait, so it never deadlocks.
-- A transaction bumps once (a transaction-local setting says it did), in one of 16
-- rows chosen by its backend, so concurrent commits rarely queue on one row.
CREATE TABLE change_feed (
    slot     INTEGER PRIMARY KEY,
    changes  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO change_feed (slot) SELECT generate_series(0, 15);

CREATE FUNCTION signet_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('signet.changed', true) IS DISTINCT FROM 'yes' THEN
        PERFORM set_config('signet.changed', 'yes', true);
        UPDATE change_feed SET changes = changes + 1 WHERE slot = pg_backend_pid() % 16;
        PERFORM pg_notify('signet_changes', '');
    END IF;
    RETURN NULL;
END
$$;

-- Every table a cached answer reads (manifest lookups, tags and referrers lists, policy
-- evaluations); a later migration gives a new such table the same trigger (a test lists
-- the tables without it).
DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['repositories', 'manifests', 'tags', 'manifest_blobs',
                             'manifest_children', 'atomic_signatures', 'attachments',
                             'verdicts']
    LOOP
        EXECUTE format('CREATE CONSTRAINT TRIGGER changed AFTER INSERT OR UPDATE OR DELETE
                        ON %I DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                        EXECUTE FUNCTION signet_changed()', t);
    END LOOP;
END
$$;
