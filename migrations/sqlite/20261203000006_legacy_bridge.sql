-- The bridge to the original Shared Fail2Ban's table ([archiver.legacy]): each row of the old
-- table it read (direction 'in': published as its old host's event; 'skip': not an old host's,
-- or not a ban) or wrote (direction 'out': a new host's ban, written for the old hosts' pulls),
-- so that nothing is read back or written twice; and how far each direction has come.
CREATE TABLE f2b_legacy_rows (
    legacy_id  INTEGER NOT NULL PRIMARY KEY,
    event_id   BLOB    NULL,
    direction  TEXT    NOT NULL,
    done_ms    INTEGER NOT NULL
);
CREATE INDEX ix_legacy_event ON f2b_legacy_rows (event_id);

CREATE TABLE f2b_legacy_cursors (
    name       TEXT    NOT NULL PRIMARY KEY,
    value      INTEGER NOT NULL
);
