-- The key table (PostgreSQL). Times are Unix seconds (double precision, UTC); JSON
-- columns hold text, as in SQLite, so both backends read them the same way.
-- Text compared or sorted by keystile uses the "C" collation: the same order as SQLite.
CREATE TABLE keys (
    id             TEXT COLLATE "C" PRIMARY KEY,
    key_hash       TEXT COLLATE "C" NOT NULL,
    hash_scheme    TEXT NOT NULL,
    display_prefix TEXT NOT NULL,
    name           TEXT COLLATE "C" NOT NULL,
    owner          TEXT COLLATE "C",
    scopes         TEXT NOT NULL DEFAULT '[]',
    metadata       TEXT NOT NULL DEFAULT '{}',
    created_at     DOUBLE PRECISION NOT NULL,
    updated_at     DOUBLE PRECISION NOT NULL,
    last_used_at   DOUBLE PRECISION,
    expires_at     DOUBLE PRECISION,
    enabled        BIGINT NOT NULL DEFAULT 1,
    revoked_at     DOUBLE PRECISION,
    deleted_at     DOUBLE PRECISION,
    origin         TEXT NOT NULL DEFAULT 'created',
    rotated_from   TEXT,
    replaced_by    TEXT
);
CREATE UNIQUE INDEX keys_key_hash ON keys (key_hash);
CREATE INDEX keys_owner ON keys (owner);
