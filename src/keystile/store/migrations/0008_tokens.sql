-- Token budgets: tokens reported by the upstream (or the proxy) for allowed requests,
-- counted beside the requests of the same key, hour and route.
ALTER TABLE usage ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
