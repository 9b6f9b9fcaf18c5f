-- The notifications outbox. An event is appended in the transaction of the change it
-- describes; its id comes from the one counter row, whose row lock the transaction
-- holds until it commits, so ids follow commit order (a sequence's would not). No cached
-- answer reads these tables, so they do not feed the change counter.
CREATE TABLE event_counter (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    last_id BIGINT NOT NULL
);
INSERT INTO event_counter (id, last_id) VALUES (1, 0);

CREATE TABLE events (
    id         BIGINT PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    repository TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The last event each endpoint has finished with (delivered, filtered out or given up).
CREATE TABLE event_cursors (
    endpoint TEXT PRIMARY KEY,
    last_id  BIGINT NOT NULL
);

-- Events an endpoint gave up on; `requeued` asks for one more delivery.
CREATE TABLE event_dead_letters (
    endpoint  TEXT NOT NULL,
    event     BIGINT NOT NULL,
    attempts  BIGINT NOT NULL,
    error     TEXT NOT NULL,
    failed_at BIGINT NOT NULL,
    requeued  BIGINT NOT NULL,
    PRIMARY KEY (endpoint, event)
);
