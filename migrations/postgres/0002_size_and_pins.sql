-- Size cap, eviction and pins (issue 12), as the sqlite migration of the same name.

-- Running figures: `stored_bytes` is the sum of nars.size, kept by every NAR record write in
-- the same transaction.
CREATE TABLE stats (
  name  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  value BIGINT NOT NULL
);
INSERT INTO stats (name, value) SELECT 'stored_bytes', COALESCE(SUM(size), 0) FROM nars;

-- A pinned narinfo hash protects its whole closure from eviction.
CREATE TABLE pins (
  hash       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
  store_path TEXT   NOT NULL,
  created_at BIGINT NOT NULL
);

-- Eviction pages with a (last access, hash) cursor: one range read per page, ties included.
DROP INDEX narinfos_last_accessed_at;
CREATE INDEX narinfos_last_accessed_at ON narinfos (last_accessed_at, hash);
