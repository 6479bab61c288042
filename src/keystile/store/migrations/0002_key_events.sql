-- A change log that running servers poll to drop stale cache entries.
-- Triggers write it, so every writer (CLI, API, another replica, an import) is seen.
-- last_used_at alone is not a change: usage flushes must not empty caches.
CREATE TABLE key_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id   TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    at       REAL NOT NULL
);

CREATE TRIGGER keys_event_insert AFTER INSERT ON keys
BEGIN
    INSERT INTO key_events (key_id, key_hash, at) VALUES (NEW.id, NEW.key_hash, (julianday('now') - 2440587.5) * 86400.0);
END;

CREATE TRIGGER keys_event_update AFTER UPDATE OF
    key_hash, hash_scheme, name, owner, scopes, metadata, expires_at, enabled, revoked_at,
    deleted_at, replaced_by ON keys
BEGIN
    INSERT INTO key_events (key_id, key_hash, at) VALUES (OLD.id, OLD.key_hash, (julianday('now') - 2440587.5) * 86400.0);
END;

CREATE TRIGGER keys_event_delete AFTER DELETE ON keys
BEGIN
    INSERT INTO key_events (key_id, key_hash, at) VALUES (OLD.id, OLD.key_hash, (julianday('now') - 2440587.5) * 86400.0);
END;
