"""nginx as a path-style S3 stand-in for the benchmarks (scripts/nginx_s3_store.sh).

SeaweedFS serves a large object at well under 1 GB/s on a small machine; nginx serves files
from a directory with sendfile, so a client is measured rather than the store. It answers GET,
HEAD and Range, ignores signatures, and answers ListObjectsV2 from static pages generated at
start. It takes no PUT: upload_dir() hard-links the files into its directory and restarts it
(on a new port: read `endpoint` after the last upload) so the pages list them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "nginx_s3_store.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copyfile(src, dst)


class NginxStore:
    """nginx on 127.0.0.1 serving root/<bucket>/<key>; root is ours: created empty and removed
    at stop() unless keep_root. Started by root, nginx's workers run as nobody: root's parents
    must let others pass (mode o+x)."""

    def __init__(self, nginx: str, root: str, workers: int | None = None,
                 access_key: str = "ossc-bench", secret_key: str = "ossc-bench-secret",
                 keep_root: bool = False):
        self.nginx, self.root, self.keep_root = nginx, Path(root), keep_root
        self.workers = workers or max(2, (os.cpu_count() or 2) // 2)
        self.access_key, self.secret_key = access_key, secret_key
        self.port: int | None = None
        self.master: int | None = None  # nginx's master process
        self._conf_dir: Path | None = None

    def __enter__(self) -> NginxStore:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise RuntimeError("nginx store: nothing uploaded yet")
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        (self.root / name).mkdir(exist_ok=True)

    def upload_dir(self, bucket: str, prefix: str, local_dir: str) -> None:
        """Hard-link every file under local_dir to root/bucket/prefix/relpath, then restart so
        the listings include them. nginx lists top-level prefixes, each directory and key.
        The files become readable by others (nginx's workers), the originals too: one inode."""
        src = Path(local_dir)
        for f in src.rglob("*"):
            if f.is_file():
                dst = self.root / bucket / prefix / f.relative_to(src)
                link_or_copy(f, dst)
                dst.chmod(dst.stat().st_mode | 0o444)  # safetensors writes 0600
        self._restart(bucket)

    def _restart(self, bucket: str) -> None:
        self._stop_server()
        self._conf_dir = Path(tempfile.mkdtemp(prefix="ossc-nginx-"))
        port = free_port()
        subprocess.run(["bash", str(SCRIPT), self.nginx, str(self.root), bucket, str(port),
                        str(self.workers)], check=True, stdout=sys.stderr,
                       env={**os.environ, "NGINX_STORE_DIR": str(self._conf_dir)})
        self.master = int((self._conf_dir / "nginx.pid").read_text())
        self.port = port
        time.sleep(0.2)  # its workers start

    def _stop_server(self) -> None:
        if self.master is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.master, signal.SIGTERM)
            for _ in range(50):
                if not Path(f"/proc/{self.master}").exists():
                    break
                time.sleep(0.05)
            self.master = self.port = None
        if self._conf_dir is not None:
            shutil.rmtree(self._conf_dir, ignore_errors=True)
            self._conf_dir = None

    def stop(self) -> None:
        self._stop_server()
        if not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)
