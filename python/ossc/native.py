"""cffi bindings to libossc, the C fetch engine (ABI mode: nothing is compiled at install).

The declarations are the public header ossc.h's, between its CFFI markers (binding.py: parsed
ahead of time while they match the header found), so the binding cannot drift from the library.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from . import binding

_PACKAGE_DIR = Path(__file__).resolve().parent
# A source checkout: python/ossc/ -> the repository root.
_SOURCE_ROOT = _PACKAGE_DIR.parent.parent


def _candidates(name: str, env: str, source_paths: Sequence[Path]) -> list[Path]:
    override = os.environ.get(env)
    if override:
        return [Path(override)]
    return [_PACKAGE_DIR / name, *source_paths]


def _load():
    header_paths = _candidates("ossc.h", "OSSC_HEADER", [_SOURCE_ROOT / "preload/include/ossc.h"])
    header = next((p for p in header_paths if p.is_file()), None)
    if header is None:
        raise ImportError("ossc.h not found; tried: " + ", ".join(map(str, header_paths)))
    ffi, how = binding.ffi_for(header)
    lib_paths = _candidates("libossc.so", "OSSC_LIBRARY", [_SOURCE_ROOT / "build/libossc.so"])
    errors = []
    for path in lib_paths:
        if not path.is_file():
            errors.append(f"{path} (missing)")
            continue
        try:
            return ffi, how, ffi.dlopen(str(path)), path
        except OSError as exc:
            errors.append(f"{path} ({exc})")
    raise ImportError("libossc.so could not be loaded; tried: " + "; ".join(errors))


ffi, BINDING, lib, LIBRARY_PATH = _load()  # BINDING: "precompiled" or "parsed" (binding.py)


def preload_library() -> Path:
    """libossc_preload.so, the shim for LD_PRELOAD: next to libossc.so (or OSSC_PRELOAD)."""
    paths = _candidates("libossc_preload.so", "OSSC_PRELOAD",
                        [LIBRARY_PATH.parent / "libossc_preload.so"])
    for path in paths:
        if path.is_file():
            return path.resolve()
    raise FileNotFoundError("libossc_preload.so not found; tried: " + ", ".join(map(str, paths)))


def owner_program() -> Path:
    """ossc-owner, the program that owns sessions: next to libossc.so (or OSSC_OWNER)."""
    paths = _candidates("ossc-owner", "OSSC_OWNER", [LIBRARY_PATH.parent / "ossc-owner"])
    for path in paths:
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    raise FileNotFoundError("ossc-owner not found; tried: " + ", ".join(map(str, paths)))


def session_dir(model_dir: str) -> str:
    """Where the session for model_dir lives in /dev/shm (as the engine and the shim name
    it; a planted directory there makes them use the next name)."""
    return _take_string(lib.ossc_session_dir(os.fsencode(model_dir)))


def sessions(model_dir: Optional[str] = None) -> list:
    """This uid's sessions on the node, or the one serving model_dir, as dicts (see
    ossc_sessions_json in ossc.h)."""
    import json

    err = ffi.new("ossc_error *")
    out = lib.ossc_sessions_json(os.fsencode(model_dir) if model_dir else ffi.NULL, err)
    if out == ffi.NULL:
        raise OsscError.from_c(err)
    return json.loads(_take_string(out))


def reap_session(path: str, force: bool = False) -> int:
    """Removes a dead owner's session: 1 removed, 0 kept (in use), 2 its owner lives."""
    return lib.ossc_session_reap(os.fsencode(path), int(force))


def use_session(model_dir: str, shared_group: str = "") -> Optional[int]:
    """Counts this process as a user of the live session serving model_dir (this uid's, or a
    member's of shared_group), as the shim does for every process that reads it: an fd
    holding LOCK_SH on its users file (close it to leave). None if no live session serves
    model_dir."""
    fd = lib.ossc_session_use(os.fsencode(model_dir), shared_group.encode())
    return fd if fd >= 0 else None


STATUS_NAMES = {
    getattr(lib, name): name for name in dir(lib) if name.startswith("OSSC_E_") or name == "OSSC_OK"
}


