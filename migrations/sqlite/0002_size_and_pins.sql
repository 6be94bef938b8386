-- Size cap, eviction and pins (issue 12). Times are Unix milliseconds.

-- Running figures. `stored_bytes` is the sum of nars.size, kept by every NAR record write
-- in the same transaction, so the size cap is one row read rather than a SUM over every NAR.
CREATE TABLE stats (
  name  TEXT    NOT NULL PRIMARY KEY,
  value INTEGER NOT NULL
);
INSERT INTO stats (name, value) SELECT 'stored_bytes', COALESCE(SUM(size), 0) FROM nars;

-- A pinned narinfo hash protects its whole closure (references, transitively) from eviction.
CREATE TABLE pins (
  hash       TEXT    NOT NULL PRIMARY KEY,
  store_path TEXT    NOT NULL,
  created_at INTEGER NOT NULL
);

-- Eviction pages through the narinfos least recently used first with a (last access, hash)
-- cursor: the index holds both, so each page is a range read, ties included.
DROP INDEX narinfos_last_accessed_at;
CREATE INDEX narinfos_last_accessed_at ON narinfos (last_accessed_at, hash);
