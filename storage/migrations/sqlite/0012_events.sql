-- The notifications outbox. An event is appended in the transaction of the change it
-- describes; its id comes from the one counter row, whose lock the transaction holds
-- until it commits, so ids follow commit order.
CREATE TABLE event_counter (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    last_id INTEGER NOT NULL
);
INSERT INTO event_counter (id, last_id) VALUES (1, 0);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    repository TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- The last event each endpoint has finished with (delivered, filtered out or given up).
CREATE TABLE event_cursors (
    endpoint TEXT PRIMARY KEY,
    last_id  INTEGER NOT NULL
);

-- Events an endpoint gave up on; `requeued` asks for one more delivery.
CREATE TABLE event_dead_letters (
    endpoint  TEXT NOT NULL,
    event     INTEGER NOT NULL,
    attempts  INTEGER NOT NULL,
    error     TEXT NOT NULL,
    failed_at INTEGER NOT NULL,
    requeued  INTEGER NOT NULL,
    PRIMARY KEY (endpoint, event)
);
