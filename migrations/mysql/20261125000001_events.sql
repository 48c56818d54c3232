-- Every ban and unban event, once (unique event id). Times are UTC milliseconds since the epoch.
-- `ip` is the 16-byte IPv6 form (IPv4 as ::ffff:a.b.c.d), so IPv4 and IPv6 sort and index alike.
CREATE TABLE f2b_events (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id      BINARY(16)      NOT NULL,
    origin        VARCHAR(253)    NOT NULL,
    jail          VARCHAR(64)     NOT NULL,
    ip            VARBINARY(16)   NOT NULL,
    ip_text       VARCHAR(45)     NOT NULL,
    action        VARCHAR(5)      NOT NULL,
    event_time_ms BIGINT          NOT NULL,
    bantime       BIGINT          NOT NULL,
    expires_ms    BIGINT          NULL,
    failures      BIGINT          NOT NULL,
    stream_seq    BIGINT NOT NULL,
    received_ms   BIGINT          NOT NULL,
    UNIQUE KEY uq_event_id (event_id),
    KEY ix_ip (ip, stream_seq),
    KEY ix_expires (expires_ms),
    KEY ix_jail_time (jail, event_time_ms),
    KEY ix_origin_time (origin, event_time_ms),
    KEY ix_time (event_time_ms),
    KEY ix_seq (stream_seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Messages on the stream that are not valid events: kept for inspection, never applied.
CREATE TABLE f2b_rejects (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    stream_seq  BIGINT NOT NULL,
    subject     VARCHAR(512)    NOT NULL,
    reason      VARCHAR(64)     NOT NULL,
    detail      VARCHAR(1024)   NOT NULL,
    payload     VARBINARY(4096) NOT NULL,
    received_ms BIGINT          NOT NULL,
    UNIQUE KEY uq_seq (stream_seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
