"""Read-ahead for a stream read sequentially in large readinto calls (connector.ObjectStream).

A direct read (direct_read.py) fetches only what the caller asked for, into the caller's
buffer, and nothing is in flight between two calls: every call waits for a fetch to start and
the store's first bytes (~2 ms against the local store; 8-11% of a read's time the machine
sat idle), where `ossc get` keeps all its transfers busy. Once a reader's large readinto
calls follow each other (each starting where the last ended, the first one from offset 0),
the next WINDOW bytes are fetched ahead, in segments of SEGMENT bytes, into staging buffers
the connector reuses (faulted once, so a copy out of them costs no page faults and no zeroed
pages). A read then waits for the segments it covers, copies them out, and tops the window
up again before it returns. Any other read drops what is ahead (cancelled, joined). The
price is one more copy of every byte read ahead (0.6-0.8 CPU s for 4 GiB here).

Bytes of a segment are handed out only once its whole fetch succeeded. A failed segment hands
out nothing: the read that needs it fetches its range directly, and fails with that fetch's
engine error if the range cannot be had (never with zeros in its place).
"""

from __future__ import annotations

import mmap
from collections import deque
from typing import Callable, Deque, List, Optional

from ossc import direct_read
from ossc.native import Client, Fetch, FetchItem, OsscError

# Bytes kept in flight ahead of a sequential reader: 128 MiB measured 0.91x and 0.93x `ossc get`
# where reads without read-ahead gave 0.85x and 0.88x in the same rounds; 16-64 MiB were
# slower, 256 and 512 MiB no faster (docs/BENCHMARKS.md).
WINDOW = 128 << 20
# Read ahead in segments of at least this, each fetched in pieces of direct_read.PIECE_MIN or
# more (as few ranged GETs as `ossc get` sends for the same bytes).
SEGMENT = 32 << 20
# Readers with larger buffers get no read-ahead (their staging would cost as much memory
# again, and one such read already keeps all transfers busy long enough to hide the gaps).
SEGMENT_MAX = 32 << 20


def private_memory(size: int, huge_pages: bool = True) -> mmap.mmap:
    """size bytes of private anonymous memory (in 2 MiB pages where the kernel allows). Not
    mmap.mmap(-1, size)'s default, a shared mapping: that is shmem, whose pages fault in
    through the page cache and get no huge pages unless shmem_enabled says so (it says
    "never" by default), which made the fetch threads' page faults most of their CPU."""
    mem = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    if huge_pages and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mem.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return mem


class StagingPool:
    """Reusable anonymous buffers of one size at a time (the segment size), up to keep_bytes
    of them, so that read-ahead memory is faulted once per connector, not once per read."""

    def __init__(self, keep_bytes: int):
        self.keep_bytes = keep_bytes
        self.free: List[mmap.mmap] = []

    def take(self, size: int) -> mmap.mmap:
        while self.free:
            buf = self.free.pop()
            if len(buf) == size:
                return buf
            buf.close()
        return private_memory(size)

    def give(self, buf: mmap.mmap) -> None:
        if sum(len(b) for b in self.free) + len(buf) <= self.keep_bytes:
            self.free.append(buf)
        else:
            buf.close()

    def close(self) -> None:
        for buf in self.free:
            buf.close()
        self.free = []


class _Segment:
    def __init__(self, offset: int, length: int, buf: mmap.mmap, fetch: Fetch):
        self.offset = offset
        self.length = length
        self.buf = buf
        self.fetch: Optional[Fetch] = fetch


class Readahead:
    """The segments fetched ahead of one stream's sequential reader."""

    def __init__(self, key: str, size: int, pool: StagingPool, transfers: int):
        self.key = key
        self.size = size
        self.pool = pool
        self.transfers = transfers
        self.segments: Deque[_Segment] = deque()
        # where the next read of the run starts: a first large read from the object's
        # start begins one (a reader that reads a header first begins it on its next)
        self.expect: Optional[int] = 0

    def continues(self, start: int) -> bool:
        """Whether a large read at start continues the run of the previous one."""
        return self.expect is not None and start == self.expect

    def take(self, start: int, out: memoryview, wait: Callable[[Fetch], None]) -> int:
        """Copies into out what the segments hold from start on, in order, waiting for each
        (wait(fetch) returns when it succeeded, raises its OsscError otherwise); returns how
        many bytes it copied (a prefix of out). Segments used up go back to the pool; a failed
        one ends the copy and drops everything ahead."""
        done = 0
        while self.segments and done < len(out):
            seg = self.segments[0]
            at = start + done
            if not seg.offset <= at < seg.offset + seg.length:
                self.drop()  # not the reader's next bytes: nothing ahead is of use
                break
            if seg.fetch is not None:
                try:
                    wait(seg.fetch)
                except OsscError:
                    # Nothing of it is handed out; the caller fetches the rest of its range
                    # itself, and fails with that fetch's error if the range cannot be had.
                    self.drop()
                    break
                except BaseException:
                    self.drop()
                    raise
                self._end_fetch(seg)
            n = min(len(out) - done, seg.offset + seg.length - at)
            out[done:done + n] = memoryview(seg.buf)[at - seg.offset:at - seg.offset + n]
            done += n
            if at + n == seg.offset + seg.length:
                self.segments.popleft()
                self.pool.give(seg.buf)
        return done

    def top_up(self, client: Client, end: int, buffer_size: int) -> None:
        """The run's next read starts at end: keeps [end, end + WINDOW) in flight, in
        segments of SEGMENT bytes or the reader's buffer_size if larger."""
        self.expect = end
        segment = max(SEGMENT, buffer_size)
        ahead = end if not self.segments else self.segments[-1].offset + self.segments[-1].length
        limit = min(self.size, end + max(WINDOW, buffer_size))
        while ahead < limit:
            length = min(segment, self.size - ahead)
            buf = self.pool.take(segment)
            ranges = direct_read.pieces(ahead, length, self.transfers)
            view = memoryview(buf)
            try:
                fetch = Fetch(client, [FetchItem(self.key, self.size, offset=o, length=n,
                                                 buffer=view[o - ahead:o - ahead + n])
                                       for o, n in ranges])
            except BaseException:
                view.release()  # buf is left to the garbage collector: a slice may live on
                raise           # in the traceback, and a pooled buffer must close cleanly
            view.release()
            self.segments.append(_Segment(ahead, length, buf, fetch))
            ahead += length

    def _end_fetch(self, seg: _Segment) -> None:
        if seg.fetch is not None:
            seg.fetch.close()  # joins its threads: nothing writes into seg.buf after this
            seg.fetch = None

    def drop(self) -> None:
        """Cancels and forgets everything ahead; the run must start again."""
        self.expect = None
        while self.segments:
            seg = self.segments.popleft()
            self._end_fetch(seg)
            self.pool.give(seg.buf)

    close = drop