class OsscError(Exception):
    """A failure reported by the engine: code (an OSSC_E_* value), name and one-line message."""

    def __init__(self, code: int, message: str, http_status: int = 0, server_code: str = "",
                 sys_errno: int = 0):
        super().__init__(message)
        self.code = code
        self.name = ffi.string(lib.ossc_status_name(code)).decode()
        self.message = message
        self.http_status = http_status
        self.server_code = server_code
        self.sys_errno = sys_errno

    @classmethod
    def from_c(cls, err) -> "OsscError":
        return cls(err.code, ffi.string(err.message).decode("utf-8", "replace"),
                   err.http_status, ffi.string(err.server_code).decode("utf-8", "replace"),
                   err.sys_errno)


def _check(rc: int, err) -> None:
    if rc != 0:
        raise OsscError.from_c(err)


def _c_strings(items: Iterable[str]):
    """A char*[] and the buffers that keep it alive."""
    bufs = [ffi.new("char[]", s.encode()) for s in items]
    return ffi.new("const char *[]", bufs) if bufs else ffi.NULL, len(bufs), bufs


def _take_string(ptr) -> str:
    try:
        return ffi.string(ptr).decode()
    finally:
        lib.ossc_free(ptr)


def resolve_settings(url: Optional[str], overrides: Sequence[str],
                     env: Optional[Mapping[str, str]] = None) -> dict:
    """The settings a client for url would use ("key=value" overrides > env > config file >
    defaults), in config-file form. env None: this process's environment."""
    import json

    ov, n_ov, keep_ov = _c_strings(overrides)
    envp = keep_env = ffi.NULL
    if env is not None:
        keep_env = [ffi.new("char[]", f"{k}={v}".encode("utf-8", "surrogateescape"))
                    for k, v in env.items()]
        envp = ffi.new("const char *[]", keep_env + [ffi.NULL])
    err = ffi.new("ossc_error *")
    out = lib.ossc_settings_json(url.encode() if url else ffi.NULL, ov, n_ov, envp, err)
    if out == ffi.NULL:
        raise OsscError.from_c(err)
    return json.loads(_take_string(out))


def relative_name(key: str, prefix: str) -> Optional[str]:
    """Where key goes in a directory that mirrors prefix; None for a directory marker. A key
    that would land outside the directory raises OsscError (OSSC_E_PROTOCOL): the engine's
    one check (ossc_relative_name), the one MODEL_DIR gets."""
    c_key = ffi.new("char[]", key.encode("utf-8", "surrogateescape"))
    rel = ffi.new("const char **")
    err = ffi.new("ossc_error *")
    _check(lib.ossc_relative_name(c_key, prefix.encode("utf-8", "surrogateescape"), rel, err),
           err)
    return None if rel[0] == ffi.NULL else ffi.string(rel[0]).decode("utf-8", "surrogateescape")


def crc64(data: bytes, crc: int = 0) -> int:
    """CRC-64/XZ as OSS reports it in x-oss-hash-crc64ecma."""
    return lib.ossc_crc64(crc, data, len(data))


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


@dataclass
class FetchItem:
    """A byte range of an object and its sink: fd at fd_offset, or a writable buffer."""

    key: str
    object_size: int
    offset: int = 0
    length: Optional[int] = None  # None: to the end of the object
    fd: int = -1
    fd_offset: int = 0
    buffer: Optional[bytearray] = None


