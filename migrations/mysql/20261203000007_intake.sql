-- Intake ([[archiver.intake]]): an intel order's listing (the MISP event and attribute it came
-- from, its tags joined by tabs) beside the order; what each source lists now, as published
-- (the order that bans each net and until when); and each source's last fetches, for the page.
ALTER TABLE f2b_control
    ADD COLUMN listing_event     CHAR(36) NULL,
    ADD COLUMN listing_attribute CHAR(36) NULL,
    ADD COLUMN listing_tags      TEXT     NULL;
CREATE TABLE f2b_intake_entries (
    source            VARCHAR(64) NOT NULL,
    net_text          VARCHAR(49) NOT NULL,
    order_id          BINARY(16)  NOT NULL,
    until_ms          BIGINT      NOT NULL,
    listing_event     CHAR(36)    NULL,
    listing_attribute CHAR(36)    NULL,
    listing_tags      TEXT        NULL,
    PRIMARY KEY (source, net_text)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE f2b_intake_sources (
    source     VARCHAR(64)   NOT NULL PRIMARY KEY,
    fetched_ms BIGINT        NULL,
    ok_ms      BIGINT        NULL,
    entries    BIGINT        NOT NULL,
    fetches    BIGINT        NOT NULL,
    failures   BIGINT        NOT NULL,
    last_error VARCHAR(1024) NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
