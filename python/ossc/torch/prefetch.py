"""Fetching dataset items through the engine: a Batch is one engine fetch of many items at
once (each object whole, so the store's CRC-64 verifies it; adjacent tar members as one ranged
span); iteration keeps the batch being read and the next one in flight, so a worker holds at
most two batches (DatasetSettings' prefetch_objects / prefetch_bytes each)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, List, Sequence, Tuple

from ossc.batches import batches
from ossc.connector import (CREDENTIALS_POLL_S, OssModelConnector, _translated,
                            as_connector_error)
from ossc.native import FetchItem, OsscError, ffi, lib
from ossc.torch.data_object import DataObject
from ossc.torch.entries import Entry

# Tar members of a batch less than this apart are read in one span: the bytes between them
# cost less than another request (one round trip, on OSS ~10 ms, is ~10 MB at line rate).
SPAN_GAP = 1 << 20
# HEADs in flight while sizes of named objects (URIs, manifests) are looked up.
HEAD_THREADS = 16


def with_sizes(connector: OssModelConnector, entries: Sequence[Entry]) -> List[Entry]:
    """entries, each with its length: those without one get their object's size by HEAD."""
    unknown = [i for i, e in enumerate(entries) if e.length is None]
    if not unknown:
        return list(entries)
    connector.refresh_credentials()

    def head(entry: Entry) -> Entry:
        client = connector._client(entry.scheme, entry.bucket)
        with _translated():
            size, _ = client.head(entry.key)
        return entry.sized(size)

    out = list(entries)
    with ThreadPoolExecutor(min(HEAD_THREADS, len(unknown))) as pool:
        for i, entry in zip(unknown, pool.map(head, [entries[i] for i in unknown])):
            out[i] = entry
    return out


class Batch:
    """Entries of one bucket (sized), fetched together; get(i) waits for entry i only."""

    def __init__(self, connector: OssModelConnector, entries: Sequence[Entry]):
        self._connector = connector
        self.entries = list(entries)
        self._where: List[Tuple[int, int]] = [(-1, 0)] * len(self.entries)  # (span, start)
        self._buffers: List[bytearray] = []
        items: List[FetchItem] = []
        # Tar members in archive order, so that near ones share a span whatever order a
        # sampler asked for them in; whole objects one item each, in the order asked (the
        # engine fetches in item order).
        order = list(range(len(self.entries)))
        if all(e.name is not None for e in self.entries):
            order.sort(key=lambda i: (self.entries[i].key, self.entries[i].offset))
        for i in order:
            entry = self.entries[i]
            if entry.length == 0:
                continue
            last = items[-1] if items else None
            if (last is not None and entry.name is not None and last.key == entry.key
                    and entry.offset - (last.offset + last.length) <= SPAN_GAP):
                last.length = max(last.length, entry.offset + entry.length - last.offset)
            else:
                items.append(FetchItem(entry.key, entry.object_size, entry.offset,
                                       entry.length))
            self._where[i] = (len(items) - 1, entry.offset - items[-1].offset)
        for item in items:
            item.buffer = bytearray(item.length)
            self._buffers.append(item.buffer)
        self._fetch = None
        if items:
            first = self.entries[0]
            client = connector._client(first.scheme, first.bucket)
            connector.refresh_credentials()
            with _translated():
                self._fetch = client.fetch(items)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, i: int) -> DataObject:
        entry = self.entries[i]
        span, start = self._where[i]
        if span < 0:
            return DataObject(entry.item_key, 0, entry.label, b"", entry.bucket)
        err = ffi.new("ossc_error *")
        while True:
            self._connector.refresh_credentials()
            rc = lib.ossc_fetch_wait_range(self._fetch._handle, span, entry.offset,
                                           entry.length, int(CREDENTIALS_POLL_S * 1000), err)
            if rc == 0:
                break
            if rc != -1:
                raise as_connector_error(OsscError.from_c(err))
        view = memoryview(self._buffers[span])[start:start + entry.length]
        return DataObject(entry.item_key, entry.length, entry.label, view, entry.bucket)

    def close(self) -> None:
        """Cancels what is left and joins the fetch's threads; items already handed out keep
        their bytes."""
        if self._fetch is not None:
            self._fetch.close()
            self._fetch = None


def fetch_all(connector: OssModelConnector, entries: Sequence[Entry]) -> List[DataObject]:
    """The items of entries, in order, fetched at once (one engine fetch per bucket)."""
    entries = with_sizes(connector, entries)
    groups: Dict[Tuple[str, str], List[int]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault((entry.scheme, entry.bucket), []).append(i)
    out: List[DataObject] = [None] * len(entries)  # type: ignore[list-item]
    started = []
    try:
        for indices in groups.values():
            started.append((indices, Batch(connector, [entries[i] for i in indices])))
        for indices, batch in started:
            for j, i in enumerate(indices):
                out[i] = batch.get(j)
    finally:
        for _, batch in started:
            batch.close()
    return out


def _groups(connector: OssModelConnector, entries: Sequence[Entry], max_objects: int,
            max_bytes: int) -> Iterator[List[Entry]]:
    """entries cut into batches: at most max_objects, at most max_bytes (but at least one
    entry), one bucket each."""
    for start in range(0, len(entries), max_objects):
        window = with_sizes(connector, entries[start:start + max_objects])
        yield from batches(window, max_objects, max_bytes, lambda e: e.length,
                           lambda e: (e.scheme, e.bucket))


def iterate(connector: OssModelConnector, entries: Sequence[Entry], max_objects: int,
            max_bytes: int) -> Iterator[DataObject]:
    """The items of entries in order, the next batch fetched while this one is read."""
    groups = _groups(connector, entries, max_objects, max_bytes)
    ahead: "deque[Batch]" = deque()

    def fill() -> None:
        while len(ahead) < 2:
            group = next(groups, None)
            if group is None:
                return
            ahead.append(Batch(connector, group))

    try:
        fill()
        while ahead:
            batch = ahead[0]
            for i in range(len(batch)):
                yield batch.get(i)
            ahead.popleft().close()
            fill()
    finally:
        for batch in ahead:
            batch.close()
