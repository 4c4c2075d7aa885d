"""OssModelConnector.prepare_directory: a directory served by the shim's session.

The session is the one ossc-run and env-var mode use: ossc-owner (started here, or the live
owner already serving the directory from the same store path) lists, materializes the
directory (small files whole, placeholders for large ones), prefetches into /dev/shm and ends
the session expireTimeSec after its last user. The connector counts as a user (the users lock,
as ossc-run holds it) until it is closed.

Children see the directory through the shim: os.environ gets LD_PRELOAD (the shim first),
MODEL_DIR and OSS_PATH, which subprocesses inherit. This process reads through the shim only
if it was started with it; otherwise each placeholder is filled from the session's data file
once that file is in (a second copy, on MODEL_DIR's file system), so transformers or vLLM in
this process read real bytes, never the placeholders' holes.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import List

from ossc import native
from ossc.native import lib

SESSION_POLL_S = 0.05


def _shim_loaded() -> bool:
    """Whether this process runs with the shim (then it reads MODEL_DIR through it)."""
    try:
        with open("/proc/self/maps") as f:
            return any("libossc_preload" in line for line in f)
    except OSError:
        return False


def _status_of_exit_code(code: int) -> int:
    """The engine status whose exit code ossc-owner returned (its first process exits with
    the start's outcome); OSSC_E_IO if none matches."""
    for status in sorted(native.STATUS_NAMES):
        if status and lib.ossc_exit_code(status) == code:
            return status
    return lib.OSSC_E_IO


def _store_url(uri: str) -> str:
    from ossc.connector import parse_uri

    scheme, bucket, prefix = parse_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return f"{scheme}://{bucket}/{prefix}"


# Placeholders are filled from every data file (this process has no shim): each must come in
# and stay until copied, whatever the environment says of lazy sessions and budgets.
FILL_ALL = {"prefetch.policy": "eager", "cacheLimit": ""}


def _owner_argv(connector, url: str, model_dir: str, extra=None) -> List[str]:
    from ossc.connector import _error, _write_credentials_file

    try:
        owner = str(native.owner_program())
    except FileNotFoundError as exc:
        raise _error(lib.OSSC_E_IO, str(exc)) from None
    sets = {**connector._overrides, **(extra or {})}
    provider = connector._provider
    if provider is not None:
        # The owner reads a credentials file and re-reads it when it changes: the provider's
        # credentials go there, and there again each time they rotate.
        path = connector._credentials_path("session-credentials.json")
        with provider.lock:
            if path not in provider.files:
                provider.files.append(path)
        _write_credentials_file(path, provider.current or provider.get())
        sets["credentialsFile"] = path
    argv = [owner, "--oss-path", url, "--model-dir", model_dir, "--prog", "ossc"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    return argv


def _start(connector, url: str, model_dir: str, extra=None) -> int:
    """Runs ossc-owner and takes the users lock; returns the lock's fd."""
    from ossc.connector import _error

    env = {k: v for k, v in os.environ.items() if k not in ("ENABLE_CONNECTOR", "LD_PRELOAD")}
    argv = _owner_argv(connector, url, model_dir, extra)
    for _ in range(3):  # a session that ends just as we attach: start it again
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            message = lines[-1] if lines else f"ossc-owner exited with {proc.returncode}"
            raise _error(_status_of_exit_code(proc.returncode),
                         message.split(": ", 1)[1] if message.startswith("ossc: ") else message)
        fd = native.use_session(model_dir, connector._overrides.get("sharedGroup", ""))
        if fd is not None:
            return fd
    raise _error(lib.OSSC_E_IO, f"the session for {model_dir} ended each time it was attached")


def _export_for_children(url: str, model_dir: str) -> None:
    shim = str(native.preload_library())
    preload = os.environ.get("LD_PRELOAD", "").split()
    if shim not in preload:
        os.environ["LD_PRELOAD"] = " ".join([shim, *preload])
    os.environ["MODEL_DIR"] = model_dir
    os.environ["OSS_PATH"] = url
    os.environ.pop("ENABLE_CONNECTOR", None)  # the session has its owner


def _fill_placeholders(connector, model_dir: str) -> None:
    """Copies each large file's bytes from the session's data file into its placeholder once
    the file is in (ready); errors of the session are raised."""
    from ossc.connector import _error

    done = set()
    while True:
        connector.refresh_credentials()
        found = native.sessions(model_dir)
        if not found or "files" not in found[0]:
            raise _error(lib.OSSC_E_IO, f"the session for {model_dir} is gone")
        info = found[0]
        if info.get("errors"):
            e = info["errors"][0]
            raise _error(lib.OSSC_E_IO, f"{os.path.join(model_dir, e['file'])}: {e['error']}")
        if not info.get("ownerAlive", True):
            raise _error(lib.OSSC_E_IO, f"the owner of the session for {model_dir} died")
        for f in info["files"]:
            if f["file"] in done or not f["ready"]:
                continue
            _copy(f["data"], os.path.join(model_dir, f["file"]), f["size"])
            done.add(f["file"])
        if len(done) == len(info["files"]):
            return
        time.sleep(SESSION_POLL_S)


def _copy(data: str, placeholder: str, size: int) -> None:
    src = os.open(data, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(placeholder, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            offset = 0
            while offset < size:
                n = os.sendfile(dst, src, offset, min(size - offset, 1 << 30))
                if n == 0:
                    raise OSError(f"{data} ended at {offset} of {size} bytes")
                offset += n
        finally:
            os.close(dst)
    finally:
        os.close(src)


def prepare_directory(connector, uri: str, directory: str) -> str:
    url = _store_url(uri)
    model_dir = os.path.abspath(os.fspath(directory))
    if model_dir in connector._sessions:
        return model_dir
    connector.refresh_credentials()
    shim = _shim_loaded()
    fd = _start(connector, url, model_dir, None if shim else FILL_ALL)
    with connector._lock:
        connector._sessions[model_dir] = fd
    _export_for_children(url, model_dir)
    if not shim:
        _fill_placeholders(connector, model_dir)
    return model_dir
