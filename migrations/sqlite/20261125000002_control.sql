-- Operators' control events (pardon, allow, revoke, ban), once each (unique event id). Never
-- touched by retention: a pardon or allow stays in force until it ends or is revoked, however
-- old it is. Times are UTC milliseconds since the epoch; `until_ms` NULL means no end of its own.
-- `net_lo`/`net_hi`: the net's first and last address in the 16-byte form of f2b_events.ip, so
-- that bans inside a pardoned or allowed net are found with a range comparison.
CREATE TABLE f2b_control (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      BLOB    NOT NULL UNIQUE,
    operator      TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    net_text      TEXT    NULL,
    net_lo        BLOB    NULL,
    net_hi        BLOB    NULL,
    revokes       BLOB    NULL,
    event_time_ms INTEGER NOT NULL,
    until_ms      INTEGER NULL,
    reason        TEXT    NOT NULL,
    stream_seq    INTEGER NOT NULL,
    received_ms   INTEGER NOT NULL
);
CREATE INDEX ix_control_revokes ON f2b_control (revokes);
CREATE INDEX ix_control_seq ON f2b_control (stream_seq);
CREATE INDEX ix_control_net ON f2b_control (net_lo, net_hi);
