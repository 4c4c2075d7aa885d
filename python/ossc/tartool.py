"""`ossc tar build|index`: a tar and its index (ossc.tarindex) from a local directory, or the
index of a tar already made (a local file, or an object read by ranged reads: headers only, a
window at a time). Outputs are local paths or store URLs (s3://bucket/key, oss://bucket/key),
which are written locally first and uploaded whole."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Optional, Tuple

from ossc.errors import EXIT_LOCAL, UserError, status_exit_code
from ossc.native import Client, FetchItem, lib
from ossc.progress import human_bytes
from ossc.tarindex import RangedReader, TarIndex, TarIndexError, build_tar, index_local_tar, \
    index_tar

EXIT_NOT_A_TAR = status_exit_code(lib.OSSC_E_PROTOCOL)  # the bytes are not what they claim


def _store_url(target: str) -> Optional[Tuple[str, str, str]]:
    """(scheme, bucket, key) of an oss:// or s3:// URL naming an object; None for a path."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        return None
    bucket, _, key = rest.partition("/")
    if scheme not in ("oss", "s3") or not bucket or not key or key.endswith("/"):
        raise UserError(f"bad URL {target!r}: expected oss://bucket/key or s3://bucket/key "
                        "(or a local path)", status_exit_code(lib.OSSC_E_CONFIG))
    return scheme, bucket, key


def _client(scheme: str, bucket: str, settings: dict) -> Client:
    return Client(f"{scheme}://{bucket}/", settings)


class _Outputs:
    """Where results go: a local path is written in place (through a temporary name, renamed
    when whole); a store URL is written to a private temporary file and uploaded."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.tmpdir = tempfile.mkdtemp(prefix="ossc-tar-")
        self.pending = []  # (local temporary path, final path or URL)

    def path_for(self, target: str) -> str:
        if _store_url(target) is None:
            parent = os.path.dirname(os.path.abspath(target))
            if not os.path.isdir(parent):
                raise UserError(f"cannot write {target}: {parent} is not a directory",
                                EXIT_LOCAL)
        tmp = os.path.join(self.tmpdir, str(len(self.pending)))
        self.pending.append((tmp, target))
        return tmp

    def commit(self) -> None:
        for tmp, target in self.pending:
            url = _store_url(target)
            if url is None:
                try:
                    shutil.move(tmp, target)
                except OSError as exc:
                    raise UserError(f"cannot write {target}: {exc.strerror}", EXIT_LOCAL) \
                        from exc
                continue
            scheme, bucket, key = url
            _client(scheme, bucket, self.settings).upload_file(bucket, key, tmp)

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)  # ours: made by mkdtemp above


def _index_store_tar(scheme: str, bucket: str, key: str, settings: dict) -> TarIndex:
    client = _client(scheme, bucket, settings)
    size, _ = client.head(key)

    def read_range(offset: int, length: int) -> bytes:
        buf = bytearray(length)
        with client.fetch([FetchItem(key, size, offset, length, buffer=buf)]) as fetch:
            fetch.wait()
        return bytes(buf)

    return index_tar(RangedReader(read_range, size), size, f"{scheme}://{bucket}/{key}")


def _report(index: TarIndex, tar: str, index_target: str) -> None:
    data = sum(m.size for m in index.members)
    print(f"{tar}: {len(index.members)} members, {human_bytes(data)} "
          f"({human_bytes(index.tar_size)} tar); index: {index_target}", file=sys.stderr)


def build(source: str, tar_target: str, index_target: str, settings: dict) -> int:
    _store_url(tar_target), _store_url(index_target)  # a bad URL fails before any work
    if not os.path.isdir(source):
        raise UserError(f"{source} is not a directory (ossc tar build takes a local "
                        "directory)", EXIT_LOCAL)
    outputs = _Outputs(settings)
    try:
        tar_path = outputs.path_for(tar_target)
        index_path = outputs.path_for(index_target)
        try:
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
