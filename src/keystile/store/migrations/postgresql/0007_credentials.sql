-- Upstream credentials ("providers"): a key, or a team for its users' keys, is bound
-- by name to one of the configured [credentials.NAME]; routes inject its value.
ALTER TABLE keys ADD COLUMN credential TEXT;
ALTER TABLE teams ADD COLUMN credential TEXT;

-- A binding decides what an allow sends upstream: a change of it is a change.
DROP TRIGGER keys_event_update ON keys;
CREATE TRIGGER keys_event_update AFTER UPDATE OF
    key_hash, hash_scheme, name, owner, scopes, metadata, expires_at, enabled, revoked_at,
    deleted_at, replaced_by, user_id, allowed_ips, limits, credential ON keys
    FOR EACH ROW EXECUTE FUNCTION keys_event();

DROP TRIGGER teams_event_update ON teams;
CREATE TRIGGER teams_event_update AFTER UPDATE OF limits, allowed_ips, credential ON teams
    FOR EACH ROW EXECUTE FUNCTION teams_event();

DROP TRIGGER teams_session_event_update ON teams;
CREATE TRIGGER teams_session_event_update AFTER UPDATE OF limits, allowed_ips, credential ON teams
    FOR EACH ROW EXECUTE FUNCTION teams_session_event();
