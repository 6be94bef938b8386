-- Realisations of content-addressed derivations (issue 16), as the sqlite migration of the
-- same name: `id` is `sha256:<hex>!<output>` or `<drv>^<output>`, `text` the document served.
CREATE TABLE realisations (
  id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  out_path   TEXT   NOT NULL,
  -- the output's 32-char hash part: removing that path's narinfo removes its realisations
  out_hash   TEXT COLLATE "C" NOT NULL,
  text       TEXT   NOT NULL,
  upstream   TEXT,
  created_at BIGINT NOT NULL
);
CREATE INDEX realisations_out_hash ON realisations (out_hash);
