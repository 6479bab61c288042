import pytest

from keystile.core import keys
from keystile.core.errors import Conflict, InvalidInput
from keystile.core.keys import Hasher, KeyFormat
from keystile.manage.service import KeyService
from keystile.serve.lookup import KeyLookup
from keystile.serve.static_keys import StaticKeys
from keystile.store import Store
from keystile.store.records import ACTIVE, DELETED, DISABLED, EXPIRED, REVOKED
from tests.backends import BOTH

from .conftest import Clock

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL


def lookup_for(
    store: Store, hasher: Hasher | None = None, static: StaticKeys | None = None
) -> KeyLookup:
    return KeyLookup(store, hasher or Hasher(), KeyFormat("ks"), static or StaticKeys())


async def test_create_stores_a_hash_and_returns_the_key_once(service: KeyService) -> None:
    issued = await service.create("ci bot", scopes=["chat", "chat", "memory"], owner="ana",
                                  metadata={"team": "ml"})  # fmt: skip
    record = issued.record
    assert record.key_hash == Hasher().digest(issued.key)
    assert record.hash_scheme == keys.SCHEME_SHA256
    assert record.scopes == ("chat", "memory")
    assert issued.key.startswith(record.display_prefix)
    stored = await service.get(record.id)
    assert stored == record
    assert issued.key not in repr(stored)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"name": "ok", "scopes": ["Chat!"]}, "scopes"),
        ({"name": "ok", "expires_at": 1.0}, "expires_at"),
        ({"name": "ok", "metadata": {"x": object()}}, "metadata"),
    ],
)
async def test_bad_input_names_the_field(service: KeyService, kwargs: dict, field: str) -> None:
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(InvalidInput) as caught:
        await service.create(name, **kwargs)
    assert caught.value.field == field


async def test_states(service: KeyService, clock: Clock) -> None:
    a = (await service.create("a", expires_at=clock.now + 10)).record
    assert a.state(clock.now) == ACTIVE
    assert a.state(clock.now + 10) == EXPIRED
    assert (await service.update(a.id, enabled=False)).state(clock.now) == DISABLED
    assert (await service.revoke(a.id)).state(clock.now) == REVOKED
    assert (await service.revoke(a.id)).revoked_at == clock.now  # idempotent
    assert (await service.delete(a.id)).state(clock.now) == DELETED
    with pytest.raises(Conflict, match="deleted"):
        await service.update(a.id, name="x")
    listed = await service.list()
    assert a.id not in {r.id for r in listed}
    assert a.id in {r.id for r in await service.list(include_inactive=True)}


async def test_rotation_keeps_settings_and_grace(service: KeyService, clock: Clock) -> None:
    old = await service.create("svc", scopes=["chat"], owner="ana", metadata={"a": 1})
    rotation = await service.rotate(old.record.id, grace=3600)
    new = rotation.new.record
    assert (new.name, new.scopes, new.owner, new.metadata) == ("svc", ("chat",), "ana", {"a": 1})
    assert new.rotated_from == old.record.id and rotation.old.replaced_by == new.id
    assert rotation.old.expires_at == clock.now + 3600
    lookup = lookup_for(service.store)
    assert (await lookup.find(old.key)).id == old.record.id
    assert (await lookup.find(rotation.new.key)).id == new.id
    with pytest.raises(Conflict, match="already replaced"):
        await service.rotate(old.record.id, grace=0)
    await service.delete(new.id)
    with pytest.raises(Conflict, match="deleted"):
        await service.rotate(new.id, grace=0)


async def test_rotation_with_zero_grace_ends_the_old_key_at_once(
    service: KeyService, clock: Clock
) -> None:
    old = await service.create("svc")
    rotation = await service.rotate(old.record.id, grace=0)
    assert rotation.old.state(clock.now) == EXPIRED


async def test_lookup_rejects_malformed_keys_before_the_store(service: KeyService) -> None:
    class NoStore:
        async def find_by_hash(self, key_hash: str) -> None:
            raise AssertionError("store must not be asked")

    lookup = KeyLookup(NoStore(), Hasher(), KeyFormat("ks"), StaticKeys())  # type: ignore[arg-type]
    key = keys.generate()
    assert await lookup.find(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert await lookup.find("sk-some-foreign-key-123456") is None  # no imported keys


async def test_pepper_added_later_keeps_old_keys(store: Store, clock: Clock) -> None:
    before = await KeyService(store, Hasher(), clock=clock).create("before")
    peppered = Hasher(b"pepper-pepper-pepper")
    after = await KeyService(store, peppered, clock=clock).create("after")
    assert after.record.hash_scheme == keys.SCHEME_HMAC_SHA256
    assert after.record.key_hash != Hasher().digest(after.key)
    lookup = lookup_for(store, peppered)
    assert (await lookup.find(before.key)).id == before.record.id
    assert (await lookup.find(after.key)).id == after.record.id
    # without the pepper, peppered keys no longer match
    assert await lookup_for(store).find(after.key) is None


async def test_static_keys_come_after_the_database(service: KeyService) -> None:
    issued = await service.create("db key")
    static = StaticKeys(admin_key="admin-secret-value", client_keys=(issued.key, "legacy-shared"))
    lookup = lookup_for(service.store, static=static)
    assert (await lookup.find(issued.key)).id == issued.record.id  # database first
    admin = await lookup.find("admin-secret-value")
    assert admin.id == "static-admin" and admin.scopes == ("admin",)
    assert (await lookup.find("legacy-shared")).id == "static-2"
    assert await lookup.find("legacy-sharee") is None
