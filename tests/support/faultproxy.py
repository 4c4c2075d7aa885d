"""A fault-injecting HTTP/1.1 reverse proxy for tests, run in-process in front of LocalStore.

    proxy = FaultProxy("127.0.0.1:8333", signer=store.sign, add_crc64=True).start()
    proxy.add_fault("reset", key="model.safetensors", after_bytes=4096, times=2)
    ... point the client under test at proxy.endpoint ...
    assert proxy.bytes_served("models/qwen/model.safetensors") == size

Requests are forwarded unchanged, Host header included, because SigV4 signs it. Each client
connection gets its own keep-alive connection upstream. Bodies stream in CHUNK pieces.

Keys are path-style: "bucket/key" (percent-decoded path without the leading "/" and query).

Fault kinds (for GET unless method= says otherwise; key substring, ranged_only, range_from=X
only ranged GETs starting at offset X or past it, after=K skips the first K matches, times=N
is the budget, None = forever):
  status               answer `status` with an S3-style XML error (+ `headers`) after reading
                       the request's body (and, with `requests`=N, once N requests for the
                       key have come, at most 10 s); upstream untouched
  reset                send headers and `after_bytes` body bytes, then RST (SO_LINGER 0)
  truncate             full Content-Length, `after_bytes` bytes (default half), then FIN
  stall                sleep `seconds` before the headers (after_bytes=None) or at body offset
  wrong_content_range  shift the Content-Range start/end by `shift`, body unchanged
  flip_byte            xor one body byte at `offset` (default: middle), headers unchanged
  status_200_full      answer a ranged GET with 200 and the whole object (needs signer)
Request-body faults (for uploads: method="PUT" or "POST"):
  reset_request        read `after_bytes` bytes of the request body, then RST; nothing is
                       forwarded, so the store never sees the request
  flip_request_byte    forward the request with one body byte at `offset` (default: middle)
                       xor-ed, headers unchanged (a Content-MD5 no longer matches)
  wrong_crc64          (with add_crc64) the x-oss-hash-crc64ecma sent is off by one bit

Counters (thread-safe; reset() zeroes them): request_count(method, key) counts every request;
bytes_served(key) counts object body bytes of 2xx GETs, each piece just before it is written;
served_ranges(key) lists (start, length) of those bodies.

add_crc64=True adds `x-oss-hash-crc64ecma` (CRC-64/XZ of the whole object, as Alibaba OSS
does) to 200/206 GET and HEAD responses; it fetches the object once with the signer's
credentials, cached by key and ETag. Those internal fetches are not counted as served. Writes
get it as OSS sends it too: a 200 PUT (an object or a part) the CRC-64 of the body the proxy
relayed, a 200 CompleteMultipartUpload (POST ?uploadId) that of the whole object.
"""

from __future__ import annotations

import dataclasses
import fcntl
import http.client
import itertools
import socket
import sys
import socketserver
import struct
import termios
import threading
import time
import traceback
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

CHUNK = 256 * 1024
UPSTREAM_TIMEOUT_S = 60.0
CLIENT_IDLE_TIMEOUT_S = 120.0  # a handler thread ends after this long without a request

# --- CRC-64/XZ (the ECMA-182 polynomial, reflected; what OSS calls crc64ecma) ----------------

_CRC64_MASK = 0xFFFFFFFFFFFFFFFF


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xC96C5795D7870F42 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_py(data: bytes, crc: int = 0) -> int:
    """Pure-Python fallback (slow: a few MB/s)."""
    crc ^= _CRC64_MASK
    for b in data:
        crc = _CRC64_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ _CRC64_MASK


try:
    import crcmod  # C extension (an oss2 dependency), fast enough for GB objects

    crc64: Callable[[bytes, int], int] = crcmod.mkCrcFun(
        0x142F0E1EBA9EA3693, initCrc=0, xorOut=_CRC64_MASK, rev=True
    )
except ImportError:
    crc64 = crc64_py

