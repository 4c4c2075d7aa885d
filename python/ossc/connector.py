"""OssModelConnector: a drop-in for Aliyun's OSS Model Connector Python API, over libossc.

    from ossc import OssModelConnector          # was: from ossmodelconnector import ...
    connector = OssModelConnector(endpoint=ENDPOINT, cred_provider=provider)
    objs = connector.list("bucket", "model/", fast=True)
    with connector.open("oss://bucket/model/config.json") as f:
        header = f.read(8)
    connector.prepare_directory("oss://bucket/model/", "/tmp/model")

Each open starts a background prefetch of the whole object into anonymous memory, in open
order (PREFETCH_STREAMS at a time, the rest queued); a read waits only for the chunks it needs,
which go to the front of the queue, and copies once, into the caller's buffer. A readinto of a
large buffer (DIRECT_READ_MIN) whose range the prefetch has not reached is fetched straight
into that buffer instead (direct_read.py; over plain HTTP unless direct_reads says): one copy
from the socket, as `ossc get` makes into its files; a run of such reads, each where the last
ended, has the next bytes read ahead (readahead.py). Errors are ConnectorError subclasses of
OsscError with the engine's class (kind) in the message.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ossc import direct_read, native, readahead
from ossc.native import Client, FetchItem, OsscError, ffi, lib

# How often (at most) a cred_provider is asked for credentials, and how long a blocked read
# waits before asking again.
CREDENTIALS_POLL_S = 1.0
# Streams whose prefetch runs at once; the others wait in open order.
PREFETCH_STREAMS = 2
# Objects from this size on are held in transparent huge pages where the kernel allows.
HUGE_PAGES_FROM = 4 << 20
# A readinto into a buffer of at least this many bytes, whose range the stream's prefetch has
# not reached, is fetched straight into the buffer (direct_read.py).
DIRECT_READ_MIN = 8 << 20
# A running prefetch gives way to such a read (is cancelled, keeping what landed) while it has
# fetched no more than this beyond the read: what it has in flight is then wasted, at most this.
GIVE_WAY_MAX = 256 << 20
# A stream whose prefetch gave way fills other reads into its memory in steps of this.
FILL_STEP = 4 << 20
# Reads of bytes known to be in memory make no engine call; those crossing a multiple of this
# check whether a queued prefetch may start.
KNOWN_CHECK_STEP = 4 << 20

_KINDS = {
    lib.OSSC_E_CONFIG: "config",
    lib.OSSC_E_CREDENTIALS: "credentials",
    lib.OSSC_E_AUTH: "refused",
    lib.OSSC_E_NOT_FOUND: "not found",
    lib.OSSC_E_NETWORK: "network",
    lib.OSSC_E_PROTOCOL: "protocol",
    lib.OSSC_E_INTEGRITY: "integrity",
    lib.OSSC_E_IO: "io",
    lib.OSSC_E_CANCELLED: "cancelled",
    lib.OSSC_E_NOMEM: "memory",
    lib.OSSC_E_SERVER: "server",
    lib.OSSC_E_CONFLICT: "conflict",
    lib.OSSC_E_NO_SPACE: "no space",
}


class ConnectorError(OsscError):
    """An OsscError with the engine's class as `kind` ("credentials", "refused", "not found",
    "network", "integrity", ...) and in the message: "[refused] listing s3://b/: 403 ..."."""

    kind = "error"

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


class ConfigError(ConnectorError, ValueError):
    kind = "config"


class CredentialsError(ConnectorError):
    kind = "credentials"


class RefusedError(ConnectorError, PermissionError):
    kind = "refused"


class NotFoundError(ConnectorError, FileNotFoundError):
    kind = "not found"


class NetworkError(ConnectorError, ConnectionError):
    kind = "network"


class IntegrityError(ConnectorError):
    kind = "integrity"


_CLASSES = {
    lib.OSSC_E_CONFIG: ConfigError,
    lib.OSSC_E_CREDENTIALS: CredentialsError,
    lib.OSSC_E_AUTH: RefusedError,
    lib.OSSC_E_NOT_FOUND: NotFoundError,
    lib.OSSC_E_NETWORK: NetworkError,
    lib.OSSC_E_INTEGRITY: IntegrityError,
}


def _error_class(code: int) -> type:
    if code in _CLASSES:
        return _CLASSES[code]
    return type(f"{_KINDS.get(code, 'error').title().replace(' ', '')}Error",
                (ConnectorError,), {"kind": _KINDS.get(code, "error")})


_OTHER_CLASSES: Dict[int, type] = {}


def as_connector_error(exc: OsscError) -> ConnectorError:
    """The connector's exception for an engine error (same code, message and details)."""
    if isinstance(exc, ConnectorError):
        return exc
    cls = _CLASSES.get(exc.code) or _OTHER_CLASSES.setdefault(exc.code, _error_class(exc.code))
    out = cls.__new__(cls)
    OsscError.__init__(out, exc.code, exc.message, exc.http_status, exc.server_code,
                       exc.sys_errno)
    return out


