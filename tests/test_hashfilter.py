import hashlib
import secrets

from keystile.core.hashfilter import HashFilter


def digest() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def test_what_was_added_is_always_found() -> None:
    hashes = HashFilter(10_000)
    added = [digest() for _ in range(10_000)]
    for value in added:
        hashes.add(value)
    assert all(value in hashes for value in added)
    assert hashes.count == 10_000 and not hashes.full


def test_false_positives_stay_near_one_in_a_thousand_at_capacity() -> None:
    hashes = HashFilter(20_000)
    for _ in range(20_000):
        hashes.add(digest())
    false = sum(digest() in hashes for _ in range(50_000))
    assert false / 50_000 < 0.003


def test_size_is_about_two_bytes_per_key() -> None:
    assert len(HashFilter(1_000_000).bits) < 2 * 1_000_000


def test_a_digest_that_is_not_hex_still_works() -> None:
    hashes = HashFilter(100)
    hashes.add("not-hex-at-all")
    assert "not-hex-at-all" in hashes and "not-hex-either" not in hashes
