"""DataObject: one dataset item, as osstorchconnector hands them to `transform`: key, size,
label, and a read-only, seekable view of bytes already fetched."""

from __future__ import annotations

import io
from typing import Optional

from ossc.connector import seek_position


class DataObject:
    """An object (or tar member) whose bytes are in memory: `key` (the object's key in its
    bucket, or the member's name), `bucket`, `size`, `label` (the manifest's, else ""), and
    read/readinto/seek/tell over the bytes. Picklable (DataLoader workers send items to the
    main process): a pickle carries the bytes."""

    __slots__ = ("key", "bucket", "size", "label", "_view", "_pos")

    def __init__(self, key: str, size: int, label: str = "", data=b"", bucket: str = ""):
        self.key = key
        self.bucket = bucket
        self.size = size
        self.label = label
        self._view: Optional[memoryview] = memoryview(data).toreadonly()
        self._pos = 0

    def _data(self) -> memoryview:
        if self._view is None:
            raise ValueError(f"I/O operation on closed DataObject {self.key!r}")
        return self._view

    def read(self, count: int = -1) -> bytes:
        view = self._data()
        end = self.size if count is None or count < 0 else min(self.size, self._pos + count)
        if self._pos >= end:
            return b""
        out = view[self._pos:end].tobytes()
        self._pos = end
        return out

    def readinto(self, buf) -> int:
        view = self._data()
        out = memoryview(buf).cast("B")
        n = max(0, min(len(out), self.size - self._pos))
        out[:n] = view[self._pos:self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._data()
        self._pos = seek_position(self._pos, self.size, offset, whence)
        return self._pos

    def tell(self) -> int:
        self._data()
        return self._pos

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def copy(self) -> "DataObject":
        """Another reader of the same bytes, at position 0."""
        return DataObject(self.key, self.size, self.label, self._data(), self.bucket)

    def close(self) -> int:
        self._view = None
        return 0

    @property
    def closed(self) -> bool:
        return self._view is None

    def __enter__(self) -> "DataObject":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        return (DataObject, (self.key, self.size, self.label, self._data().tobytes(),
                             self.bucket))

    def __repr__(self) -> str:
        return f"<ossc.torch.DataObject {self.key!r} size={self.size} label={self.label!r}>"
