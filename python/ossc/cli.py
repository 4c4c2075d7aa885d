"""The `ossc` command: ls, stat and get over the fetch engine.

Every user error ends in one line on stderr and a distinct exit code (EXIT_CODES); tracebacks
only with -v.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import PurePosixPath
from typing import Optional

from ossc.native import Client, FetchItem, ObjectInfo, OsscError, lib
from ossc.progress import Progress, human_bytes

# One exit code per kind of failure, so scripts can tell them apart.
EXIT_USAGE = 2
EXIT_CODES = {
    lib.OSSC_E_CONFIG: 3,
    lib.OSSC_E_CREDENTIALS: 4,
    lib.OSSC_E_AUTH: 5,
    lib.OSSC_E_NOT_FOUND: 6,
    lib.OSSC_E_NETWORK: 7,
    lib.OSSC_E_PROTOCOL: 8,
    lib.OSSC_E_INTEGRITY: 9,
    lib.OSSC_E_IO: 10,
    lib.OSSC_E_SERVER: 11,
    lib.OSSC_E_NOMEM: 12,
    lib.OSSC_E_CANCELLED: 130,
}
EXIT_LOCAL = 10  # a local path problem, like OSSC_E_IO


class UserError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _log_level(verbose: int) -> Optional[str]:
    """The engine's log is for -v; by default the command speaks only through its own lines."""
    if verbose:
        return "debug" if verbose > 1 else "info"
    return None if "OSSC_LOG_LEVEL" in os.environ else "off"


def _settings(args) -> dict:
    """CLI overrides: only what was given, so env and the config file still apply."""
    pairs = {
        "config": args.config,
        "endpoint": args.endpoint,
        "region": args.region,
        "signature": args.signature,
        "addressing": args.addressing,
        "credentialsFile": args.credentials_file,
        "prefetch.vcpus": args.vcpus,
        "prefetch.workers": args.workers,
        "chunkSize": args.chunk_size,
        "retries": args.retries,
        "logLevel": _log_level(args.verbose),
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _relative_path(key: str, prefix: str) -> Optional[PurePosixPath]:
    """Where key goes below the target directory; None for a directory marker. Raises for a
    key that would escape it."""
    rel = key[len(prefix):] if key.startswith(prefix) else key
    if rel == "" or rel.endswith("/"):
        return None
    path = PurePosixPath(rel)
    if path.is_absolute() or any(part in ("", ".", "..") for part in rel.split("/")):
        raise UserError(f"refusing key {key!r}: it would land outside the target directory",
                        EXIT_CODES[lib.OSSC_E_PROTOCOL])
    return path


def cmd_ls(args) -> int:
    client = Client(args.url, _settings(args))
    objects = client.list()
    total = 0
    for obj in objects:
        print(f"{obj.size:>14}  {obj.key}")
        total += obj.size
    print(f"{len(objects)} objects, {human_bytes(total)}", file=sys.stderr)
    return 0


def cmd_stat(args) -> int:
    client = Client(args.url, _settings(args))
    key = client.prefix
    if not key or key.endswith("/"):
        objects = client.list()
        total = sum(o.size for o in objects)
        print(f"prefix: {args.url}\nobjects: {len(objects)}\nbytes: {total}")
        return 0
    size, crc = client.head(key)
    print(f"key: {key}\nbytes: {size}\ncrc64: {crc if crc is not None else '-'}")
    return 0


def _plan_files(objects: list[ObjectInfo], prefix: str, target: str):
    plan = []
    for obj in objects:
        rel = _relative_path(obj.key, prefix)
        if rel is not None:
            plan.append((obj, os.path.join(target, *rel.parts)))
    return plan


def cmd_get(args) -> int:
    client = Client(args.url, _settings(args))
    prefix = client.prefix
    objects = client.list()
    if not objects:
        raise UserError(f"nothing under {args.url}", EXIT_CODES[lib.OSSC_E_NOT_FOUND])
    plan = _plan_files(objects, prefix, args.dir)
    files, items = [], []
    try:
        for obj, path in plan:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            files.append((fd, path))
            items.append(FetchItem(obj.key, obj.size, fd=fd))
    except OSError as exc:
        for fd, _ in files:
            os.close(fd)
        raise UserError(f"cannot create {exc.filename}: {exc.strerror}", EXIT_LOCAL) from exc

    total = sum(o.size for o, _ in plan)
    start = time.monotonic()
    progress = Progress(total)
    fetch = client.fetch(items)
    failure: Optional[BaseException] = None
    try:
        while not fetch.wait(0.2):
            st = fetch.stats()
            current = plan[st.current_item][0].key if st.current_item >= 0 else ""
            progress.update(st.bytes_done, current)
        progress.update(total)
    except OsscError as exc:
        failure = exc
    except KeyboardInterrupt as exc:
        fetch.cancel()
        failure = exc
    finally:
        progress.close()
        failed = [i for i in range(len(items)) if fetch.item_error(i) is not None]
        fetch.close()
        for fd, _ in files:
            os.close(fd)
    if failure is not None:
        # Never leave a partial file that looks complete: drop what did not arrive whole.
        for i, (_, path) in enumerate(plan):
            if i in failed or isinstance(failure, KeyboardInterrupt):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        raise failure
    seconds = time.monotonic() - start
    print(f"fetched {len(plan)} objects, {total} bytes in {seconds:.2f} s: "
          f"{total / seconds / 1e9 if seconds else 0:.2f} GB/s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    store = common.add_argument_group("store")
    store.add_argument("--endpoint", help="e.g. http://oss-cn-hangzhou-internal.aliyuncs.com "
                       "(default: OSS_ENDPOINT, or AWS_ENDPOINT_URL for s3://)")
    store.add_argument("--region", help="region for V4 signing (default: from the endpoint)")
    store.add_argument("--signature", choices=["v4", "v1"], help="OSS signature version")
    store.add_argument("--addressing", choices=["virtual", "path"])
    store.add_argument("--credentials-file", help="JSON file with AccessKeyId, AccessKeySecret, "
                       "SecurityToken, Expiration")
    store.add_argument("--config", help="config file (default /etc/oss-connector/config.json)")
    tuning = common.add_argument_group("tuning")
    tuning.add_argument("--vcpus", type=int, help="fetch threads (prefetch.vcpus)")
    tuning.add_argument("--workers", type=int, help="transfers per thread (prefetch.workers)")
    tuning.add_argument("--chunk-size", help="bytes per ranged GET, e.g. 8MiB")
    tuning.add_argument("--retries", type=int, help="retries per chunk after the first attempt")
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: tracebacks on errors; -vv: debug log of the engine")

    parser = argparse.ArgumentParser(prog="ossc", description="Fetch models from OSS and "
                                     "S3-compatible object stores at line rate.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ls", parents=[common], help="list objects under a prefix")
    p.add_argument("url", help="oss://bucket/prefix/ or s3://bucket/prefix/")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("stat", parents=[common], help="size and CRC-64 of an object, or totals "
                       "of a prefix")
    p.add_argument("url")
    p.set_defaults(func=cmd_stat)
    p = sub.add_parser("get", parents=[common], help="mirror a prefix into a directory")
    p.add_argument("url")
    p.add_argument("dir", help="target directory, e.g. /dev/shm/model")
    p.set_defaults(func=cmd_get)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OsscError, UserError) as exc:
        if args.verbose:
            import traceback

            traceback.print_exc()
        print(f"ossc: {exc}", file=sys.stderr)
        code = exc.exit_code if isinstance(exc, UserError) else EXIT_CODES.get(exc.code, 1)
        return code
    except KeyboardInterrupt:
        print("ossc: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
