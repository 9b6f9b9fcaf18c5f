-- Blob GETs cache which blobs a repository holds (its size, under the change token), so
-- a link made or removed must move the counter too: a blob deleted on one replica is
-- then never served by another once the bound has passed.
CREATE CONSTRAINT TRIGGER changed AFTER INSERT OR UPDATE OR DELETE
    ON repository_blobs DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION signet_changed();