assert crc64(b"123456789", 0) == 0x995DC9BBDF1939FA
assert crc64(b"56789", crc64(b"1234", 0)) == 0x995DC9BBDF1939FA

# --- faults ---------------------------------------------------------------------------------

KINDS = frozenset(
    {"status", "reset", "truncate", "stall", "wrong_content_range", "flip_byte",
     "status_200_full", "reset_request", "flip_request_byte", "wrong_crc64"}
)
_ERROR_CODES = {
    400: "BadRequest", 403: "AccessDenied", 404: "NoSuchKey", 429: "TooManyRequests",
    500: "InternalError", 502: "BadGateway", 503: "SlowDown", 504: "GatewayTimeout",
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


@dataclasses.dataclass
class Fault:
    kind: str
    # which requests
    key: str | None = None  # substring of "bucket/key"
    ranged_only: bool = False
    method: str = "GET"  # "HEAD" works for status and stall
    times: int | None = 1  # budget; None = forever
    after: int = 0  # let the first `after` matching requests through
    range_from: int | None = None  # only ranged GETs whose range starts at this offset or past
    # what to do
    status: int = 503  # status: the code; headers: extra response headers
    requests: int = 0  # status: answer once this many requests for the key have come
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    after_bytes: int | None = None  # reset/truncate/stall: body offset (stall: None = pre-headers)
    seconds: float = 0.0  # stall
    shift: int = 1  # wrong_content_range
    offset: int | None = None  # flip_byte: body offset, None = middle
    skipped: int = dataclasses.field(default=0, init=False)  # let through because of `after`
    fired: int = dataclasses.field(default=0, init=False)

    def matches(self, method: str, key: str, ranged: bool,
                range_start: int | None = None) -> bool:
        return (
            method == self.method
            and (self.key is None or self.key in key)
            and (ranged or not self.ranged_only)
            and (self.range_from is None or (range_start is not None
                                             and range_start >= self.range_from))
        )

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times


class _Cut(Exception):
    """The response was cut on purpose (reset/truncate): drop both connections."""


# --- the proxy ------------------------------------------------------------------------------


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        signer: Callable[..., dict[str, str]] | None = None,
        add_crc64: bool = False,
        host: str = "127.0.0.1",
    ):
        """upstream: "host:port" or "http://host:port". signer(method, host, path, query)
        returns auth headers; needed for add_crc64 and status_200_full (the proxy's own GETs)."""
        parsed = urllib.parse.urlsplit(upstream if "//" in upstream else f"http://{upstream}")
        self.upstream_host, self.upstream_port = parsed.hostname, parsed.port or 80
        self.signer = signer
        self.add_crc64 = add_crc64
        if add_crc64 and signer is None:
            raise ValueError("add_crc64 needs a signer to fetch whole objects")
        self._bind_host = host
        self._server: _Server | None = None
        self._port = 0
        self._serve_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # stats, faults, live connections
        self._counted = threading.Condition(self._lock)  # a request was counted
        self._faults: list[Fault] = []
        self._bytes: Counter[str] = Counter()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._order: list[tuple[str, str, str]] = []  # (method, key, Range) as they came
        self._ranges: defaultdict[str, list[list[int]]] = defaultdict(list)  # [start, length]
        self._live: set[socket.socket] = set()
        self.connections_accepted = 0  # client connections so far (reuse shows here)
        self._handlers: set[threading.Thread] = set()
        self._crc_cache: dict[tuple[str, str | None], int] = {}
        self._crc_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self.errors: list[str] = []  # unexpected exceptions in handler threads (tracebacks)

    # lifecycle

    def start(self) -> FaultProxy:
        self._stopping.clear()
        self._server = _Server((self._bind_host, 0), _Handler, self)
        self._port = self._server.server_address[1]
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name="faultproxy", daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self, join_timeout: float = 5.0) -> None:
        """Close the listener and every live connection (client and upstream side)."""
        if self._server is None:
            return
        self._stopping.set()  # wakes stalls
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            self._counted.notify_all()  # and status faults waiting for requests
            live, handlers = list(self._live), list(self._handlers)
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)  # unblocks threads in recv/send
            except OSError:
                pass
        for t in handlers:
            t.join(join_timeout)
        self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://{self._bind_host}:{self.port}"

    # faults

    def add_fault(self, kind: str, **params) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(KINDS)}")
        if kind == "status_200_full" and self.signer is None:
            raise ValueError("status_200_full needs a signer to fetch the whole object")
        fault = Fault(kind, **params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, key: str, ranged: bool,
                    range_start: int | None = None) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.spent or not f.matches(method, key, ranged, range_start):
                    continue
                if f.skipped < f.after:
                    f.skipped += 1
                    continue
                f.fired += 1
                return f
        return None

    # counters

    def reset(self) -> None:
        """Zero the counters (faults stay; see clear_faults)."""
        with self._lock:
            self._bytes.clear()
            self._requests.clear()
            self._order.clear()
            self._ranges.clear()

    def bytes_served(self, key: str | None = None) -> int:
        """Object body bytes sent to clients from 2xx upstream responses (all keys if None)."""
        with self._lock:
            return self._bytes[key] if key is not None else sum(self._bytes.values())

    def request_count(self, method: str | None = None, key: str | None = None) -> int:
        with self._lock:
            return sum(
                n for (m, k), n in self._requests.items()
                if (method is None or m == method) and (key is None or k == key)
            )

    def served_ranges(self, key: str) -> list[tuple[int, int]]:
        """(start, length) of each body sent for key, sorted; lengths are what was sent."""
        with self._lock:
            return sorted(tuple(span) for span in self._ranges.get(key, ()))

    def request_order(self) -> list[tuple[str, str, str]]:
        """(method, key, Range header or "") of every request, in the order they came."""
        with self._lock:
            return list(self._order)

    def _count_request(self, method: str, key: str, range_: str = "") -> None:
        with self._lock:
            self._requests[(method, key)] += 1
            self._order.append((method, key, range_))
            self._counted.notify_all()

    # connection bookkeeping (for stop)

    def _track(self, sock: socket.socket | None, add: bool) -> None:
        if sock is None:
            return
        with self._lock:
            if add:
                self._live = {s for s in self._live if s.fileno() != -1}  # closed elsewhere
                self._live.add(sock)
            else:
                self._live.discard(sock)

    # the proxy's own requests

    def open_upstream(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=UPSTREAM_TIMEOUT_S
        )

    def signed_get(self, raw_path: str):
        """-> (connection, response): GET the whole object at raw_path (as the client sent it)
        with the signer's key. The caller closes the connection."""
        path, _, query = raw_path.partition("?")
        host = f"{self.upstream_host}:{self.upstream_port}"
        qs = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        wire = path + ("?" + urllib.parse.urlencode(qs, quote_via=urllib.parse.quote) if qs else "")
        conn = self.open_upstream()
        conn.request("GET", wire, headers=self.signer("GET", host, path, qs or None))
        return conn, conn.getresponse()

    def crc64_of(self, raw_path: str, key: str, etag: str | None) -> int:
        """CRC-64 of the whole object, computed once per (key, ETag)."""
        with self._lock:
            key_lock = self._crc_locks[key]
        with key_lock:  # parallel ranged GETs of one object share one fetch
            cached = self._crc_cache.get((key, etag))
            if cached is not None:
                return cached
            conn, resp = self.signed_get(raw_path)
            try:
                if resp.status != 200:
                    raise RuntimeError(f"crc fetch of {key}: HTTP {resp.status}")
                crc = 0
                while piece := resp.read(4 * CHUNK):
                    crc = crc64(piece, crc)
                got_etag = resp.getheader("ETag")
            finally:
                conn.close()
            if etag is not None and got_etag != etag:
                raise RuntimeError(f"crc fetch of {key}: object changed ({etag} -> {got_etag})")
            self._crc_cache[(key, etag)] = crc
            return crc


