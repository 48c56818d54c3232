-- Signed events and orders: the signer's public key (nkeys U…, the key id) and the signature
-- (base64url) as they came, so that `shared-f2b-archiver verify` and every catch-up can check
-- them again. Key records (kind `key`) also keep the host, its key and since when it holds.
ALTER TABLE f2b_events ADD COLUMN key_id TEXT NULL;
ALTER TABLE f2b_events ADD COLUMN sig TEXT NULL;
ALTER TABLE f2b_control ADD COLUMN host TEXT NULL;
ALTER TABLE f2b_control ADD COLUMN host_key TEXT NULL;
ALTER TABLE f2b_control ADD COLUMN since_ms INTEGER NULL;
ALTER TABLE f2b_control ADD COLUMN key_id TEXT NULL;
ALTER TABLE f2b_control ADD COLUMN sig TEXT NULL;
CREATE INDEX ix_control_kind ON f2b_control (kind);
