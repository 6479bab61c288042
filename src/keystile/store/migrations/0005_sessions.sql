-- People who sign in: a role, an optional password (argon2id), disabled or not;
-- groups that hold users as well as keys; browser sessions, stored by token hash.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN disabled_at REAL;

CREATE TABLE user_groups (
    user_id  TEXT NOT NULL REFERENCES users (id),
    group_id TEXT NOT NULL REFERENCES groups (id),
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_group ON user_groups (group_id);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users (id),
    created_at   REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    expires_at   REAL NOT NULL,   -- the absolute end; the idle end is last_seen_at + idle
    revoked_at   REAL,
    client_ip    TEXT,
    user_agent   TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Sessions share the keys' change log: a session revoked, or its user changed,
-- reaches every server's cache within one poll. last_seen_at alone is not a change.
CREATE TRIGGER sessions_event_insert AFTER INSERT ON sessions
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    VALUES (NEW.id, NEW.token_hash, (julianday('now') - 2440587.5) * 86400.0);
END;

CREATE TRIGGER sessions_event_update AFTER UPDATE OF revoked_at, expires_at ON sessions
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    VALUES (OLD.id, OLD.token_hash, (julianday('now') - 2440587.5) * 86400.0);
END;

CREATE TRIGGER sessions_event_delete AFTER DELETE ON sessions
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    VALUES (OLD.id, OLD.token_hash, (julianday('now') - 2440587.5) * 86400.0);
END;

CREATE TRIGGER users_session_event_update AFTER UPDATE OF
    team_id, role, email, external_id, disabled_at ON users
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, token_hash, (julianday('now') - 2440587.5) * 86400.0
    FROM sessions WHERE user_id = NEW.id AND revoked_at IS NULL;
END;

CREATE TRIGGER user_groups_event_insert AFTER INSERT ON user_groups
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, token_hash, (julianday('now') - 2440587.5) * 86400.0
    FROM sessions WHERE user_id = NEW.user_id AND revoked_at IS NULL;
END;

CREATE TRIGGER user_groups_event_delete AFTER DELETE ON user_groups
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, token_hash, (julianday('now') - 2440587.5) * 86400.0
    FROM sessions WHERE user_id = OLD.user_id AND revoked_at IS NULL;
END;

CREATE TRIGGER groups_session_event_update AFTER UPDATE OF scopes ON groups
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT s.id, s.token_hash, (julianday('now') - 2440587.5) * 86400.0
    FROM sessions s JOIN user_groups ug ON ug.user_id = s.user_id
    WHERE ug.group_id = NEW.id AND s.revoked_at IS NULL;
END;

CREATE TRIGGER teams_session_event_update AFTER UPDATE OF limits, allowed_ips ON teams
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT s.id, s.token_hash, (julianday('now') - 2440587.5) * 86400.0
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE u.team_id = NEW.id AND s.revoked_at IS NULL;
END;

-- A disabled user's keys stop too.
CREATE TRIGGER users_key_event_disable AFTER UPDATE OF disabled_at ON users
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, key_hash, (julianday('now') - 2440587.5) * 86400.0 FROM keys WHERE user_id = NEW.id;
END;
