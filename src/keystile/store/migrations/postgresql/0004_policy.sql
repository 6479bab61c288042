-- Team IP allowlists, and usage counted per key, hour, route and outcome.
ALTER TABLE teams ADD COLUMN allowed_ips TEXT;

CREATE TABLE usage (
    key_id  TEXT NOT NULL,
    hour    BIGINT NOT NULL,           -- Unix time of the hour's start
    route   TEXT NOT NULL DEFAULT '',  -- '' when no route matched
    outcome TEXT NOT NULL,             -- 'allow' or a denial reason code
    count   BIGINT NOT NULL,
    PRIMARY KEY (key_id, hour, route, outcome)
);

-- A team's limits or allowlist, or a user's team, decide what its keys may do.
CREATE FUNCTION teams_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT k.id, k.key_hash, keystile_now()
    FROM keys k JOIN users u ON u.id = k.user_id WHERE u.team_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER teams_event_update AFTER UPDATE OF limits, allowed_ips ON teams
    FOR EACH ROW EXECUTE FUNCTION teams_event();

CREATE FUNCTION users_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT id, key_hash, keystile_now() FROM keys WHERE user_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER users_event_update AFTER UPDATE OF team_id ON users
    FOR EACH ROW EXECUTE FUNCTION users_event();
