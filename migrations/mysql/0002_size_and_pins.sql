-- Size cap, eviction and pins (issue 12), as the sqlite migration of the same name. The
-- narinfos_last_accessed_at index needs no change here: an InnoDB secondary index already
-- ends with the primary key (hash), which is the eviction cursor's tie-breaker.

-- Running figures: `stored_bytes` is the sum of nars.size, kept by every NAR record write in
-- the same transaction.
CREATE TABLE stats (
  name  VARCHAR(64) NOT NULL PRIMARY KEY,
  value BIGINT      NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
INSERT INTO stats (name, value) SELECT 'stored_bytes', COALESCE(SUM(size), 0) FROM nars;

-- A pinned narinfo hash protects its whole closure from eviction.
CREATE TABLE pins (
  hash       VARCHAR(255) NOT NULL PRIMARY KEY,
  store_path TEXT         NOT NULL,
  created_at BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
