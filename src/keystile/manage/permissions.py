"""Who may see and change what: the caller of any door (an admin API key, a
signed-in person in the UI) and the rules that bound what they may do.

- ``KEYSTILE_ADMIN_KEY`` or a key with the ``admin`` scope: everything;
- a key with ``keys:self`` (or a signed-in member): only keys of its own user (or
  owner), and never a key that may do more than itself
  (:func:`keystile.manage.bounds.excess`: scopes, limits, allowlist, expiry) by any
  route: create, change, rotate; state changes only as
  :data:`keystile.core.model.TRANSITIONS` lets its role make them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from keystile.core.model import ADMIN_ROLE, OWNER_ROLE, KeyRecord, may_change_state
from keystile.manage.bounds import excess
from keystile.manage.refusal import ApiError

ADMIN = "admin"
SELF_SERVICE = "keys:self"


@dataclass(frozen=True, slots=True)
class Caller:
    record: KeyRecord

    @property
    def actor(self) -> str:
        return self.record.id

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.record.granted

    def owns(self, key: KeyRecord) -> bool:
        if self.is_admin:
            return True
        mine = self.record
        if mine.user_id is not None:
            return key.user_id == mine.user_id
        return mine.owner is not None and key.owner == mine.owner

    def guard(self, proposed: KeyRecord, current: KeyRecord | None) -> None:
        """Refuse a key (new, or ``current`` changed) that may do more than the caller.

        A change to a key an admin made looser than the caller passes when it loosens
        nothing of that key (renaming, disabling, tightening); any other change, every
        new key and every rotation must fit within the caller's own key. Admins are not
        bounded. A change of the key's state must be one :data:`keystile.model.TRANSITIONS`
        lets the caller's role make (a member cannot revive a key an admin expired).
        """
        if current is not None:
            now = time.time()
            before, after = current.state(now), proposed.state(now)
            role = ADMIN_ROLE if self.is_admin else OWNER_ROLE
            if not may_change_state(role, before, after):
                who = "an admin" if self.is_admin else "its owner"
                raise ApiError(403, "permission_error", "state_change_not_allowed",
                               f"the key is {before}: {who} cannot make it {after}"
                               + ("" if self.is_admin else " (ask an admin)"))  # fmt: skip
        if self.is_admin:
            return
        over = excess(proposed, self.record)
        if not over or (current is not None and not excess(proposed, current)):
            return
        code = "scope_not_grantable" if "scopes" in over else "exceeds_own_key"
        detail = "; ".join(f"{name}: {what}" for name, what in over.items())
        raise ApiError(403, "permission_error", code,
                       f"a keys:self key cannot make a key that may do more than itself: "
                       f"{detail}")  # fmt: skip