class Client:
    """A connection to one store URL (oss://bucket/prefix/ or s3://bucket/prefix/).

    settings are overrides ("chunkSize": "4MiB", ...) on top of the config file and the
    environment, resolved by the engine."""

    def __init__(self, url: str, settings: Optional[dict] = None):
        self._settings = dict(settings or {})
        self._siblings: dict = {}
        overrides = [f"{k}={v}" for k, v in (settings or {}).items() if v is not None]
        arr, n, keep = _c_strings(overrides)
        err = ffi.new("ossc_error *")
        handle = lib.ossc_client_new(url.encode(), arr, n, err)
        if handle == ffi.NULL:
            raise OsscError.from_c(err)
        self._handle = ffi.gc(handle, lib.ossc_client_free)
        self.url = url

    @property
    def prefix(self) -> str:
        return ffi.string(lib.ossc_client_prefix(self._handle)).decode()

    def settings(self) -> dict:
        import json

        return json.loads(_take_string(lib.ossc_client_settings_json(self._handle)))

    def list(self, prefix: Optional[str] = None) -> list[ObjectInfo]:
        out = ffi.new("ossc_listing **")
        err = ffi.new("ossc_error *")
        _check(lib.ossc_list(self._handle, prefix.encode() if prefix is not None else ffi.NULL,
                             out, err), err)
        return self._take_listing(out)

    def list_fast(self, prefix: Optional[str] = None, threads: int = 0) -> list[ObjectInfo]:
        """The same objects as list(), key ranges listed concurrently (ossc_list_fast)."""
        out = ffi.new("ossc_listing **")
        err = ffi.new("ossc_error *")
        _check(lib.ossc_list_fast(self._handle,
                                  prefix.encode() if prefix is not None else ffi.NULL, threads,
                                  out, err), err)
        return self._take_listing(out)

    @staticmethod
    def _take_listing(out) -> list[ObjectInfo]:
        listing = out[0]
        try:
            return [ObjectInfo(ffi.string(o.key).decode("utf-8", "surrogateescape"), o.size,
                               ffi.string(o.etag).decode().strip('"'))
                    for o in listing.objects[0:listing.count]]
        finally:
            lib.ossc_listing_free(listing)

    def head(self, key: str) -> tuple[int, Optional[int]]:
        """(size, CRC-64 or None when the store sends none)."""
        size, crc, has = ffi.new("uint64_t *"), ffi.new("uint64_t *"), ffi.new("int *")
        err = ffi.new("ossc_error *")
        _check(lib.ossc_head(self._handle, key.encode(), size, crc, has, err), err)
        return size[0], crc[0] if has[0] else None

    def sign(self, method: str, key: Optional[str], query: Sequence[str] = (),
             headers: Sequence[str] = (), when: Optional[int] = None) -> tuple[str, dict]:
        """The URL and headers of the request the engine would send, signed at `when`."""
        q, nq, keep_q = _c_strings(query)
        h, nh, keep_h = _c_strings(headers)
        err = ffi.new("ossc_error *")
        out = lib.ossc_sign_request(self._handle, method.encode(),
                                    key.encode() if key else ffi.NULL, q, nq, h, nh,
                                    int(time.time() if when is None else when), err)
        if out == ffi.NULL:
            raise OsscError.from_c(err)
        lines = _take_string(out).splitlines()
        return lines[0], dict(line.split(": ", 1) for line in lines[1:])

    def fetch(self, items: Sequence[FetchItem]) -> "Fetch":
        return Fetch(self, items)

    # ---- writes: bucket names the client's bucket (or another one of the same store, reached
    # through a client with the same settings)

    @property
    def bucket(self) -> str:
        return self.url.partition("://")[2].partition("/")[0]

    def _in(self, bucket: str) -> "Client":
        if not bucket or bucket == self.bucket:
            return self
        sibling = self._siblings.get(bucket)
        if sibling is None:
            scheme = self.url.partition("://")[0]
            sibling = self._siblings[bucket] = Client(f"{scheme}://{bucket}/", self._settings)
        return sibling

    def put_object(self, bucket: str, key: str, data) -> None:
        """data (bytes or any buffer) as the object bucket/key, in one verified PutObject."""
        view = ffi.from_buffer(data)
        err = ffi.new("ossc_error *")
        _check(lib.ossc_put_object(self._in(bucket)._handle, _key(key), view, len(view), err),
               err)

    def upload_file(self, bucket: str, key: str, path: str) -> None:
        """The local file at path as bucket/key: one PutObject below upload.partSize, else a
        multipart upload with parallel parts (aborted if any part fails)."""
        err = ffi.new("ossc_error *")
        _check(lib.ossc_upload_file(self._in(bucket)._handle, _key(key), os.fsencode(path),
                                    err), err)

    def delete_object(self, bucket: str, key: str) -> None:
        err = ffi.new("ossc_error *")
        _check(lib.ossc_delete_object(self._in(bucket)._handle, _key(key), err), err)

    def copy_object(self, bucket: str, src_key: str, dst_key: str) -> None:
        """Server-side copy of bucket/src_key to bucket/dst_key (up to the store's copy limit:
        1 GB on OSS, 5 GB on S3)."""
        err = ffi.new("ossc_error *")
        _check(lib.ossc_copy_object(self._in(bucket)._handle, _key(src_key), _key(dst_key),
                                    err), err)

    def open_upload(self, bucket: str, key: str) -> "UploadStream":
        """A write-only stream to bucket/key; see UploadStream."""
        return UploadStream(self._in(bucket), key)


