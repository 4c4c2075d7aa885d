"""Tar archives for datasets: the index that lets a reader fetch one member with one ranged
read, how it is made from a tar (local, or in the store through ranged reads), and how a tar
and its index are made from a directory. `ossc tar build|index` and ossc.torch's from_tar use
it; nothing here needs torch.

The index is UTF-8 text, one line per regular member in archive order after a header line:

    ossc-tar-index 1 <tar size in bytes>
    <data offset> <size> <name>
    ...

<data offset> is where the member's bytes start in the tar (after its header blocks, GNU or
pax long names included), <size> their count, <name> the rest of the line (spaces allowed; a
name holding a newline is refused when the index is made). The tar's size lets a reader check
that the index belongs to the tar it reads: a tar replaced under the same key has another size
and the engine refuses the read.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, List, Tuple

MAGIC = "ossc-tar-index"
VERSION = 1
# Bytes a ranged reader fetches at once while it walks the headers of a tar in the store: the
# first read after a jump (over a large member's data) fetches HEADER_WINDOW, each read that
# goes on where the last ended twice as much, up to MAX_WINDOW; so small members' headers come
# many per request, and large members' data is skipped.
HEADER_WINDOW = 64 << 10
MAX_WINDOW = 8 << 20


class TarIndexError(ValueError):
    """A tar that cannot be indexed, or an index that cannot be read."""


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the member's data in the tar
    size: int


@dataclass(frozen=True)
class TarIndex:
    tar_size: int
    members: Tuple[Member, ...]

    def to_text(self) -> str:
        lines = [f"{MAGIC} {VERSION} {self.tar_size}"]
        lines += [f"{m.offset} {m.size} {m.name}" for m in self.members]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, data: bytes, source: str = "index") -> "TarIndex":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TarIndexError(f"{source} is not UTF-8 text: {exc}") from None
        lines = text.split("\n")
        head = lines[0].split(" ")
        if len(head) != 3 or head[0] != MAGIC:
            raise TarIndexError(f"{source} is not an ossc tar index (its first line should "
                                f"be '{MAGIC} {VERSION} <tar size>'; make one with `ossc tar "
                                "index`)")
        if head[1] != str(VERSION):
            raise TarIndexError(f"{source} is an ossc tar index of version {head[1]}; this "
                                f"ossc reads version {VERSION}")
        members = []
        for number, line in enumerate(lines[1:], start=2):
            if not line:
                continue
            parts = line.split(" ", 2)
            try:
                offset, size = int(parts[0]), int(parts[1])
                name = parts[2]
            except (IndexError, ValueError):
                raise TarIndexError(f"{source}, line {number}: expected '<offset> <size> "
                                    f"<name>', got {line[:80]!r}") from None
            members.append(Member(name, offset, size))
        return cls(int(head[2]), tuple(members))


def index_tar(fileobj: BinaryIO, tar_size: int, source: str = "tar") -> TarIndex:
    """The index of the tar read from fileobj (seekable: member data is skipped, not read)."""
    members: List[Member] = []
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                if "\n" in info.name:
                    raise TarIndexError(f"{source}: member name {info.name!r} holds a newline, "
                                        "which the index cannot hold")
                members.append(Member(info.name, info.offset_data, info.size))
    except tarfile.TarError as exc:
        raise TarIndexError(f"{source} is not a readable tar: {exc}") from None
    for m in members:
        if m.offset + m.size > tar_size:
            raise TarIndexError(f"{source} is truncated: member {m.name!r} ends at "
                                f"{m.offset + m.size}, past its {tar_size} bytes")
    return TarIndex(tar_size, tuple(members))


def index_local_tar(path: str) -> TarIndex:
    with open(path, "rb") as f:
        return index_tar(f, os.fstat(f.fileno()).st_size, path)


def build_tar(source_dir: str, tar_path: str) -> TarIndex:
    """Writes every regular file under source_dir (sorted, names relative to it, symlinks
    not followed) into a new tar at tar_path; returns its index."""
    files = []
    for root, dirs, names in os.walk(source_dir):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            if os.path.isfile(path) and not os.path.islink(path):
                files.append((path, os.path.relpath(path, source_dir).replace(os.sep, "/")))
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in files:
            info = tar.gettarinfo(path, arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return index_local_tar(tar_path)


class RangedReader(io.RawIOBase):
    """A read-only, seekable file over ranged reads of one object (read_range(offset, length)
    -> bytes), through a window that grows while reads are sequential: walking a tar's
    headers costs one request per window, not one per header."""

    def __init__(self, read_range, size: int):
        super().__init__()
        self._read_range = read_range
        self._size = size
        self._window = HEADER_WINDOW
        self._pos = 0
        self._buf_start = 0
        self._buf = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, out) -> int:
        out = memoryview(out).cast("B")
        n = min(len(out), self._size - self._pos)
        if n <= 0:
            return 0
        end_in_buf = self._buf_start + len(self._buf)
        if not (self._buf_start <= self._pos and self._pos + n <= end_in_buf):
            sequential = self._buf and self._pos == end_in_buf
            self._window = min(self._window * 2, MAX_WINDOW) if sequential else HEADER_WINDOW
            length = min(max(n, self._window), self._size - self._pos)
            self._buf = self._read_range(self._pos, length)
            self._buf_start = self._pos
        start = self._pos - self._buf_start
        out[:n] = self._buf[start:start + n]
        self._pos += n
        return n

