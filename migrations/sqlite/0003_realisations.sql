-- Realisations of content-addressed derivations (issue 16): which store path a derivation
-- output became. `id` names the output as Nix does: `sha256:<hex>!<output>` (realisations/,
-- Nix 2.8-2.34) or `<drv>^<output>` (build-trace-v2/). `text` is the document exactly as
-- served (re-signed at ingest), so a hit is one primary-key lookup.
CREATE TABLE realisations (
  id         TEXT    NOT NULL PRIMARY KEY,
  out_path   TEXT    NOT NULL,
  -- the output's 32-char hash part: removing that path's narinfo removes its realisations
  out_hash   TEXT    NOT NULL,
  text       TEXT    NOT NULL,
  upstream   TEXT,
  created_at INTEGER NOT NULL
);
CREATE INDEX realisations_out_hash ON realisations (out_hash);
