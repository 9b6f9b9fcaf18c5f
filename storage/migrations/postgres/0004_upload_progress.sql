-- Where an upload session's bytes are staged (one appended file, or an S3 multipart
-- upload with its part list) and the running hash states over them, as JSON. Written
-- in the same UPDATE as `committed_size`, so the two never disagree. NULL for sessions
-- opened before: their parts are read and hashed again at the end.
ALTER TABLE uploads ADD COLUMN progress TEXT;
