"""Ranges of an object fetched straight into a buffer the caller owns, for the connector's
streams (connector.ObjectStream).

A stream's prefetch lands in anonymous memory and every read copies out of it: for a reader
that pulls a whole object through one reused buffer that is a second copy of every byte (and
a page fault and a zeroed page per 4 KiB), which `ossc get` does not make. A large readinto
whose range the prefetch has not reached is instead cut into pieces fetched at once, each a
fetch item whose memory sink is the caller's buffer: the bytes go from the socket into it.

The engine verifies CRC-64 only for a whole-object item, so these ranges are checked here:
SequentialCrc hashes what a stream hands out in order from offset 0 and compares at the end.
"""

from __future__ import annotations

from typing import Callable, Optional

from ossc.native import Client, Fetch, FetchItem, OsscError, ffi, lib

def default_for(endpoint: str) -> bool:
    """Whether a connector for endpoint reads directly unless told: over plain HTTP (the
    scheme an endpoint without one gets), not HTTPS. Each direct read (and read-ahead
    segment) is a fetch of its own; its connections come from the client's pool
    (multi_pool.c), but fetches running at once each need their own, so over TLS a reader
    would pay handshakes that were never measured: only a plain-HTTP store was."""
    return not endpoint.strip().lower().startswith("https://")


# Each piece of a direct read is at least this long, and there are at most as many as the
# client has transfers. Smaller ranged GETs cost the store more per byte than they gain in
# parallelism: 1 MiB pieces took twice the time of 4 MiB ones against the local store, and
# with 4 MiB pieces it spent 5.6 CPU s serving the 4 GiB model where `ossc get`'s 32 MiB
# chunks cost it 4.1-4.6 s (on 2 cores the store's CPU is most of a read's time).
PIECE_MIN = 32 << 20


def pieces(start: int, length: int, transfers: int) -> list:
    """[(offset, length)] covering [start, start+length) in at most `transfers` pieces."""
    count = max(1, min(transfers, length // PIECE_MIN))
    step = -(-length // count)
    return [(start + o, min(step, length - o)) for o in range(0, length, step)]


def fetch_into(client: Client, key: str, object_size: int, ranges: list, views: list,
               wait_step: Callable[[], None], poll_s: float) -> None:
    """Fetches each (offset, length) of ranges into the writable memoryview of the same
    index, all at once; returns when all are in, raises OsscError on the first failure.
    wait_step runs between polls (credential refresh). Nothing writes into the views after
    this returns or raises: the fetch is cancelled and its threads joined first."""
    items = [FetchItem(key, object_size, offset=o, length=n, buffer=v)
             for (o, n), v in zip(ranges, views)]
    fetch = client.fetch(items)
    try:
        wait_for(fetch, wait_step, poll_s)
    finally:
        fetch.close()


def wait_for(fetch: Fetch, wait_step: Callable[[], None], poll_s: float) -> None:
    """Returns when fetch succeeded, raises its OsscError when it failed; wait_step runs
    every poll_s while it waits."""
    while not fetch.wait(poll_s):
        wait_step()


class SequentialCrc:
    """CRC-64 of the bytes a stream hands out, while they come in order from offset 0; at the
    object's end it must equal the store's (x-oss-hash-crc64ecma). A read out of order stops
    the check for that pass (such ranges are served unverified, as ranged GETs are)."""

    def __init__(self, key: str, size: int, expected: int):
        self.key = key
        self.size = size
        self.expected = expected
        self.next: Optional[int] = 0
        self.crc = 0

    def update(self, offset: int, data: memoryview) -> None:
        """data was handed out at offset; raises OsscError (OSSC_E_INTEGRITY) when it ends
        the object and the whole does not match. A read from offset 0 starts a new pass."""
        if not len(data):
            return
        if offset == 0:
            self.next, self.crc = 0, 0
        if offset != self.next:
            self.next = None
            return
        self.crc = lib.ossc_crc64(self.crc, ffi.from_buffer(data), len(data))
        self.next += len(data)
        if self.next == self.size:
            self.next = None
            if self.crc != self.expected:
                raise OsscError(lib.OSSC_E_INTEGRITY, f"{self.key}: CRC-64 mismatch over "
                                f"the bytes read (store says {self.expected}, got "
                                f"{self.crc}): some came corrupt")
