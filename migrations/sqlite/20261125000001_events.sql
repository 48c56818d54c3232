-- Every ban and unban event, once (unique event id). Times are UTC milliseconds since the epoch.
-- `ip` is the 16-byte IPv6 form (IPv4 as ::ffff:a.b.c.d), so IPv4 and IPv6 sort and index alike.
CREATE TABLE f2b_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      BLOB    NOT NULL UNIQUE,
    origin        TEXT    NOT NULL,
    jail          TEXT    NOT NULL,
    ip            BLOB    NOT NULL,
    ip_text       TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    event_time_ms INTEGER NOT NULL,
    bantime       INTEGER NOT NULL,
    expires_ms    INTEGER NULL,
    failures      INTEGER NOT NULL,
    stream_seq    INTEGER NOT NULL,
    received_ms   INTEGER NOT NULL
);
CREATE INDEX ix_ip ON f2b_events (ip, stream_seq);
CREATE INDEX ix_expires ON f2b_events (expires_ms);
CREATE INDEX ix_jail_time ON f2b_events (jail, event_time_ms);
CREATE INDEX ix_origin_time ON f2b_events (origin, event_time_ms);
CREATE INDEX ix_time ON f2b_events (event_time_ms);
CREATE INDEX ix_seq ON f2b_events (stream_seq);

-- Messages on the stream that are not valid events: kept for inspection, never applied.
CREATE TABLE f2b_rejects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_seq  INTEGER NOT NULL UNIQUE,
    subject     TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    received_ms INTEGER NOT NULL
);
