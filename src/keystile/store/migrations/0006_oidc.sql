-- OpenID Connect sign-ins under way: one row from "Sign in with ..." until the
-- provider sends the browser back (or 10 minutes pass). Keyed by the SHA-256 of
-- the state value, so the store never holds a state a callback would accept;
-- bound to the browser by the hash of a short-lived cookie. A row is deleted
-- when its callback arrives: a replayed state finds nothing. In the store (not
-- in one process's memory) so that the callback may land on any worker or replica.
CREATE TABLE oidc_pending (
    state_hash   TEXT PRIMARY KEY,
    browser_hash TEXT NOT NULL,
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,   -- the PKCE code verifier
    return_to    TEXT NOT NULL,
    created_at   REAL NOT NULL
);
CREATE INDEX oidc_pending_created ON oidc_pending (created_at);

CREATE INDEX users_email ON users (lower(email));
