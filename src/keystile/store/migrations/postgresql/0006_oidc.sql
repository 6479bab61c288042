-- OpenID Connect sign-ins under way, keyed by the SHA-256 of the state value and
-- bound to the browser by the hash of a short-lived cookie (see the SQLite
-- migration of the same number for why they are in the store).
CREATE TABLE oidc_pending (
    state_hash   TEXT PRIMARY KEY,
    browser_hash TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,   -- the PKCE code verifier
    return_to    TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX oidc_pending_created ON oidc_pending (created_at);

CREATE INDEX users_email ON users (lower(email));
