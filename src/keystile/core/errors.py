"""keystile's own exceptions.

    KeystileError
    ├── ConfigError          a setting or argument is wrong; names it and its value
    ├── InvalidInput         a value given for a key (name, scope, metadata...) is not acceptable
    ├── LimitsUnavailable    the shared rate limits (Redis) failed or did not answer in time
    └── StoreError           the key store failed (sqlite errors translated at the boundary)
        ├── StoreUnavailable the store cannot be opened, read or written right now
        ├── NotFound         no record with that id
        └── Conflict         the change clashes with what is stored (duplicate hash, wrong state)
            └── AtCapacity   a "most N" rule (self-service keys per person) is reached

Anything else escaping to the CLI or the server is a bug.
"""


class KeystileError(Exception):
    """Base of every error keystile raises on purpose."""


class ConfigError(KeystileError):
    """A setting, config file entry or command-line argument is invalid."""


class InvalidInput(KeystileError):
    """A field of a request or command has a bad value. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class LimitsUnavailable(KeystileError):
    """Redis, where rate limits and quotas are shared, failed or was too slow to answer."""


class StoreError(KeystileError):
    """The key store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached, opened or written (locked, missing, corrupt, read-only)."""


class NotFound(StoreError):
    """No record with the given id."""


class Conflict(StoreError):
    """The change contradicts what is stored."""


class AtCapacity(Conflict):
    """Counted and refused in the same transaction as the insert it would allow."""
