-- The change log that running servers follow to drop stale cache entries. Triggers
-- write it, so every writer is seen; last_used_at alone is not a change. Each
-- statement that adds to it sends a notification on the channel
-- "keystile_<schema>", delivered when the transaction commits: servers listening
-- read the log at once instead of at their next poll. Writers take one advisory
-- lock per transaction (see postgres.py), so entries commit in seq order.
CREATE FUNCTION keystile_now() RETURNS DOUBLE PRECISION
    LANGUAGE sql AS $$ SELECT extract(epoch FROM clock_timestamp())::double precision $$;

CREATE TABLE key_events (
    seq      BIGSERIAL PRIMARY KEY,
    key_id   TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    at       DOUBLE PRECISION NOT NULL
);

CREATE FUNCTION keystile_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keystile_' || TG_TABLE_SCHEMA, '');
    RETURN NULL;
END $$;

CREATE TRIGGER key_events_notify AFTER INSERT ON key_events
    FOR EACH STATEMENT EXECUTE FUNCTION keystile_notify();

CREATE FUNCTION keys_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO key_events (key_id, key_hash, at) VALUES (NEW.id, NEW.key_hash, keystile_now());
    ELSE
        INSERT INTO key_events (key_id, key_hash, at) VALUES (OLD.id, OLD.key_hash, keystile_now());
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER keys_event_insert AFTER INSERT ON keys
    FOR EACH ROW EXECUTE FUNCTION keys_event();

CREATE TRIGGER keys_event_update AFTER UPDATE OF
    key_hash, hash_scheme, name, owner, scopes, metadata, expires_at, enabled, revoked_at,
    deleted_at, replaced_by ON keys
    FOR EACH ROW EXECUTE FUNCTION keys_event();

CREATE TRIGGER keys_event_delete AFTER DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION keys_event();
