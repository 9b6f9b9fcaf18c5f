-- Garbage collection (storage/src/gc.rs).

-- Tombstones: a blob whose row GC deleted and whose bytes it is removing. While one
-- exists, nothing may link or pin the digest (an upload waits, a mount falls back to an
-- upload), so bytes being deleted are never linked again.
CREATE TABLE blob_deletions (
    digest      TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Pins: an upload that verified a blob and is moving its bytes to their address holds
-- a pin from before the move until after the link; GC never deletes a pinned blob.
-- A pin left by a crash is ignored (and removed) by GC once it is an hour old.
CREATE TABLE blob_pins (
    digest      TEXT NOT NULL,
    token       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (digest, token)
) WITHOUT ROWID;

-- At most one collector at a time, across processes (`signet gc` beside the server).
CREATE TABLE gc_lease (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    holder      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
