-- Follow-up tasks left by a call (a message for the business, a callback to make).
-- Keep in step with ../postgres/0002_tasks.sql; only the id column type differs.
-- Keyed by call_sid like turns (no foreign key: the call path never fails a write because the
-- call row has not landed yet). `seq` is the task's order within its call, so a retried write
-- of the same task is stored once.
CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,
    call_sid       TEXT    NOT NULL,
    seq            BIGINT  NOT NULL,
    contact_phone  TEXT,
    kind           TEXT    NOT NULL CHECK (kind IN ('message', 'callback')),
    text           TEXT    NOT NULL,
    preferred_time TEXT,
    status         TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done')),
    created_at_ms  BIGINT  NOT NULL,
    UNIQUE (call_sid, kind, seq)
);
CREATE INDEX tasks_by_status ON tasks (status, id);
