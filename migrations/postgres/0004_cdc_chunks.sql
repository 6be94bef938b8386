-- Content-defined chunking (issue 18), as the sqlite migration of the same name.

CREATE TABLE chunks (
  hash         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  size         BIGINT   NOT NULL,
  nar_bytes    BIGINT   NOT NULL,
  stored       SMALLINT NOT NULL DEFAULT 0,
  last_used_at BIGINT   NOT NULL,
  doomed_at    BIGINT
);
CREATE INDEX chunks_last_used_at ON chunks (last_used_at);
CREATE INDEX chunks_doomed_at ON chunks (doomed_at);

CREATE TABLE nar_chunks (
  nar_key    TEXT COLLATE "C" NOT NULL REFERENCES nars (key) ON DELETE CASCADE,
  position   INTEGER NOT NULL,
  chunk_hash TEXT COLLATE "C" NOT NULL REFERENCES chunks (hash),
  PRIMARY KEY (nar_key, position)
);
CREATE INDEX nar_chunks_chunk_hash ON nar_chunks (chunk_hash);

ALTER TABLE nars ADD COLUMN chunked SMALLINT NOT NULL DEFAULT 0;
