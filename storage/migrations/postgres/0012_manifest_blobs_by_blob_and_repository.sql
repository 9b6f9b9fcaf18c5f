-- Whether a manifest of one repository references a blob is answered by this index
-- alone (GC asks it of every link it examines); it still serves lookups by blob.
-- With the blob alone, the planner preferred the primary key's repository prefix and
-- read every reference of the repository for each link. (SQLite's index already holds
-- the repository: the table is WITHOUT ROWID, so its indexes end with the primary key.)
DROP INDEX manifest_blobs_blob;
CREATE INDEX manifest_blobs_blob ON manifest_blobs(blob_digest, repository_id);
