-- crmd CRM schema, SQLite flavour. Keep in step with ../postgres/0001_init.sql:
-- same tables, same columns, same constraints; only the id column type differs.
-- Every timestamp is BIGINT unix milliseconds (UTC) so both backends store the same numbers.

CREATE TABLE contacts (
    id              INTEGER PRIMARY KEY,
    phone_e164      TEXT    NOT NULL UNIQUE,
    display_name    TEXT,
    created_at_ms   BIGINT  NOT NULL,
    last_seen_at_ms BIGINT  NOT NULL
);

CREATE TABLE calls (
    id              INTEGER PRIMARY KEY,
    call_sid        TEXT    NOT NULL UNIQUE,
    account_sid     TEXT,
    contact_id      BIGINT  REFERENCES contacts (id),
    from_number     TEXT,
    to_number       TEXT,
    direction       TEXT    NOT NULL,
    status          TEXT,
    caller_name     TEXT,
    stream_sid      TEXT,
    started_at_ms   BIGINT  NOT NULL,
    streaming_at_ms BIGINT,
    ended_at_ms     BIGINT,
    duration_ms     BIGINT
);
CREATE INDEX calls_by_contact ON calls (contact_id, id);
CREATE INDEX calls_by_started ON calls (started_at_ms);

-- Stream lifecycle events (status callbacks and the WebSocket's own start/stop).
-- Keyed by call_sid, not by a foreign key: the call path must never fail a write because the
-- incoming-call webhook row has not landed yet.
CREATE TABLE call_stream_events (
    id          INTEGER PRIMARY KEY,
    call_sid    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    stream_sid  TEXT,
    error       TEXT,
    at_ms       BIGINT  NOT NULL,
    UNIQUE (call_sid, kind, at_ms)
);

CREATE TABLE turns (
    id            INTEGER PRIMARY KEY,
    call_sid      TEXT    NOT NULL,
    seq           BIGINT  NOT NULL,
    speaker       TEXT    NOT NULL CHECK (speaker IN ('caller', 'agent')),
    text          TEXT    NOT NULL,
    heard_text    TEXT,
    interrupted   BIGINT  NOT NULL DEFAULT 0,
    started_at_ms BIGINT  NOT NULL,
    ended_at_ms   BIGINT,
    latency_json  TEXT,
    UNIQUE (call_sid, seq)
);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    contact_id      BIGINT  NOT NULL REFERENCES contacts (id),
    channel         TEXT    NOT NULL,
    direction       TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    provider        TEXT    NOT NULL,
    provider_sid    TEXT    UNIQUE,
    idempotency_key TEXT    UNIQUE,
    from_address    TEXT    NOT NULL,
    to_address      TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    media_json      TEXT    NOT NULL DEFAULT '[]',
    status          TEXT    NOT NULL,
    status_rank     BIGINT  NOT NULL,
    error_code      TEXT,
    error_message   TEXT,
    created_at_ms   BIGINT  NOT NULL,
    updated_at_ms   BIGINT  NOT NULL
);
CREATE INDEX messages_by_contact ON messages (contact_id, id);

CREATE TABLE recordings (
    id            INTEGER PRIMARY KEY,
    call_sid      TEXT    NOT NULL UNIQUE,
    path          TEXT    NOT NULL,
    codec         TEXT    NOT NULL,
    duration_ms   BIGINT,
    size_bytes    BIGINT,
    created_at_ms BIGINT  NOT NULL
);
