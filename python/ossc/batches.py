"""Cutting a run of objects into batches fetched at once: bounded in count and bytes (a batch
holds at least one object, however large), and cut where a key function changes (a batch of
one engine fetch must be one bucket's)."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, List, Optional, TypeVar

T = TypeVar("T")


def batches(items: Iterable[T], max_count: int, max_bytes: int, size: Callable[[T], int],
            same: Optional[Callable[[T], object]] = None) -> Iterator[List[T]]:
    batch: List[T] = []
    total = 0
    for item in items:
        if batch and (len(batch) == max_count or total + size(item) > max_bytes
                      or (same is not None and same(item) != same(batch[0]))):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += size(item)
    if batch:
        yield batch
