-- Content-defined chunking (issue 18). Times are Unix milliseconds.

-- One row per chunk in blob storage (key chunk/<hash>), shared by every NAR that holds it.
-- A chunk is reserved (row first, `stored` 0), then written, then marked stored. No reference
-- count: the references are the nar_chunks rows, so a crash cannot leave a wrong count. An
-- unreferenced chunk untouched for a grace period is doomed (`doomed_at`), its blob deleted,
-- then its row; a commit never relies on a doomed chunk (see stored-nars.ts).
CREATE TABLE chunks (
  hash         TEXT    NOT NULL PRIMARY KEY,
  size         INTEGER NOT NULL,
  nar_bytes    INTEGER NOT NULL,
  stored       INTEGER NOT NULL DEFAULT 0,
  last_used_at INTEGER NOT NULL,
  doomed_at    INTEGER
);
CREATE INDEX chunks_last_used_at ON chunks (last_used_at);
CREATE INDEX chunks_doomed_at ON chunks (doomed_at);

-- A chunked NAR is its chunks in order. The NAR record goes first and takes these with it;
-- a chunk cannot go while a NAR holds it.
CREATE TABLE nar_chunks (
  nar_key    TEXT    NOT NULL REFERENCES nars (key) ON DELETE CASCADE,
  position   INTEGER NOT NULL,
  chunk_hash TEXT    NOT NULL REFERENCES chunks (hash),
  PRIMARY KEY (nar_key, position)
) WITHOUT ROWID;
CREATE INDEX nar_chunks_chunk_hash ON nar_chunks (chunk_hash);

-- A chunked NAR's record has size 0 (its bytes are its chunks', counted once each in
-- stored_bytes) and chunked 1.
ALTER TABLE nars ADD COLUMN chunked INTEGER NOT NULL DEFAULT 0;
