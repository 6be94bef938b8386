-- ncps metadata, first schema (MySQL/MariaDB): the same tables, keys and indexes as the
-- sqlite one. Times are Unix milliseconds; sizes and times are BIGINT (NARs exceed 2 GiB).
-- Indexed text is VARCHAR(255) (an index needs a bounded key; a store path base name is at
-- most 244 characters); utf8mb4_bin compares bytes, as sqlite does, not case-insensitively.

CREATE TABLE narinfos (
  hash             VARCHAR(255) NOT NULL PRIMARY KEY,
  store_path       TEXT         NOT NULL,
  text             MEDIUMTEXT   NOT NULL,
  nar_key          VARCHAR(255) NOT NULL,
  upstream         TEXT,
  upstream_nar_url TEXT,
  compression      VARCHAR(32)  NOT NULL,
  file_hash        TEXT,
  file_size        BIGINT,
  nar_hash         TEXT         NOT NULL,
  nar_size         BIGINT       NOT NULL,
  created_at       BIGINT       NOT NULL,
  last_accessed_at BIGINT       NOT NULL,
  INDEX narinfos_nar_key (nar_key),
  INDEX narinfos_last_accessed_at (last_accessed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE narinfo_references (
  hash      VARCHAR(255) NOT NULL,
  reference VARCHAR(255) NOT NULL,
  PRIMARY KEY (hash, reference),
  INDEX narinfo_references_reference (reference),
  CONSTRAINT narinfo_references_hash FOREIGN KEY (hash) REFERENCES narinfos (hash) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE nars (
  `key`            VARCHAR(255) NOT NULL PRIMARY KEY,
  size             BIGINT       NOT NULL,
  file_hash        TEXT,
  nar_hash         TEXT         NOT NULL,
  created_at       BIGINT       NOT NULL,
  last_accessed_at BIGINT       NOT NULL,
  INDEX nars_last_accessed_at (last_accessed_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE config (
  `key` VARCHAR(255) NOT NULL PRIMARY KEY,
  value MEDIUMTEXT   NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
