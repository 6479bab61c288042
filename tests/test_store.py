import asyncio
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keystile.core.errors import Conflict, NotFound, StoreUnavailable
from keystile.core.keys import Hasher
from keystile.manage.service import KeyService
from keystile.store import Audit, Group, Store, Team, User
from tests.backends import BOTH

BACKENDS = BOTH  # store tests run on SQLite and on PostgreSQL


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_file_is_private_and_folder_created(db_path: Path) -> None:
    assert not db_path.parent.exists()
    async with await Store.open(db_path) as store:
        await KeyService(store, Hasher()).create("k")
        assert mode(db_path) == 0o600
        assert mode(db_path.parent) == 0o700
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.exists() and mode(wal) == 0o600


async def test_database_and_wal_hold_no_key_material(db_path: Path) -> None:
    async with await Store.open(db_path) as store:
        service = KeyService(store, Hasher())
        issued = [await service.create(f"k{i}") for i in range(20)]
        rotated = await service.rotate(issued[0].record.id, grace=60)
        secrets = [i.key for i in issued] + [rotated.new.key]
        files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
        assert any(p.name.endswith("-wal") for p in files)
        blob = b"".join(p.read_bytes() for p in files)
    for key in secrets:
        secret_part = key.split("_", 1)[1]
        assert key.encode() not in blob
        assert secret_part[10:30].encode() not in blob  # no fragment past the display prefix


async def test_change_log_records_every_change_but_last_used(store: Store) -> None:
    service = KeyService(store, Hasher())
    start = await store.last_event()
    issued = await service.create("k")
    await service.update(issued.record.id, name="renamed")
    await store.update_key(issued.record.id, {"last_used_at": 5.0})
    seq, hashes = await store.events_since(start)
    assert hashes == [issued.record.key_hash, issued.record.key_hash]
    assert await store.events_since(seq) == (seq, [])


async def test_unknown_id_and_duplicate_hash(store: Store) -> None:
    with pytest.raises(NotFound, match="key_nope"):
        await store.get_key("key_nope")
    issued = await KeyService(store, Hasher()).create("k")
    with pytest.raises(Conflict):
        await store.insert_keys([issued.record])


async def test_lookup_by_hash_reads_groups_and_team_as_the_listing_does(store: Store) -> None:
    """find_by_hash reads a key, its groups and its team in one joined query; the
    record equals the one read by id (separate queries)."""
    audit = Audit("test", "setup")
    await store.insert_team(Team("t1", "ops", 1.0, 1.0, {"rpm": 5}, ("10.0.0.0/8",)), audit)
    await store.insert_user(User("u1", "alice", 1.0, 1.0, "t1"), audit)
    await store.insert_group(Group("g1", "zeta", 1.0, 1.0, ("write",)), audit)
    await store.insert_group(Group("g2", "alpha", 1.0, 1.0, ("read", "list")), audit)
    service = KeyService(store, Hasher())
    plain = (await service.create("plain")).record
    member = (await service.create("member", scopes=["chat"], user_id="u1")).record
    for group in ("g1", "g2"):
        assert await store.set_membership(member.id, group, True, audit)
    found = await store.find_by_hash(member.key_hash)
    assert found == await store.get_key(member.id)
    assert found is not None and found.team is not None
    assert [g[1] for g in found.groups] == ["alpha", "zeta"]
    assert found.team.allowed_ips == ("10.0.0.0/8",)
    assert await store.find_by_hash(plain.key_hash) == await store.get_key(plain.id)


async def test_closed_or_broken_store_raises_store_unavailable(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    not_a_db = db_path.parent / "garbage.db"
    not_a_db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreUnavailable):
        await Store.open(not_a_db)


async def test_concurrent_writers_in_one_process(db_path: Path) -> None:
    stores = [await Store.open(db_path) for _ in range(4)]
    try:
        services = [KeyService(s, Hasher()) for s in stores]
        await asyncio.gather(*(svc.create(f"k{i}-{n}") for i, svc in enumerate(services)
                               for n in range(50)))  # fmt: skip
        assert len(await stores[0].list_keys()) == 200
    finally:
        for s in stores:
            await s.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from keystile.core.keys import Hasher
    from keystile.manage.service import KeyService
    from keystile.store import Store

    async def main():
        async with await Store.open(sys.argv[1]) as store:
            service = KeyService(store, Hasher())
            for n in range(40):
                issued = await service.create(f"w{sys.argv[2]}-{n}")
                await service.update(issued.record.id, name=f"w{sys.argv[2]}-{n}-x")
                if n % 4 == 0:
                    await service.rotate(issued.record.id, grace=10)

    asyncio.run(main())
    """
)


async def test_concurrent_writer_processes_never_see_database_is_locked(db_path: Path) -> None:
    async with await Store.open(db_path):
        pass
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db_path), str(n)],
            stderr=subprocess.PIPE,
            env={**os.environ},
        )
        for n in range(4)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    async with await Store.open(db_path) as store:
        assert len(await store.list_keys(include_inactive=True)) == 4 * (40 + 10)
