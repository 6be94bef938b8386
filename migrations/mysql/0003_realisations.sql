-- Realisations of content-addressed derivations (issue 16), as the sqlite migration of the
-- same name: `id` is `sha256:<hex>!<output>` or `<drv>^<output>`, `text` the document served.
-- An id is at most 244 (drv base name) + 1 + 211 (output name) characters: VARCHAR(512),
-- 2,048 bytes in utf8mb4, within InnoDB's 3,072-byte index key.
CREATE TABLE realisations (
  id         VARCHAR(512) NOT NULL PRIMARY KEY,
  out_path   TEXT         NOT NULL,
  -- the output's 32-char hash part: removing that path's narinfo removes its realisations
  out_hash   VARCHAR(32)  NOT NULL,
  text       MEDIUMTEXT   NOT NULL,
  upstream   TEXT,
  created_at BIGINT       NOT NULL,
  INDEX realisations_out_hash (out_hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
