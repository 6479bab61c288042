-- Upstream credentials ("providers"): a key, or a team for its users' keys, is bound
-- by name to one of the configured [credentials.NAME]; routes inject its value.
ALTER TABLE keys ADD COLUMN credential TEXT;
ALTER TABLE teams ADD COLUMN credential TEXT;

-- A binding decides what an allow sends upstream: a change of it is a change.
DROP TRIGGER keys_event_update;
CREATE TRIGGER keys_event_update AFTER UPDATE OF
    key_hash, hash_scheme, name, owner, scopes, metadata, expires_at, enabled, revoked_at,
    deleted_at, replaced_by, user_id, allowed_ips, limits, credential ON keys
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    VALUES (OLD.id, OLD.key_hash, (julianday('now') - 2440587.5) * 86400.0);
END;

DROP TRIGGER teams_event_update;
CREATE TRIGGER teams_event_update AFTER UPDATE OF limits, allowed_ips, credential ON teams
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT k.id, k.key_hash, (julianday('now') - 2440587.5) * 86400.0
    FROM keys k JOIN users u ON u.id = k.user_id WHERE u.team_id = NEW.id;
END;

DROP TRIGGER teams_session_event_update;
CREATE TRIGGER teams_session_event_update AFTER UPDATE OF limits, allowed_ips, credential ON teams
BEGIN
    INSERT INTO key_events (key_id, key_hash, at)
    SELECT s.id, s.token_hash, (julianday('now') - 2440587.5) * 86400.0
    FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE u.team_id = NEW.id AND s.revoked_at IS NULL;
END;
