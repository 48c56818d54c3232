-- Intake ([[archiver.intake]]): an intel order's listing (the MISP event and attribute it came
-- from, its tags joined by tabs) beside the order; what each source lists now, as published
-- (the order that bans each net and until when); and each source's last fetches, for the page.
ALTER TABLE f2b_control ADD COLUMN listing_event TEXT NULL;
ALTER TABLE f2b_control ADD COLUMN listing_attribute TEXT NULL;
ALTER TABLE f2b_control ADD COLUMN listing_tags TEXT NULL;
CREATE TABLE f2b_intake_entries (
    source            TEXT    NOT NULL,
    net_text          TEXT    NOT NULL,
    order_id          BLOB    NOT NULL,
    until_ms          INTEGER NOT NULL,
    listing_event     TEXT    NULL,
    listing_attribute TEXT    NULL,
    listing_tags      TEXT    NULL,
    PRIMARY KEY (source, net_text)
);
CREATE TABLE f2b_intake_sources (
    source     TEXT    NOT NULL PRIMARY KEY,
    fetched_ms INTEGER NULL,
    ok_ms      INTEGER NULL,
    entries    INTEGER NOT NULL,
    fetches    INTEGER NOT NULL,
    failures   INTEGER NOT NULL,
    last_error TEXT    NULL
);
