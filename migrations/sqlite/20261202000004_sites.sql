-- Federation: the site an event or order was relayed from (NULL: this site's own), and how far
-- the relay has read each remote site's stream, so a restart resumes there.
ALTER TABLE f2b_events ADD COLUMN site TEXT NULL;
ALTER TABLE f2b_control ADD COLUMN site TEXT NULL;
CREATE TABLE f2b_site_cursors (
    site       TEXT    NOT NULL PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