def _error(code: int, message: str) -> ConnectorError:
    return as_connector_error(OsscError(code, message))


class _translated:
    """Re-raises engine errors as ConnectorError, without the engine's frames' noise."""

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if isinstance(exc, OsscError) and not isinstance(exc, ConnectorError):
            raise as_connector_error(exc) from None
        return False


def seek_position(pos: int, size: int, offset: int, whence: int) -> int:
    """Where seek(offset, whence) moves a reader at pos of size bytes (past the end is
    allowed, as in a file); ValueError for a bad whence or a negative position, as io's."""
    if whence == io.SEEK_SET:
        new = offset
    elif whence == io.SEEK_CUR:
        new = pos + offset
    elif whence == io.SEEK_END:
        new = size + offset
    else:
        raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
    if new < 0:
        raise ValueError(f"negative seek position {new}")
    return new


@dataclass(frozen=True)
class OssObject:
    """A listed object, as Aliyun's connector returns them."""

    key: str
    size: int
    etag: str


def parse_uri(uri: str) -> Tuple[str, str, str]:
    """oss://bucket/key or s3://bucket/key -> (scheme, bucket, key)."""
    if not isinstance(uri, str):
        raise _error(lib.OSSC_E_CONFIG, f"bad URI {uri!r}: expected a string "
                     "oss://bucket/key or s3://bucket/key")
    scheme, sep, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    if not sep or scheme not in ("oss", "s3") or not bucket:
        raise _error(lib.OSSC_E_CONFIG, f"bad URI {uri!r}: expected oss://bucket/key or "
                     "s3://bucket/key")
    return scheme, bucket, key


def _env_provider(provider: Any) -> bool:
    """oss2's EnvironmentVariableCredentialsProvider: the engine reads the same variables
    itself (OSS_*, and AWS_* for s3://), and re-reads nothing in between."""
    return type(provider).__name__ == "EnvironmentVariableCredentialsProvider"


def _credentials_of(provider: Any) -> Tuple[str, str, str]:
    """(id, secret, token) from an oss2 CredentialsProvider (or anything whose
    get_credentials() has oss2's getters or attributes)."""
    c = provider.get_credentials()
    if c is None:
        raise _error(lib.OSSC_E_CREDENTIALS, "the credentials provider returned no credentials")

    def field(getter: str, attr: str) -> str:
        if hasattr(c, getter):
            return getattr(c, getter)() or ""
        return getattr(c, attr, "") or ""

    return (field("get_access_key_id", "access_key_id"),
            field("get_access_key_secret", "access_key_secret"),
            field("get_security_token", "security_token"))