class Fetch:
    """Background download of many ranges; poll stats(), then wait()."""

    def __init__(self, client: Client, items: Sequence[FetchItem]):
        self._handle = None
        self._client = client  # the engine uses it until the fetch is freed
        self._keep = []
        c_items = ffi.new("ossc_fetch_item[]", len(items))
        for i, item in enumerate(items):
            length = item.object_size - item.offset if item.length is None else item.length
            key = ffi.new("char[]", item.key.encode("utf-8", "surrogateescape"))
            self._keep.append(key)
            c = c_items[i]
            c.key, c.object_size, c.offset, c.length = key, item.object_size, item.offset, length
            c.fd, c.fd_offset = item.fd, item.fd_offset
            if item.buffer is not None:
                if len(item.buffer) < length:
                    raise ValueError(f"buffer for {item.key} is smaller than {length} bytes")
                buf = ffi.from_buffer(item.buffer)
                self._keep.append(buf)
                c.mem = buf
        err = ffi.new("ossc_error *")
        handle = lib.ossc_fetch_start(client._handle, c_items, len(items), ffi.NULL, ffi.NULL,
                                      err)
        if handle == ffi.NULL:
            raise OsscError.from_c(err)
        self._handle = handle

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True when finished (raises OsscError on failure), False on timeout."""
        err = ffi.new("ossc_error *")
        rc = lib.ossc_fetch_wait(self._handle, -1 if timeout is None else int(timeout * 1000), err)
        if rc == -1:
            return False
        _check(rc, err)
        return True

    def stats(self):
        st = ffi.new("ossc_fetch_stats *")
        lib.ossc_fetch_stats_get(self._handle, st)
        return st[0]

    def item_error(self, index: int) -> Optional[OsscError]:
        err = ffi.new("ossc_error *")
        return OsscError.from_c(err) if lib.ossc_fetch_item_error(self._handle, index, err) else None

    def cancel(self) -> None:
        lib.ossc_fetch_cancel(self._handle)

    def close(self) -> None:
        if self._handle is not None:
            lib.ossc_fetch_free(self._handle)
            self._handle = None
            for obj in self._keep:  # let callers close the buffers they lent us (mmaps)
                ffi.release(obj)
            self._keep = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def _key(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


class UploadStream(io.RawIOBase):
    """A write-only stream that becomes one object: bytes fill upload.partSize parts, sent
    upload.concurrency at once in the background (a multipart upload; one PutObject for an
    object smaller than a part). close() completes it: the object appears whole, or not at
    all. abort() (and leaving a `with` block on an exception, or dropping the stream unclosed)
    abandons it: nothing appears and the store keeps no parts."""

    def __init__(self, client: Client, key: str):
        super().__init__()
        err = ffi.new("ossc_error *")
        handle = lib.ossc_upload_start(client._handle, _key(key), err)
        if handle == ffi.NULL:
            raise OsscError.from_c(err)
        self._client = client  # the engine uses it until the upload is freed
        self._handle = handle
        self._pos = 0
        self.key = key
        self.name = f"{client.url.partition('://')[0]}://{client.bucket}/{key}"

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self._handle is None:
            raise ValueError("write to a closed upload")
        view = ffi.from_buffer(data)
        err = ffi.new("ossc_error *")
        rc = lib.ossc_upload_write(self._handle, view, len(view), err)
        if rc:
            self.abort()
            raise OsscError.from_c(err)
        self._pos += len(view)
        return len(view)

    def tell(self) -> int:
        return self._pos

    def abort(self) -> None:
        """Abandons the upload: nothing appears under the key."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            lib.ossc_upload_abort(handle)
            lib.ossc_upload_free(handle)
        super().close()

    def close(self) -> None:
        """Sends what is left and completes the object (raises OsscError if it could not:
        then nothing is under the key)."""
        if self._handle is None:
            super().close()
            return
        handle, self._handle = self._handle, None
        err = ffi.new("ossc_error *")
        try:
            rc = lib.ossc_upload_finish(handle, err)
        finally:
            lib.ossc_upload_free(handle)
            super().close()
        _check(rc, err)

    def __exit__(self, typ, exc, tb):
        if typ is not None:
            self.abort()
        else:
            self.close()

    def __del__(self):
        self.abort()  # never complete a stream nobody closed: it may be partial
