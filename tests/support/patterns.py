"""Checkable bytes for fetch tests."""

import hashlib


def pattern(n: int, seed: int) -> bytes:
    """A hash chain: a block written at the wrong offset, shifted or twice is caught."""
    out, block, i = bytearray(), hashlib.sha256(str(seed).encode()).digest(), 0
    while len(out) < n:
        block = hashlib.sha256(block + i.to_bytes(8, "little")).digest()
        out += block * 32
        i += 1
    return bytes(out[:n])
