-- Teams, users and groups; per-key limits and IP allowlists; the audit log;
-- idempotency records for retried admin calls.
CREATE TABLE teams (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    limits     TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    external_id TEXT NOT NULL UNIQUE,
    team_id     TEXT REFERENCES teams (id),
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX users_team ON users (team_id);

CREATE TABLE groups (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    scopes     TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE key_groups (
    key_id   TEXT NOT NULL REFERENCES keys (id),
    group_id TEXT NOT NULL REFERENCES groups (id),
    PRIMARY KEY (key_id, group_id)
);
CREATE INDEX key_groups_group ON key_groups (group_id);

ALTER TABLE keys ADD COLUMN user_id TEXT REFERENCES users (id);
ALTER TABLE keys ADD COLUMN allowed_ips TEXT;
ALTER TABLE keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
CREATE INDEX keys_user ON keys (user_id);

CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    before      TEXT,
    after       TEXT
);
CREATE INDEX audit_target ON audit_log (target_type, target_id);

CREATE TABLE idempotency (
    key        TEXT PRIMARY KEY,
    response   TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- Changes that alter what a key may do reach every server's cache.
DROP TRIGGER keys_event_update;
CREATE TRIGGER keys_event_update AFTER UPDATE OF
    key_hash, hash_scheme, name, owner, scopes, metadata, expires_at, enabled, revoked_at,
    deleted_at, replaced_by, user_id, allowed_ips, limits ON keys
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    VALUES (OLD.id, OLD.key_hash, (julianday('now') - 2440587.5) * 86400.0);
END;

CREATE TRIGGER key_groups_event_insert AFTER INSERT ON key_groups
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, key_hash, (julianday('now') - 2440587.5) * 86400.0 FROM keys WHERE id = NEW.key_id;
END;

CREATE TRIGGER key_groups_event_delete AFTER DELETE ON key_groups
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, key_hash, (julianday('now') - 2440587.5) * 86400.0 FROM keys WHERE id = OLD.key_id;
END;

CREATE TRIGGER groups_event_update AFTER UPDATE OF scopes ON groups
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT k.id, k.key_hash, (julianday('now') - 2440587.5) * 86400.0
    FROM keys k JOIN key_groups kg ON kg.key_id = k.id WHERE kg.group_id = NEW.id;
END;
