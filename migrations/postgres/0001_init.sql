-- ncps metadata, first schema (PostgreSQL): the same tables, keys and indexes as the sqlite
-- one. Times are Unix milliseconds; sizes and times are BIGINT (NARs exceed 2 GiB).
-- Key columns use the "C" collation: byte order, as sqlite compares and sorts them.

CREATE TABLE narinfos (
  hash             TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  store_path       TEXT   NOT NULL,
  text             TEXT   NOT NULL,
  nar_key          TEXT COLLATE "C" NOT NULL,
  upstream         TEXT,
  upstream_nar_url TEXT,
  compression      TEXT   NOT NULL,
  file_hash        TEXT,
  file_size        BIGINT,
  nar_hash         TEXT   NOT NULL,
  nar_size         BIGINT NOT NULL,
  created_at       BIGINT NOT NULL,
  last_accessed_at BIGINT NOT NULL
);
CREATE INDEX narinfos_nar_key ON narinfos (nar_key);
CREATE INDEX narinfos_last_accessed_at ON narinfos (last_accessed_at);

CREATE TABLE narinfo_references (
  hash      TEXT COLLATE "C" NOT NULL REFERENCES narinfos (hash) ON DELETE CASCADE,
  reference TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (hash, reference)
);
CREATE INDEX narinfo_references_reference ON narinfo_references (reference);

CREATE TABLE nars (
  key              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  size             BIGINT NOT NULL,
  file_hash        TEXT,
  nar_hash         TEXT   NOT NULL,
  created_at       BIGINT NOT NULL,
  last_accessed_at BIGINT NOT NULL
);
CREATE INDEX nars_last_accessed_at ON nars (last_accessed_at);

CREATE TABLE config (
  key   TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  value TEXT NOT NULL
);
