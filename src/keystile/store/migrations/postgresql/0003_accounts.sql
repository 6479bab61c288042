-- Teams, users and groups; per-key limits and IP allowlists; the audit log;
-- idempotency records for retried admin calls.
CREATE TABLE teams (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    limits     TEXT NOT NULL DEFAULT '{}',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE users (
    id          TEXT COLLATE "C" PRIMARY KEY,
    external_id TEXT COLLATE "C" NOT NULL UNIQUE,
    team_id     TEXT REFERENCES teams (id),
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX users_team ON users (team_id);

CREATE TABLE groups (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    scopes     TEXT NOT NULL DEFAULT '[]',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
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
    seq         BIGSERIAL PRIMARY KEY,
    at          DOUBLE PRECISION NOT NULL,
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
    created_at DOUBLE PRECISION NOT NULL
);

-- Changes that alter what a key may do reach every server's cache.
DROP TRIGGER keys_event_update ON keys;
CREATE TRIGGER keys_event_update AFTER UPDATE OF
    key_hash, hash_scheme, name, owner, scopes, metadata, expires_at, enabled, revoked_at,
    deleted_at, replaced_by, user_id, allowed_ips, limits ON keys
    FOR EACH ROW EXECUTE FUNCTION keys_event();

CREATE FUNCTION key_groups_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, key_hash, keystile_now() FROM keys
    WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.key_id ELSE NEW.key_id END;
    RETURN NULL;
END $$;

CREATE TRIGGER key_groups_event_insert AFTER INSERT ON key_groups
    FOR EACH ROW EXECUTE FUNCTION key_groups_event();
CREATE TRIGGER key_groups_event_delete AFTER DELETE ON key_groups
    FOR EACH ROW EXECUTE FUNCTION key_groups_event();

CREATE FUNCTION groups_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT k.id, k.key_hash, keystile_now()
    FROM keys k JOIN key_groups kg ON kg.key_id = k.id WHERE kg.group_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER groups_event_update AFTER UPDATE OF scopes ON groups
    FOR EACH ROW EXECUTE FUNCTION groups_event();
