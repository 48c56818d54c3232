-- Federation: the site an event or order was relayed from (NULL: this site's own), and how far
-- the relay has read each remote site's stream, so a restart resumes there.
ALTER TABLE f2b_events ADD COLUMN site VARCHAR(32) NULL;
ALTER TABLE f2b_control ADD COLUMN site VARCHAR(32) NULL;
CREATE TABLE f2b_site_cursors (
    site       VARCHAR(32) NOT NULL PRIMARY KEY,
    seq        BIGINT      NOT NULL,
    updated_ms BIGINT      NOT NULL
);
