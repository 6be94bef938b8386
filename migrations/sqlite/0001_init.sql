-- ncps metadata, first schema. Times are Unix milliseconds.

-- One row per narinfo ncps serves. `text` is the narinfo exactly as served (rewritten and
-- signed at ingest), so a hit is one primary-key lookup with no parsing.
CREATE TABLE narinfos (
  hash             TEXT    NOT NULL PRIMARY KEY,
  store_path       TEXT    NOT NULL,
  text             TEXT    NOT NULL,
  nar_key          TEXT    NOT NULL,
  upstream         TEXT,
  upstream_nar_url TEXT,
  compression      TEXT    NOT NULL,
  file_hash        TEXT,
  file_size        INTEGER,
  nar_hash         TEXT    NOT NULL,
  nar_size         INTEGER NOT NULL,
  created_at       INTEGER NOT NULL,
  last_accessed_at INTEGER NOT NULL
);
-- "narinfos for a nar" (several narinfos may name one NAR; deleting a NAR needs them)
CREATE INDEX narinfos_nar_key ON narinfos (nar_key);
-- LRU eviction walks the least recently used first
CREATE INDEX narinfos_last_accessed_at ON narinfos (last_accessed_at);

-- References in their own table rather than a text column: the same shape in all three
-- dialects, no delimiter to parse, and "who refers to this path" (closure-aware eviction,
-- fsck) is an indexed query instead of a scan of every narinfo.
CREATE TABLE narinfo_references (
  hash      TEXT NOT NULL REFERENCES narinfos (hash) ON DELETE CASCADE,
  reference TEXT NOT NULL,
  PRIMARY KEY (hash, reference)
) WITHOUT ROWID;
CREATE INDEX narinfo_references_reference ON narinfo_references (reference);

-- NAR objects present in blob storage; only complete, verified objects get a row.
CREATE TABLE nars (
  key              TEXT    NOT NULL PRIMARY KEY,
  size             INTEGER NOT NULL,
  file_hash        TEXT,
  nar_hash         TEXT    NOT NULL,
  created_at       INTEGER NOT NULL,
  last_accessed_at INTEGER NOT NULL
);
CREATE INDEX nars_last_accessed_at ON nars (last_accessed_at);

-- Settings shared by every replica (e.g. the generated signing key).
CREATE TABLE config (
  key   TEXT NOT NULL PRIMARY KEY,
  value TEXT NOT NULL
);
