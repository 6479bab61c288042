"""Which key hashes the store holds, in about 2 bytes per key: a Bloom filter.

A well-formed key whose hash is not in the filter is certainly not stored, so a
spray of random (checksum-valid) keys is answered from memory instead of
becoming a spray of queries. About 1 in 1000 unknown keys passes the filter and
is looked up as before. Hashes are added as keys are created (the change log
tells every process); nothing is ever removed, and the filter is rebuilt from
the store when it fills up.
"""

from __future__ import annotations

import hashlib
import math

HASHES = 7  # bit positions per key
BITS_PER_KEY = 14.4  # with 7 positions: ~0.1% false positives at capacity
_MASK = 0xFFFFFFFF


class HashFilter:
    __slots__ = ("bits", "capacity", "count", "size")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1024)
        self.size = math.ceil(self.capacity * BITS_PER_KEY)
        self.bits = bytearray((self.size + 7) // 8)
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count > self.capacity

    @staticmethod
    def _number(digest: str) -> int:
        """32 bits per position, from the digest itself: stored hashes are hex
        SHA-256/HMAC digests, their bits already uniform."""
        try:
            return int(digest[: 8 * HASHES], 16)
        except ValueError:  # not hex: spread it ourselves
            return int(hashlib.sha256(digest.encode()).hexdigest()[: 8 * HASHES], 16)

    def add(self, digest: str) -> None:
        bits, size, number = self.bits, self.size, self._number(digest)
        for _ in range(HASHES):
            position = (number & _MASK) % size
            bits[position >> 3] |= 1 << (position & 7)
            number >>= 32
        self.count += 1

    def __contains__(self, digest: str) -> bool:
        """False: certainly not added. True: probably added."""
        bits, size, number = self.bits, self.size, self._number(digest)
        for _ in range(HASHES):  # most absent digests fail at the first bit
            position = (number & _MASK) % size
            if not bits[position >> 3] & (1 << (position & 7)):
                return False
            number >>= 32
        return True