class _Provider:
    """Asks a cred_provider for credentials at most every CREDENTIALS_POLL_S and hands new ones
    to every client (and to the credentials file a session's owner reads)."""

    def __init__(self, provider: Any):
        self.provider = provider
        self.lock = threading.Lock()
        self.current: Optional[Tuple[str, str, str]] = None
        self.checked = 0.0
        self.clients: "weakref.WeakSet[Client]" = weakref.WeakSet()
        self.files: List[str] = []

    def get(self) -> Tuple[str, str, str]:
        try:
            creds = _credentials_of(self.provider)
        except ConnectorError:
            raise
        except Exception as exc:  # a provider's own failure (STS unreachable, ...)
            raise _error(lib.OSSC_E_CREDENTIALS, f"the credentials provider failed: "
                         f"{type(exc).__name__}: {exc}") from None
        if not creds[0] or not creds[1]:
            raise _error(lib.OSSC_E_CREDENTIALS, "the credentials provider returned an empty "
                         "access key id or secret")
        return creds

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.checked < CREDENTIALS_POLL_S:
            return
        with self.lock:
            self.checked = now
            creds = self.get()
            if creds == self.current:
                return
            self.current = creds
            for client in list(self.clients):
                _set_credentials(client, creds)
            for path in self.files:
                _write_credentials_file(path, creds)

    def attach(self, client: Client) -> None:
        with self.lock:
            if self.current is None:
                self.current = self.get()
                self.checked = time.monotonic()
            _set_credentials(client, self.current)
            self.clients.add(client)


def _set_credentials(client: Client, creds: Tuple[str, str, str]) -> None:
    err = ffi.new("ossc_error *")
    rc = lib.ossc_client_set_credentials(client._handle, creds[0].encode(), creds[1].encode(),
                                         creds[2].encode(), err)
    if rc:
        raise as_connector_error(OsscError.from_c(err))


