-- People who sign in: a role, an optional password (argon2id), disabled or not;
-- groups that hold users as well as keys; browser sessions, stored by token hash.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
ALTER TABLE users ADD COLUMN email TEXT;
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN disabled_at DOUBLE PRECISION;

CREATE TABLE user_groups (
    user_id  TEXT NOT NULL REFERENCES users (id),
    group_id TEXT NOT NULL REFERENCES groups (id),
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_group ON user_groups (group_id);

CREATE TABLE sessions (
    id           TEXT COLLATE "C" PRIMARY KEY,
    token_hash   TEXT COLLATE "C" NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users (id),
    created_at   DOUBLE PRECISION NOT NULL,
    last_seen_at DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION NOT NULL,   -- the absolute end; the idle end is last_seen_at + idle
    revoked_at   DOUBLE PRECISION,
    client_ip    TEXT,
    user_agent   TEXT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- Sessions share the keys' change log: a session revoked, or its user changed,
-- reaches every server's cache. last_seen_at alone is not a change.
CREATE FUNCTION sessions_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO key_events (key_id, key_hash, at) VALUES (NEW.id, NEW.token_hash, keystile_now());
    ELSE
        INSERT INTO key_events (key_id, key_hash, at) VALUES (OLD.id, OLD.token_hash, keystile_now());
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sessions_event_insert AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_event();
CREATE TRIGGER sessions_event_update AFTER UPDATE OF revoked_at, expires_at ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_event();
CREATE TRIGGER sessions_event_delete AFTER DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_event();

-- the open sessions of one user, into the change log
CREATE FUNCTION user_sessions_event(who TEXT) RETURNS void LANGUAGE sql AS $$
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, token_hash, keystile_now() FROM sessions WHERE user_id = who AND revoked_at IS NULL
$$;

CREATE FUNCTION users_session_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM user_sessions_event(NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER users_session_event_update AFTER UPDATE OF
    team_id, role, email, external_id, disabled_at ON users
    FOR EACH ROW EXECUTE FUNCTION users_session_event();

CREATE FUNCTION user_groups_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM user_sessions_event(CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END);
    RETURN NULL;
END $$;

CREATE TRIGGER user_groups_event_insert AFTER INSERT ON user_groups
    FOR EACH ROW EXECUTE FUNCTION user_groups_event();
CREATE TRIGGER user_groups_event_delete AFTER DELETE ON user_groups
    FOR EACH ROW EXECUTE FUNCTION user_groups_event();

CREATE FUNCTION groups_session_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT s.id, s.token_hash, keystile_now()
    FROM sessions s JOIN user_groups ug ON ug.user_id = s.user_id
    WHERE ug.group_id = NEW.id AND s.revoked_at IS NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER groups_session_event_update AFTER UPDATE OF scopes ON groups
    FOR EACH ROW EXECUTE FUNCTION groups_session_event();

CREATE FUNCTION teams_session_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT s.id, s.token_hash, keystile_now()
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE u.team_id = NEW.id AND s.revoked_at IS NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER teams_session_event_update AFTER UPDATE OF limits, allowed_ips ON teams
    FOR EACH ROW EXECUTE FUNCTION teams_session_event();

-- A disabled user's keys stop too.
CREATE TRIGGER users_key_event_disable AFTER UPDATE OF disabled_at ON users
    FOR EACH ROW EXECUTE FUNCTION users_event();
