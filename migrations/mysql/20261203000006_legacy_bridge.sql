-- The bridge to the original Shared Fail2Ban's table ([archiver.legacy]): each row of the old
-- table it read (direction 'in': published as its old host's event; 'skip': not an old host's,
-- or not a ban) or wrote (direction 'out': a new host's ban, written for the old hosts' pulls),
-- so that nothing is read back or written twice; and how far each direction has come.
CREATE TABLE f2b_legacy_rows (
    legacy_id  BIGINT      NOT NULL PRIMARY KEY,
    event_id   BINARY(16)  NULL,
    direction  VARCHAR(8)  NOT NULL,
    done_ms    BIGINT      NOT NULL,
    KEY ix_legacy_event (event_id)
);

CREATE TABLE f2b_legacy_cursors (
    name       VARCHAR(16) NOT NULL PRIMARY KEY,
    value      BIGINT      NOT NULL
);