def _write_credentials_file(path: str, creds: Tuple[str, str, str]) -> None:
    """The credentials file format (Aliyun's): written to a new name and renamed, 0600."""
    body = {"AccessKeyId": creds[0], "AccessKeySecret": creds[1]}
    if creds[2]:
        body["SecurityToken"] = creds[2]
    fd, tmp = tempfile.mkstemp(prefix=".cred.", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        json.dump(body, f)
    os.replace(tmp, path)


_live_connectors: "weakref.WeakSet[OssModelConnector]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At exit every connector ends its fetches (joining their threads) before the
    interpreter goes away."""
    for connector in list(_live_connectors):
        connector.close()


class OssModelConnector:
    """Lists and reads objects of OSS (oss://, OSS signing) and S3-compatible stores (s3://,
    AWS SigV4) through libossc; Aliyun's OssModelConnector signature and argument rules.

    endpoint: the store's endpoint (required). cred_path: a JSON credentials file
    (AccessKeyId, AccessKeySecret, SecurityToken, Expiration), re-read when it changes or
    before it expires; cred_provider: an oss2 credentials provider (asked again at most every
    second; new credentials apply to requests in flight). One of the two is required.
    config_path: a config.json (ossc's or Aliyun's); "" for the usual lookup (OSSC_CONFIG,
    then /etc/oss-connector/config.json). settings: more overrides by config key
    ({"chunkSize": "4MiB"}), above the config file and the environment. direct_reads: a large
    readinto may fetch straight into the caller's buffer (direct_read.py); None: only over
    plain HTTP, where a fetch per read costs no TLS handshakes."""

    def __init__(self, endpoint: str, cred_path: str = "", config_path: str = "",
                 cred_provider: Any = None, settings: Optional[Dict[str, Any]] = None,
                 direct_reads: Optional[bool] = None):
        if not endpoint:
            raise _error(lib.OSSC_E_CONFIG, "OssModelConnector: endpoint is required (e.g. "
                         "http://oss-cn-hangzhou-internal.aliyuncs.com)")
        if not cred_path and cred_provider is None:
            raise _error(lib.OSSC_E_CREDENTIALS, "OssModelConnector: give cred_path (a JSON "
                         "credentials file) or cred_provider (an oss2 credentials provider)")
        if cred_path and cred_provider is not None:
            raise _error(lib.OSSC_E_CREDENTIALS, "OssModelConnector: give cred_path or "
                         "cred_provider, not both")
        if cred_path and not os.path.isfile(cred_path):
            raise _error(lib.OSSC_E_CREDENTIALS, f"credentials file {cred_path} does not exist")
        self.endpoint = endpoint
        self.direct_reads = direct_read.default_for(endpoint) if direct_reads is None \
            else bool(direct_reads)
        self.cred_path = cred_path
        self.config_path = config_path
        self._overrides: Dict[str, str] = {"endpoint": endpoint}
        if config_path:
            self._overrides["config"] = config_path
        if cred_path:
            self._overrides["credentialsFile"] = os.path.abspath(cred_path)
        for key, value in (settings or {}).items():
            if value is not None:
                self._overrides[key] = str(value)
        self._provider = None if cred_provider is None or _env_provider(cred_provider) \
            else _Provider(cred_provider)
        self._lock = threading.Lock()
        self._clients: Dict[Tuple[str, str, int], Client] = {}
        self._streams: "weakref.WeakSet[ObjectStream]" = weakref.WeakSet()
        self._queue: List["weakref.ref[ObjectStream]"] = []  # prefetches not started, in order
        self._sessions: Dict[str, int] = {}  # model_dir -> fd holding the users lock
        # (verifyBeforeRead, transfers in flight) of each client, for direct reads
        self._client_facts: Dict[int, Tuple[bool, int]] = {}
        # A direct read ran and no read has waited on a prefetch since: the reader's buffer is
        # the readahead, so no queued prefetch starts (it would compete, and be copied later).
        self._streaming = False
        self._private_dir: Optional[str] = None
        # staging buffers of sequential readers' read-ahead (readahead.py), reused
        self._staging = readahead.StagingPool(readahead.WINDOW + readahead.SEGMENT_MAX)
        self._closed = False
        _live_connectors.add(self)

    # ---- clients and credentials

    def _client(self, scheme: str, bucket: str, direct_transfers: int = 0) -> Client:
        """The bucket's client; with direct_transfers, the one for direct reads: a fetch
        per read, so one thread running that many transfers (thread starts and wakeups per
        read cost more than a second thread gains: 15% of the reader's CPU, measured)."""
        if self._closed:
            raise ValueError("OssModelConnector is closed")
        key = (scheme, bucket, direct_transfers)
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                return client
        overrides = dict(self._overrides)
        if direct_transfers:
            overrides.update({"prefetch.vcpus": "1",
                              "prefetch.workers": str(min(256, direct_transfers))})
        bootstrap = None
        if self._provider is not None:
            # The engine wants credentials at creation: a private file holds the provider's
            # first ones for that moment only, then the client takes them directly.
            bootstrap = self._credentials_path("bootstrap.json")
            _write_credentials_file(bootstrap, self._provider.get())
            overrides["credentialsFile"] = bootstrap
        try:
            with _translated():
                client = Client(f"{scheme}://{bucket}/", overrides)
        finally:
            if bootstrap:
                os.unlink(bootstrap)
        if self._provider is not None:
            self._provider.attach(client)
        with self._lock:
            return self._clients.setdefault(key, client)

    def _credentials_path(self, name: str) -> str:
        if self._private_dir is None:
            self._private_dir = tempfile.mkdtemp(prefix="ossc-connector-")  # 0700
        return os.path.join(self._private_dir, name)

    def refresh_credentials(self, force: bool = False) -> None:
        """Asks the cred_provider again (at most every second unless force); new credentials
        go to every client, running prefetches included."""
        if self._provider is not None:
            self._provider.refresh(force)

    # ---- listing

    def list(self, bucket: str, prefix: str = "", fast: bool = False) -> List[OssObject]:
        """Objects under prefix (key, size, etag). bucket is a name (oss://) or
        "s3://name". fast lists key ranges concurrently and returns the same set in no
        guaranteed order."""
        scheme = "oss"
        if "://" in bucket:
            scheme, bucket, rest = parse_uri(bucket)
            prefix = rest + prefix
        self.refresh_credentials()
        client = self._client(scheme, bucket)
        with _translated():
            objs = client.list_fast(prefix) if fast else client.list(prefix)
        return [OssObject(o.key, o.size, o.etag) for o in objs]

    # ---- reading

    def open(self, uri: str, binary: bool = True, encoding: str = "utf-8"):
        """A read-only stream of the object at uri (oss://bucket/key or s3://bucket/key):
        an io.BufferedIOBase (binary) or an io.TextIOWrapper decoding UTF-8 (binary=False)."""
        scheme, bucket, key = parse_uri(uri)
        if not key or key.endswith("/"):
            raise _error(lib.OSSC_E_CONFIG, f"bad URI {uri!r}: names no object")
        self.refresh_credentials()
        client = self._client(scheme, bucket)
        with _translated():
            size, crc = client.head(key)
        stream = ObjectStream(self, client, uri, key, size, crc)
        with self._lock:
            self._streams.add(stream)
            self._queue.append(weakref.ref(stream))
        self._pump()
        if binary:
            return stream
        return io.TextIOWrapper(stream, encoding=encoding)

    def _facts(self, client: Client) -> Tuple[bool, int]:
        """(verifyBeforeRead, transfers in flight) of client's settings."""
        facts = self._client_facts.get(id(client))
        if facts is None:
            s = client.settings()
            facts = (s["verifyBeforeRead"] == "yes",
                     int(s["prefetch"]["vcpus"]) * int(s["prefetch"]["workers"]))
            self._client_facts[id(client)] = facts
        return facts

    def _start_streaming(self, reader: "ObjectStream") -> None:
        """A direct read begins: prefetches of streams not read yet that have fetched little
        give way too (they would take the reader's transfers, and be copied later)."""
        if self._streaming:
            return
        self._streaming = True
        with self._lock:
            others = [s for s in self._streams
                      if s is not reader and not s._reads and s._fetch is not None]
        for stream in others:
            stream._give_way_if_cheap(0, 0)

    def _stop_streaming(self) -> None:
        if self._streaming:
            self._streaming = False
            self._pump()

    def _pump(self) -> None:
        """Starts queued prefetches, in open order, while fewer than PREFETCH_STREAMS run (none
        while a direct reader streams)."""
        if self._streaming:
            return
        with self._lock:
            running = sum(1 for s in self._streams if s._prefetching())
            while self._queue and running < PREFETCH_STREAMS:
                stream = self._queue.pop(0)()
                if stream is None or stream.closed or stream._fetch is not None:
                    continue
                stream._start()
                running += 1

    def _promote(self, stream: "ObjectStream") -> None:
        """A read of a stream still queued starts its prefetch now."""
        with self._lock:
            self._queue = [r for r in self._queue if r() is not stream]
            if stream._fetch is None and not stream.closed:
                stream._start()

    # ---- directories for frameworks

    def prepare_directory(self, uri: str, dir: str) -> str:
        """Makes dir a local view of the objects under uri for frameworks (transformers,
        vLLM) in this process and its children, through the shim's session: its ossc-owner
        (started here, or the live one serving dir) lists, materializes and prefetches; this
        connector counts as a user until close(). Children get LD_PRELOAD, MODEL_DIR and
        OSS_PATH in os.environ and read through the shim. This process, without the shim
        preloaded, has the large files filled from the session once they are in (one copy).
        Returns dir's absolute path."""
        from ossc import prepare  # the session side, shared with nothing else yet

        return prepare.prepare_directory(self, uri, dir)

    # ---- lifetime

    def close(self) -> None:
        """Ends every stream's prefetch, frees the clients and leaves the sessions of
        prepare_directory (their owners end them expireTimeSec after the last user)."""
        if self._closed:
            return
        self._closed = True
        for stream in list(self._streams):
            stream.close()
        with self._lock:
            self._queue = []
            self._clients.clear()
            sessions, self._sessions = self._sessions, {}
        for fd in sessions.values():
            os.close(fd)
        self._staging.close()
        if self._private_dir:
            for name in os.listdir(self._private_dir):
                os.unlink(os.path.join(self._private_dir, name))
            os.rmdir(self._private_dir)
            self._private_dir = None
        _live_connectors.discard(self)

    def __enter__(self) -> "OssModelConnector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _one_at_a_time(method):
    """A stream's calls from several threads run one after another, as io.BufferedReader's
    do: its read-ahead segments and fetch handles are not for two threads at once (a small
    read or a close would free what a waiting read still uses)."""
    @functools.wraps(method)
    def serialized(self, *args, **kwargs):
        with self._io_lock:
            return method(self, *args, **kwargs)
    return serialized


class ObjectStream(io.BufferedIOBase):
    """A read-only, seekable stream of one object, prefetched whole into anonymous memory.

    read/readinto/readline/seek/tell/size/mmap/close; a read waits for the chunks it covers
    (moved to the front of the prefetch) and copies once, into its result or the caller's
    buffer. A readinto of DIRECT_READ_MIN or more that the prefetch has not reached is
    fetched straight into the caller's buffer (or copied from what was read ahead for a run
    of them); the prefetch then gives way (is cancelled, keeping what landed), and later
    reads of other ranges fill its memory on demand."""

    def __init__(self, connector: OssModelConnector, client: Client, uri: str, key: str,
                 size: int, crc: Optional[int] = None):
        self._io_lock = threading.RLock()  # first: close() takes it, from __del__ too
        self._closing = False  # a close() waits for the lock: a waiting read ends (_wait_step)
        super().__init__()
        self._connector = connector
        self._client = client
        self.name = uri
        self.key = key
        self._size = size
        self._pos = 0
        # 2 MiB pages where the kernel has them: a page fault per 2 MiB the fetch writes,
        # not per 4 KiB (a quarter of the time of a read, measured, on 4 KiB pages)
        self._mem = readahead.private_memory(size, size >= HUGE_PAGES_FROM) if size else None
        self._view = memoryview(self._mem) if size else memoryview(b"")
        self._fetch: Optional[native.Fetch] = None
        self._complete = size == 0
        self._reads = 0
        verify_before_read, self._transfers = connector._facts(client)
        # Direct reads hand out bytes before the object's CRC-64 could be checked, which
        # verifyBeforeRead forbids where the store sends one.
        self._direct_ok = size > 0 and connector.direct_reads and \
            (crc is None or not verify_before_read)
        self._crc = None if crc is None else direct_read.SequentialCrc(key, size, crc)
        self._ahead = readahead.Readahead(key, size, connector._staging, self._transfers)
        self._gave_way = False  # the prefetch was cancelled for direct reads
        self._bucket = parse_uri(uri)[:2]  # (scheme, bucket): the client of direct reads
        self._filled: set = set()  # FILL_STEP steps filled on demand since
        self._landed_upto = 0  # [0, this) is known to be in the prefetch's memory

    # ---- prefetch

    def _start(self) -> None:
        if self._size:
            with _translated():
                self._fetch = self._client.fetch([FetchItem(self.key, self._size,
                                                            buffer=self._mem)])

    def _prefetching(self) -> bool:
        if self._fetch is None or self._complete or self.closed:
            return False
        if self._fetch.stats().finished:
            return False
        return True

    def _landed(self, start: int, end: int) -> bool:
        """[start, end) is in the prefetch's memory (no wait)."""
        err = ffi.new("ossc_error *")
        return self._fetch is not None and lib.ossc_fetch_wait_range(
            self._fetch._handle, 0, start, end - start, 0, err) == 0

    def _in_memory(self, start: int, end: int) -> bool:
        if self._complete:
            return True
        if not self._gave_way:
            return self._landed(start, end)
        return all(k in self._filled or self._landed(k * FILL_STEP, self._step_end(k))
                   for k in range(start // FILL_STEP, (end - 1) // FILL_STEP + 1))

    def _step_end(self, k: int) -> int:
        return min(self._size, (k + 1) * FILL_STEP)

    def _give_way_if_cheap(self, start: int, length: int) -> bool:
        """Cancels this stream's prefetch for direct reads from start on, unless it has
        fetched more than GIVE_WAY_MAX beyond them (then a read waits and copies instead).
        True if the prefetch is out of the way (gave way, or never started)."""
        if not self._direct_ok or self._complete or self.closed:
            return False
        if self._gave_way:
            return True
        if self._fetch is None:  # still queued: leave the queue, never start
            with self._connector._lock:
                self._connector._queue = [r for r in self._connector._queue
                                          if r() is not self]
            self._gave_way = True
            return True
        st = self._fetch.stats()
        if st.finished or st.bytes_done > start + max(length, GIVE_WAY_MAX):
            return False
        # Marked first: a read of this stream in another thread that sees the cancellation
        # fills its range instead of failing. No pump: the direct reader stops new starts.
        self._gave_way = True
        lib.ossc_fetch_cancel(self._fetch._handle)
        lib.ossc_fetch_wait(self._fetch._handle, -1, ffi.new("ossc_error *"))
        return True

    def _fill(self, start: int, end: int) -> None:
        """Fetches the FILL_STEP steps of [start, end) missing from memory (a stream whose
        prefetch gave way)."""
        missing = [k for k in range(start // FILL_STEP, (end - 1) // FILL_STEP + 1)
                   if k not in self._filled
                   and not self._landed(k * FILL_STEP, self._step_end(k))]
        if not missing:
            return
        ranges = [(k * FILL_STEP, self._step_end(k) - k * FILL_STEP) for k in missing]
        self._direct(ranges, [self._view[o:o + n] for o, n in ranges])
        self._filled.update(missing)

    def _direct_client(self) -> Client:
        return self._connector._client(*self._bucket, direct_transfers=self._transfers)

    def _direct(self, ranges: list, views: list) -> None:
        client = self._direct_client()
        with _translated():
            direct_read.fetch_into(client, self.key, self._size, ranges, views,
                                   self._wait_step, CREDENTIALS_POLL_S)

    def _ensure(self, start: int, end: int) -> None:
        """Waits until [start, end) is in memory."""
        if self._complete or start >= end:
            return
        if end <= self._landed_upto:
            # Known in memory (landed chunks stay): no engine call, only a check now and
            # then (every KNOWN_CHECK_STEP) whether a prefetch ended and the next may start.
            if self._connector._queue and start // KNOWN_CHECK_STEP != end // KNOWN_CHECK_STEP:
                self._connector._pump()
            return
        if self._gave_way:
            self._fill(start, end)
            return
        if self._fetch is None:
            self._connector._promote(self)
        if self._connector._streaming and not self._landed(start, end):
            self._connector._stop_streaming()  # a reader waits on a prefetch again
        err = ffi.new("ossc_error *")
        while True:
            self._wait_step()
            rc = lib.ossc_fetch_wait_range(self._fetch._handle, 0, start, end - start,
                                           int(CREDENTIALS_POLL_S * 1000), err)
            if rc == 0:
                break
            if rc == lib.OSSC_E_CANCELLED and self._gave_way:
                self._fill(start, end)  # another thread's direct read made it give way
                return
            if rc != -1:
                raise as_connector_error(OsscError.from_c(err))
        if start <= self._landed_upto:
            self._landed_upto = end
        if start == 0 and end == self._size:
            self._complete = True
        elif self._fetch.stats().finished and self._fetch.item_error(0) is None:
            self._complete = True
        if self._connector._queue:  # a prefetch that ended meanwhile lets the next start
            self._connector._pump()

    # ---- io.BufferedIOBase

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def writable(self) -> bool:
        return False

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        self._check_open()
        return self._pos

    @_one_at_a_time
    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        self._pos = seek_position(self._pos, self._size, offset, whence)
        return self._pos

    @_one_at_a_time
    def read(self, size: Optional[int] = -1) -> bytes:
        self._check_open()
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if self._pos >= end:
            return b""
        self._reads += 1
        self._ensure(self._pos, end)
        data = self._view[self._pos:end].tobytes()
        self._handed_out(self._pos, memoryview(data))
        self._pos = end
        return data

    read1 = read

    @_one_at_a_time
    def readinto(self, buffer) -> int:
        self._check_open()
        out = memoryview(buffer).cast("B")
        if out.readonly:
            raise TypeError("readinto() needs a writable buffer")
        start = self._pos
        end = min(self._size, start + len(out))
        if start >= end:
            return 0
        self._reads += 1
        n = end - start
        if len(out) >= DIRECT_READ_MIN and not self._in_memory(start, end) \
                and self._give_way_if_cheap(start, n):
            self._connector._start_streaming(self)
            self._read_direct(start, out[:n], len(out))
        else:
            self._ahead.drop()
            self._ensure(start, end)
            out[:n] = self._view[start:end]
        self._handed_out(start, out[:n])
        self._pos = end
        return n

    readinto1 = readinto

    def _read_direct(self, start: int, out: memoryview, buffer_size: int) -> None:
        """Fills out with [start, start + len(out)) from what was read ahead for a run of
        large reads (readahead.py), then straight from the store; a read that continues the
        run (its caller's buffer_size at most readahead.SEGMENT_MAX) keeps the next bytes in
        flight."""
        ahead = self._ahead
        done = 0
        if ahead.continues(start) and buffer_size <= readahead.SEGMENT_MAX:
            with _translated():
                done = ahead.take(start, out, self._wait)
                ahead.top_up(self._direct_client(), start + len(out), buffer_size)
        else:
            ahead.drop()
            ahead.expect = start + len(out)
        if done < len(out):
            at = start + done
            ranges = direct_read.pieces(at, len(out) - done, self._transfers)
            self._direct(ranges, [out[o - start:o - start + m] for o, m in ranges])

    def _wait(self, fetch: native.Fetch) -> None:
        direct_read.wait_for(fetch, self._wait_step, CREDENTIALS_POLL_S)

    def _wait_step(self) -> None:
        """Runs every CREDENTIALS_POLL_S while a read waits on the store: rotated credentials
        reach the engine, and a close() from another thread ends the wait (the read fails as
        on a closed file) instead of waiting for the store itself."""
        if self._closing:
            raise ValueError("I/O operation on closed file.")
        self._connector.refresh_credentials()

    @_one_at_a_time
    def readline(self, size: Optional[int] = -1) -> bytes:
        self._check_open()
        self._reads += 1
        limit = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        start = scan = self._pos
        step = 64 << 10
        while scan < limit:
            stop = min(limit, scan + step)
            self._ensure(scan, stop)
            found = self._mem.find(b"\n", scan, stop)
            if found >= 0:
                limit = found + 1
                break
            scan = stop
            step = min(step * 2, 8 << 20)
        data = self._view[start:limit].tobytes() if limit > start else b""
        self._handed_out(start, memoryview(data))
        self._pos = max(self._pos, limit)
        return data

    def _handed_out(self, offset: int, data: memoryview) -> None:
        """Checks the object's CRC-64 over what a reader gets in order, where direct reads
        may hand out bytes the engine did not verify."""
        if self._crc is not None and self._direct_ok:
            with _translated():
                self._crc.update(offset, data)

    @_one_at_a_time
    def peek(self, size: int = 0) -> bytes:
        self._check_open()
        end = min(self._size, self._pos + max(size, 1))
        self._ensure(self._pos, end)
        return self._view[self._pos:end].tobytes()

    @_one_at_a_time
    def mmap(self) -> memoryview:
        """The whole object as a read-only memoryview (waits until all of it is in)."""
        self._check_open()
        self._ensure(0, self._size)
        return self._view.toreadonly()

    def close(self) -> None:
        # A read waiting in another thread holds the stream; it sees _closing within
        # CREDENTIALS_POLL_S and ends, so a close never waits for the store.
        self._closing = True
        with self._io_lock:
            self._close()

    def _close(self) -> None:
        if self.closed:
            return
        try:
            self._ahead.close()
            if self._fetch is not None:
                self._fetch.close()  # cancels what is left, joins the fetch threads
                self._fetch = None
            self._view.release()
            if self._mem is not None:
                try:
                    self._mem.close()
                except BufferError:
                    pass  # a view from mmap() is still held: the memory goes with it
                self._mem = None
        finally:
            super().close()
            connector = self._connector
            if connector is not None and not connector._closed:
                connector._pump()

    def __repr__(self) -> str:
        return f"<ossc.ObjectStream {self.name!r} size={self._size}>"
