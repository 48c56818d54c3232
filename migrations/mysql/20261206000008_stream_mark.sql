-- The stream mark: the highest sequence of the stream the archivers have seen and the latest
-- time the server stored a message they saw (its clock, ms since the epoch); raised with each
-- batch and from the stream's state. A message at or below the mark's sequence stored after
-- its time was numbered again: the stream went back (a power cut of a NATS host that had not
-- synced its tail), and the archiver seals it (archiver/src/rewind.rs).
CREATE TABLE f2b_stream_mark (
    id       INTEGER NOT NULL PRIMARY KEY,
    last_seq BIGINT  NOT NULL,
    last_ms  BIGINT  NOT NULL
) ENGINE = InnoDB;
INSERT INTO f2b_stream_mark (id, last_seq, last_ms) VALUES (1, 0, 0);
-- Each seal: the stream kept what it had up to `cut_seq`; what it numbered again after that is
-- archived from `base_seq` on, and its numbering went on at `resumed_seq`. A host whose cursor
-- lies between `cut_seq` and `base_seq` catches up from `cut_seq` (its cursor may have passed
-- sequences the stream numbered again).
CREATE TABLE f2b_stream_seals (
    cut_seq     BIGINT NOT NULL,
    base_seq    BIGINT NOT NULL,
    resumed_seq BIGINT NOT NULL,
    sealed_ms   BIGINT NOT NULL,
    PRIMARY KEY (cut_seq, resumed_seq)
) ENGINE = InnoDB;
