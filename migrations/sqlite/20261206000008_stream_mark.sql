-- The highest last sequence of the stream the archivers have seen (a delivered message's
-- sequence plus what was pending after it; raised after each batch). A stream whose last
-- sequence is below it went back (a power cut of a NATS host that had not synced its tail), and
-- the archiver seals it (archiver/src/rewind.rs).
CREATE TABLE f2b_stream_mark (
    id       INTEGER NOT NULL PRIMARY KEY,
    last_seq INTEGER NOT NULL
);
INSERT INTO f2b_stream_mark (id, last_seq) VALUES (1, 0);
