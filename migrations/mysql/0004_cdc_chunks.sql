-- Content-defined chunking (issue 18), as the sqlite migration of the same name.

CREATE TABLE chunks (
  hash         VARCHAR(64) NOT NULL PRIMARY KEY,
  size         BIGINT      NOT NULL,
  nar_bytes    BIGINT      NOT NULL,
  stored       TINYINT     NOT NULL DEFAULT 0,
  last_used_at BIGINT      NOT NULL,
  doomed_at    BIGINT,
  INDEX chunks_last_used_at (last_used_at),
  INDEX chunks_doomed_at (doomed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE nar_chunks (
  nar_key    VARCHAR(255) NOT NULL,
  position   INT          NOT NULL,
  chunk_hash VARCHAR(64)  NOT NULL,
  PRIMARY KEY (nar_key, position),
  INDEX nar_chunks_chunk_hash (chunk_hash),
  CONSTRAINT nar_chunks_nar FOREIGN KEY (nar_key) REFERENCES nars (`key`) ON DELETE CASCADE,
  CONSTRAINT nar_chunks_chunk FOREIGN KEY (chunk_hash) REFERENCES chunks (hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

ALTER TABLE nars ADD COLUMN chunked TINYINT NOT NULL DEFAULT 0;