class _Replayed:
    """An upstream response whose body was read already, read again from memory."""

    def __init__(self, resp: http.client.HTTPResponse, body: bytes):
        self._resp, self._body = resp, body

    def __getattr__(self, name):
        return getattr(self._resp, name)

    def read1(self, n: int = -1) -> bytes:
        piece, self._body = (self._body, b"") if n < 0 else (self._body[:n], self._body[n:])
        return piece

    def read(self, n: int = -1) -> bytes:
        return self.read1(n)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # clients open dozens of connections at once

    def __init__(self, addr, handler, proxy: FaultProxy):
        self.proxy = proxy
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        # Like ThreadingMixIn, but keep the thread so stop() can join it.
        t = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self.proxy._lock:
            self.proxy._handlers = {h for h in self.proxy._handlers if h.is_alive()}
            self.proxy._handlers.add(t)
        t.start()

    def handle_error(self, request, client_address):
        # A client may drop its connection at any time (it does on a reply it rejects).
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        self.proxy.errors.append(traceback.format_exc())
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = CLIENT_IDLE_TIMEOUT_S
    server: _Server

    # BaseHTTPRequestHandler plumbing

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.proxy: FaultProxy = self.server.proxy
        self.upstream: http.client.HTTPConnection | None = None
        self.reset_on_close = False
        self.body_crc64 = 0
        self.proxy._track(self.connection, True)
        with self.proxy._lock:
            self.proxy.connections_accepted += 1

    def finish(self) -> None:
        self._drop_upstream()
        self.proxy._track(self.connection, False)
        if self.reset_on_close:
            self._close_with_rst()
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, *args) -> None:
        pass  # quiet: one line per request would drown test output

    def do_GET(self) -> None:
        try:
            self._proxy_request()
        except _Cut:
            self.close_connection = True
        except (OSError, http.client.HTTPException):
            # Client went away, or upstream failed mid-body: nothing sane to send any more.
            self.close_connection = True
            self._drop_upstream()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    # one request

    def _proxy_request(self) -> None:
        key = urllib.parse.unquote(self.path.partition("?")[0].lstrip("/"))
        ranged = self.headers.get("Range") is not None
        self.proxy._count_request(self.command, key, self.headers.get("Range") or "")
        fault = self.proxy._take_fault(self.command, key, ranged,
                                       _requested_start(self.headers.get("Range")))
        kind = fault.kind if fault else None

        if kind == "status":
            self._drain_request_body()  # else the client may see a broken pipe, not the status
            with self.proxy._counted:
                self.proxy._counted.wait_for(
                    lambda: self.proxy._stopping.is_set()
                    or self.proxy._requests[(self.command, key)] >= fault.requests, 10)
            return self._send_error(fault.status, fault.headers)
        if kind == "reset_request":
            return self._reset_mid_request(fault.after_bytes or 0)
        if kind == "stall" and fault.after_bytes is None:
            self._stall(fault.seconds)

        if kind == "status_200_full" and ranged:
            own_conn, resp = self.proxy.signed_get(self.path)
        else:
            own_conn, resp = None, self._forward(fault if kind == "flip_request_byte" else None)
        try:
            self._relay_response(key, resp, fault)
        finally:
            if own_conn is not None:
                own_conn.close()

    def _drain_request_body(self) -> None:
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            piece = self.rfile.read(min(CHUNK, left))
            if not piece:
                break
            left -= len(piece)

    def _reset_mid_request(self, after_bytes: int) -> None:
        """Takes after_bytes of the request body (at most all of it), then resets."""
        left = min(after_bytes, int(self.headers.get("Content-Length") or 0))
        while left > 0:
            piece = self.rfile.read(min(CHUNK, left))
            if not piece:
                break
            left -= len(piece)
        self.reset_on_close = True
        raise _Cut("reset_request")  # finish() closes with RST

    def _forward(self, flip: Fault | None = None) -> http.client.HTTPResponse:
        """Send the request upstream unchanged (but for a flip_request_byte fault); one retry
        on a stale keep-alive connection."""
        has_body = "Content-Length" in self.headers or "Transfer-Encoding" in self.headers
        for attempt in (1, 2):
            if self.upstream is None:
                self.upstream = self.proxy.open_upstream()
            if self.upstream.sock is None:  # new, or closed after a "Connection: close"
                self.upstream.connect()
                self.proxy._track(self.upstream.sock, True)
            try:
                self.upstream.putrequest(
                    self.command, self.path, skip_host=True, skip_accept_encoding=True
                )
                for name, value in self.headers.items():
                    self.upstream.putheader(name, value)
                self.upstream.endheaders()
                if has_body:
                    self._relay_request_body(flip)
                return self.upstream.getresponse()
            except ConnectionError:  # includes http.client.RemoteDisconnected
                self._drop_upstream()
                if has_body or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _relay_request_body(self, flip: Fault | None = None) -> None:
        length = self.headers.get("Content-Length")
        self.body_crc64 = 0  # of the bytes relayed (after a flip), for add_crc64
        if length is not None:
            left = total = int(length)
            at = None
            if flip is not None and total:
                at = flip.offset if flip.offset is not None else total // 2
            while left > 0:
                start = total - left
                piece = self.rfile.read(min(CHUNK, left))
                if not piece:
                    raise ConnectionError("client closed mid-body")
                if at is not None and start <= at < start + len(piece):
                    piece = bytearray(piece)
                    piece[at - start] ^= 0xFF
                    piece = bytes(piece)
                self.upstream.send(piece)
                self.body_crc64 = crc64(piece, self.body_crc64)
                left -= len(piece)
            return
        # Transfer-Encoding: chunked: pass the chunk framing through verbatim.
        while True:
            line = self.rfile.readline(1024)
            self.upstream.send(line)
            size = int(line.split(b";")[0], 16)
            if size == 0:
                break
            self.upstream.send(self.rfile.read(size + 2))  # data + CRLF
        while True:  # trailers, then the empty line
            line = self.rfile.readline(8192)
            self.upstream.send(line)
            if line in (b"\r\n", b"\n", b""):
                return

    def _relay_response(self, key: str, resp: http.client.HTTPResponse, fault: Fault | None):
        kind = fault.kind if fault else None
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
        length = resp.getheader("Content-Length")
        length = int(length) if length is not None else None
        content_range = resp.getheader("Content-Range")
        ok = resp.status in (200, 206)

        crc = None
        if ok and self.proxy.add_crc64 and self.command in ("GET", "HEAD"):
            crc = self.proxy.crc64_of(self.path, key, resp.getheader("ETag"))
        elif ok and self.proxy.add_crc64 and self.command == "PUT" and \
                "x-amz-copy-source" not in self.headers:
            crc = self.body_crc64
        elif ok and self.proxy.add_crc64 and self.command == "POST" and \
                "uploadId=" in self.path:
            resp_body = resp.read()  # the Complete reply is small: keep it for the client
            resp = _Replayed(resp, resp_body)
            with self.proxy._lock:  # the key may have held another object before
                self.proxy._crc_cache.pop((key, None), None)
            crc = self.proxy.crc64_of(self.path.partition("?")[0], key, None)
        if crc is not None:
            if kind == "wrong_crc64":
                crc ^= 1
            headers.append(("x-oss-hash-crc64ecma", str(crc)))
        if kind == "wrong_content_range" and content_range:
            headers = [
                (k, _shift_content_range(v, fault.shift) if k.lower() == "content-range" else v)
                for k, v in headers
            ]
        has_body = self.command != "HEAD" and resp.status not in (204, 304) and resp.status >= 200
        chunked = has_body and length is None
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        if self.close_connection:
            headers.append(("Connection", "close"))
        self._send_head(resp.status, resp.reason, headers)
        if not has_body:
            resp.read()  # marks the upstream connection reusable
            return

        # Where in the body the fault acts.
        at = None
        if kind in ("reset", "truncate", "stall"):
            at = fault.after_bytes
            if at is None and kind == "truncate":
                at = (length or 0) // 2
        flip_at = None
        if kind == "flip_byte":
            flip_at = fault.offset if fault.offset is not None else (length or 0) // 2

        # Counted bytes and [start, length] of this body in the proxy's stats (None: not counted).
        counted = ok and self.command == "GET"
        start = _range_start(content_range) if resp.status == 206 else 0
        span = [start, 0] if counted and start is not None else None
        sent = 0
        while True:
            piece = resp.read1(CHUNK)
            if not piece:
                break
            if flip_at is not None and sent <= flip_at < sent + len(piece):
                i = flip_at - sent
                piece = piece[:i] + bytes([piece[i] ^ 0xFF]) + piece[i + 1:]
            if at is not None and at < sent + len(piece):
                head, piece = piece[: max(0, at - sent)], piece[max(0, at - sent):]
                sent += self._write_body(head, chunked, key, counted, span)
                self._act(kind, fault)  # raises _Cut for reset/truncate
                at = None
            sent += self._write_body(piece, chunked, key, counted, span)
        resp.read()  # read1() leaves a drained response open: close it for reuse
        if at is not None:  # fault point at or past the end of the body
            self._act(kind, fault)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _write_body(self, data: bytes, chunked: bool, key: str, counted: bool, span) -> int:
        if not data:
            return 0
        if counted:  # count before writing: the client may check the stats the moment it has all
            with self.proxy._lock:
                self.proxy._bytes[key] += len(data)
                if span is not None:
                    if span[1] == 0:
                        self.proxy._ranges[key].append(span)
                    span[1] += len(data)
        if chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)
        return len(data)

    def _act(self, kind: str, fault: Fault) -> None:
        if kind == "stall":
            return self._stall(fault.seconds)
        self._drop_upstream()  # its response was not read to the end
        self.reset_on_close = kind == "reset"
        raise _Cut(kind)  # finish() closes: RST for reset, FIN for truncate

    def _close_with_rst(self) -> None:
        sock = self.connection
        # SO_LINGER 0 drops unsent data: let the bytes already written reach the client first.
        for _ in range(200):
            try:
                if struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0] == 0:
                    break
            except OSError:
                break
            time.sleep(0.01)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The makefile()s hold references: the fd (and the RST) goes only when all are closed.
        self.wfile.close()
        self.rfile.close()
        sock.close()

    def _stall(self, seconds: float) -> None:
        if self.proxy._stopping.wait(seconds):  # stop() interrupts: send nothing more
            self._drop_upstream()
            raise _Cut("stopped")

    def _send_head(self, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _send_error(self, status: int, extra: dict[str, str]) -> None:
        code = _ERROR_CODES.get(status, "InjectedFault")
        request_id = f"FAULTPROXY{next(_request_ids):08d}"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>injected by faultproxy</Message>"
            f"<Resource>{self.path.partition('?')[0]}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers = [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
            ("x-oss-request-id", request_id),
            *extra.items(),
        ]
        if self.close_connection:
            headers.append(("Connection", "close"))
        reason = http.client.responses.get(status, "Error")
        self._send_head(status, reason, headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drop_upstream(self) -> None:
        if self.upstream is not None:
            self.proxy._track(self.upstream.sock, False)
            self.upstream.close()
            self.upstream = None


_request_ids = itertools.count(1)


def _range_start(content_range: str | None) -> int | None:
    """"bytes 10-19/100" -> 10."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _requested_start(range_header: str | None) -> int | None:
    """"bytes=10-19" -> 10 (None for no Range or another form)."""
    first = (range_header or "").partition("=")[2].partition("-")[0]
    return int(first) if first.isdigit() else None


def _shift_content_range(value: str, shift: int) -> str:
    unit, _, rest = value.partition(" ")
    span, _, total = rest.partition("/")
    first, _, last = span.partition("-")
    return f"{unit} {int(first) + shift}-{int(last) + shift}/{total}"
