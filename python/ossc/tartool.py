"""`ossc tar build|index`: a tar and its index (ossc.tarindex) from a local directory or a
prefix in the store (its objects fetched a batch at a time), or the index of a tar already
made (a local file, or an object read by ranged reads: headers only, a window at a time).
Outputs are local paths or store URLs (s3://bucket/key, oss://bucket/key), which are written
locally first and uploaded whole."""

from __future__ import annotations

import io
import os
import sys
import tarfile
import tempfile
import time
from typing import Optional, Tuple

from ossc.batches import batches
from ossc.errors import EXIT_LOCAL, UserError, status_exit_code
from ossc.native import Client, FetchItem, OsscError, lib, relative_name
from ossc.progress import human_bytes
from ossc.tarindex import (RangedReader, TarIndex, TarIndexError, build_tar, index_local_tar,
                           index_tar)

EXIT_NOT_A_TAR = status_exit_code(lib.OSSC_E_PROTOCOL)  # the bytes are not what they claim
# Objects of a prefix fetched at once (and held in memory) while its tar is written.
BATCH_OBJECTS = 64
BATCH_BYTES = 64 << 20


def _store_url(target: str, prefix: bool = False) -> Optional[Tuple[str, str, str]]:
    """(scheme, bucket, key) of an oss:// or s3:// URL naming an object (or, with prefix, a
    prefix: the key may be empty or end in '/'); None for a local path."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        return None
    bucket, _, key = rest.partition("/")
    names_object = bool(key) and not key.endswith("/")
    if scheme not in ("oss", "s3") or not bucket or not (prefix or names_object):
        raise UserError(f"bad URL {target!r}: expected oss://bucket/key or s3://bucket/key "
                        "(or a local path)", status_exit_code(lib.OSSC_E_CONFIG))
    return scheme, bucket, key


def _client(scheme: str, bucket: str, settings: dict) -> Client:
    return Client(f"{scheme}://{bucket}/", settings)


class _Outputs:
    """Where results go: a local path is written beside it under a temporary name and renamed
    over it when whole (atomic, and no room needed elsewhere); a store URL is written to a
    private temporary file and uploaded."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.pending = []  # (local temporary path, final path or URL)

    def path_for(self, target: str) -> str:
        if _store_url(target) is None:
            parent = os.path.dirname(os.path.abspath(target))
            if not os.path.isdir(parent):
                raise UserError(f"cannot write {target}: {parent} is not a directory",
                                EXIT_LOCAL)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=parent)
            except OSError as exc:
                raise UserError(f"cannot write {target}: {exc.strerror}", EXIT_LOCAL) from exc
        else:
            fd, tmp = tempfile.mkstemp(prefix="ossc-tar-")
        os.close(fd)
        self.pending.append((tmp, target))
        return tmp

    def commit(self) -> None:
        umask = os.umask(0)
        os.umask(umask)
        while self.pending:
            tmp, target = self.pending[0]
            url = _store_url(target)
            if url is None:
                try:
                    os.chmod(tmp, 0o666 & ~umask)  # as a file made in place would be
                    os.replace(tmp, target)
                except OSError as exc:
                    raise UserError(f"cannot write {target}: {exc.strerror}", EXIT_LOCAL) \
                        from exc
            else:
                scheme, bucket, key = url
                _client(scheme, bucket, self.settings).upload_file(bucket, key, tmp)
                os.unlink(tmp)
            self.pending.pop(0)

    def close(self) -> None:
        """Removes the temporary files not committed (ours: made by mkstemp above)."""
        for tmp, _ in self.pending:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self.pending = []


def _index_store_tar(scheme: str, bucket: str, key: str, settings: dict) -> TarIndex:
    client = _client(scheme, bucket, settings)
    size, _ = client.head(key)

    def read_range(offset: int, length: int) -> bytes:
        buf = bytearray(length)
        with client.fetch([FetchItem(key, size, offset, length, buffer=buf)]) as fetch:
            fetch.wait()
        return bytes(buf)

    return index_tar(RangedReader(read_range, size), size, f"{scheme}://{bucket}/{key}")


def _tar_of_prefix(url: str, tar_path: str, settings: dict) -> TarIndex:
    """A tar of every object under the prefix url, named below it, in key order: each batch
    of objects fetched at once into memory, then written."""
    if not url.endswith("/"):
        url += "/"
    client = Client(url, settings)
    prefix = client.prefix
    objects = [o for o in client.list() if not o.key.endswith("/")]
    if not objects:
        raise UserError(f"nothing under {url}", status_exit_code(lib.OSSC_E_NOT_FOUND))
    try:
        names = [relative_name(o.key, prefix) for o in objects]
    except OsscError as exc:
        raise UserError(exc.message, status_exit_code(exc.code)) from exc
    now = int(time.time())
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        done = 0
        for batch in batches(objects, BATCH_OBJECTS, BATCH_BYTES, lambda o: o.size):
            buffers = [bytearray(o.size) for o in batch]
            items = [FetchItem(o.key, o.size, buffer=b) for o, b in zip(batch, buffers)
                     if o.size]
            if items:
                with client.fetch(items) as fetch:
                    fetch.wait()
            for name, buf in zip(names[done:done + len(batch)], buffers):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(buf), now, 0o644
                tar.addfile(info, io.BytesIO(buf))
            done += len(batch)
    return index_local_tar(tar_path)


def _report(index: TarIndex, tar: str, index_target: str) -> None:
    data = sum(m.size for m in index.members)
    print(f"{tar}: {len(index.members)} members, {human_bytes(data)} "
          f"({human_bytes(index.tar_size)} tar); index: {index_target}", file=sys.stderr)


def build(source: str, tar_target: str, index_target: str, settings: dict) -> int:
    _store_url(tar_target), _store_url(index_target)  # a bad URL fails before any work
    from_store = _store_url(source, prefix=True) is not None
    if not from_store and not os.path.isdir(source):
        raise UserError(f"{source} is not a directory (ossc tar build takes a local "
                        "directory or an oss:// or s3:// prefix)", EXIT_LOCAL)
    outputs = _Outputs(settings)
    try:
        tar_path = outputs.path_for(tar_target)
        index_path = outputs.path_for(index_target)
        try:
            if from_store:
                index = _tar_of_prefix(source, tar_path, settings)
            else:
                index = build_tar(source, tar_path)
        except OSError as exc:
            raise UserError(f"cannot read {exc.filename}: {exc.strerror}", EXIT_LOCAL) from exc
        except TarIndexError as exc:
            raise UserError(str(exc), EXIT_NOT_A_TAR) from exc
        with open(index_path, "w", encoding="utf-8") as f:
            f.write(index.to_text())
        outputs.commit()
    finally:
        outputs.close()
    _report(index, tar_target, index_target)
    return 0


def index(tar: str, index_target: str, settings: dict) -> int:
    url = _store_url(tar)
    _store_url(index_target)  # a bad URL fails before any work
    try:
        if url is None:
            if not os.path.isfile(tar):
                raise UserError(f"{tar}: no such file", EXIT_LOCAL)
            tar_index = index_local_tar(tar)
        else:
            tar_index = _index_store_tar(*url, settings)
    except TarIndexError as exc:
        raise UserError(str(exc), EXIT_NOT_A_TAR) from exc
    outputs = _Outputs(settings)
    try:
        with open(outputs.path_for(index_target), "w", encoding="utf-8") as f:
            f.write(tar_index.to_text())
        outputs.commit()
    finally:
        outputs.close()
    _report(tar_index, tar, index_target)
    return 0
