-- Operators' control events (pardon, allow, revoke, ban), once each (unique event id). Never
-- touched by retention: a pardon or allow stays in force until it ends or is revoked, however
-- old it is. Times are UTC milliseconds since the epoch; `until_ms` NULL means no end of its own.
-- `net_lo`/`net_hi`: the net's first and last address in the 16-byte form of f2b_events.ip, so
-- that bans inside a pardoned or allowed net are found with a range comparison.
CREATE TABLE f2b_control (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id      BINARY(16)      NOT NULL,
    operator      VARCHAR(253)    NOT NULL,
    kind          VARCHAR(6)      NOT NULL,
    net_text      VARCHAR(49)     NULL,
    net_lo        VARBINARY(16)   NULL,
    net_hi        VARBINARY(16)   NULL,
    revokes       BINARY(16)      NULL,
    event_time_ms BIGINT          NOT NULL,
    until_ms      BIGINT          NULL,
    reason        VARCHAR(1024)   NOT NULL,
    stream_seq    BIGINT          NOT NULL,
    received_ms   BIGINT          NOT NULL,
    UNIQUE KEY uq_control_event_id (event_id),
    KEY ix_control_revokes (revokes),
    KEY ix_control_seq (stream_seq),
    KEY ix_control_net (net_lo, net_hi)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
