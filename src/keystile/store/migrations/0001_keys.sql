-- The key table. Times are Unix seconds (REAL, UTC); JSON columns hold text.
CREATE TABLE keys (
    id             TEXT PRIMARY KEY,
    key_hash       TEXT NOT NULL,
    hash_scheme    TEXT NOT NULL,
    display_prefix TEXT NOT NULL,
    name           TEXT NOT NULL,
    owner          TEXT,
    scopes         TEXT NOT NULL DEFAULT '[]',
    metadata       TEXT NOT NULL DEFAULT '{}',
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    last_used_at   REAL,
    expires_at     REAL,
    enabled        INTEGER NOT NULL DEFAULT 1,
    revoked_at     REAL,
    deleted_at     REAL,
    origin         TEXT NOT NULL DEFAULT 'created',
    rotated_from   TEXT,
    replaced_by    TEXT
);
CREATE UNIQUE INDEX keys_key_hash ON keys (key_hash);
CREATE INDEX keys_owner ON keys (owner);
