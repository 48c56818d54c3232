-- Signed events and orders: the signer's public key (nkeys U…, the key id) and the signature
-- (base64url) as they came, so that `shared-f2b-archiver verify` and every catch-up can check
-- them again. Key records (kind `key`) also keep the host, its key and since when it holds.
ALTER TABLE f2b_events
    ADD COLUMN key_id VARCHAR(56) NULL,
    ADD COLUMN sig    VARCHAR(88) NULL;
ALTER TABLE f2b_control
    ADD COLUMN host     VARCHAR(253) NULL,
    ADD COLUMN host_key VARCHAR(56)  NULL,
    ADD COLUMN since_ms BIGINT       NULL,
    ADD COLUMN key_id   VARCHAR(56)  NULL,
    ADD COLUMN sig      VARCHAR(88)  NULL,
    ADD KEY ix_control_kind (kind);
