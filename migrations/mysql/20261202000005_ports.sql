-- The jail's port(s) and protocol as Fail2Ban (or the original Shared Fail2Ban) named them:
-- information for people, never used to decide what is banned. NULL: not given.
ALTER TABLE f2b_events
    ADD COLUMN port     VARCHAR(32) NULL,
    ADD COLUMN protocol VARCHAR(16) NULL;
