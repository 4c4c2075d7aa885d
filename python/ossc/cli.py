"""The `ossc` command: ls, stat and get over the fetch engine, put to upload a file; config to
generate, show and validate config.json; tar to make a tar and its index for datasets
(ossc.tartool).

Every user error ends in one line on stderr and a distinct exit code (ossc.errors); tracebacks
only with -v.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import PurePosixPath
from typing import Optional

from ossc import config as config_helper
from ossc import settings as setting_options
from ossc.config import DEFAULT_PATH, to_text
from ossc.errors import EXIT_CONFIG, EXIT_LOCAL, UserError, exit_code, status_exit_code
from ossc.native import (Client, FetchItem, ObjectInfo, OsscError, lib, reap_session,
                         relative_name, sessions)
from ossc.progress import Progress, human_bytes


def _log_level(verbose: int) -> Optional[str]:
    """The engine's log is for -v; by default the command speaks only through its own lines."""
    if verbose:
        return "debug" if verbose > 1 else "info"
    return None if "OSSC_LOG_LEVEL" in os.environ else "off"


def _settings(args) -> dict:
    """CLI overrides: only what was given, so env and the config file still apply."""
    given = setting_options.overrides(args)
    if args.config is not None:
        given["config"] = args.config
    level = _log_level(args.verbose)
    if level is not None:
        given["logLevel"] = level
    return given


def _relative_path(key: str, prefix: str) -> Optional[PurePosixPath]:
    """Where key goes below the target directory; None for a directory marker. Raises for a
    key that would escape it (the engine's check, as for MODEL_DIR)."""
    try:
        rel = relative_name(key, prefix)
    except OsscError as exc:
        raise UserError(exc.message, status_exit_code(exc.code)) from exc
    return None if rel is None else PurePosixPath(rel)


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


def _sources(url: str, prefix: str, objects: list[ObjectInfo]):
    """What `ossc get URL` fetches, and the prefix whose names it keeps, read as `aws s3 cp`
    and s5cmd read a URL: one ending in '/' (or a bare bucket) is a prefix; otherwise the
    object of exactly that key (it wins over a prefix of the same name), else the prefix with
    '/' added (s3://b/models/qwen is models/qwen/, never models/qwen2/). A name that is only the
    start of others (s3://b/models/qwen/model-00002) is an error naming them, as neither tool
    expands it without a wildcard. `objects` is the listing of `prefix`."""
    if not prefix or prefix.endswith("/"):
        return prefix, objects
    parent = prefix[:prefix.rfind("/") + 1]
    exact = [o for o in objects if o.key == prefix]
    if exact:
        return parent, exact
    below = [o for o in objects if o.key.startswith(prefix + "/")]
    if below:
        return prefix + "/", below
    names = [o.key[len(parent):] for o in objects]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise UserError(f"{url} is neither an object nor a prefix; names that start with it: "
                    f"{shown} (give a whole name, or end a prefix with '/')",
                    status_exit_code(lib.OSSC_E_NOT_FOUND))


def _plan_files(objects: list[ObjectInfo], prefix: str, target: str):
    plan = []
    for obj in objects:
        rel = _relative_path(obj.key, prefix)
        if rel is not None:
            plan.append((obj, os.path.join(target, *rel.parts)))
    return plan


def _part_path(path: str) -> str:
    """Where an object is written until it arrived whole: a file of full size (the engine
    maps it) must never look complete under its own name, even if we are killed."""
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.ossc-part")


def cmd_get(args) -> int:
    client = Client(args.url, _settings(args))
    prefix = client.prefix
    objects = client.list()
    if not objects:
        raise UserError(f"nothing under {args.url}", status_exit_code(lib.OSSC_E_NOT_FOUND))
    prefix, objects = _sources(args.url, prefix, objects)
    plan = _plan_files(objects, prefix, args.dir)
    files, items = [], []
    try:
        for obj, path in plan:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # Read-write and at its full size: on tmpfs the engine then writes through a
            # shared mapping, which many transfers into one file do not serialize on.
            fd = os.open(_part_path(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         0o644)
            files.append((fd, path))
            os.ftruncate(fd, obj.size)
            items.append(FetchItem(obj.key, obj.size, fd=fd))
    except OSError as exc:
        for fd, path in files:
            os.close(fd)
            os.unlink(_part_path(path))
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
    # What arrived whole takes its name; what did not is dropped.
    for i, (_, path) in enumerate(plan):
        if failure is None or not (i in failed or isinstance(failure, KeyboardInterrupt)):
            os.replace(_part_path(path), path)
        else:
            try:
                os.unlink(_part_path(path))
            except FileNotFoundError:
                pass
    if failure is not None:
        raise failure
    seconds = time.monotonic() - start
    print(f"fetched {len(plan)} objects, {total} bytes in {seconds:.2f} s: "
          f"{total / seconds / 1e9 if seconds else 0:.2f} GB/s")
    return 0


def cmd_put(args) -> int:
    """One local file to an object: url names the key, or a prefix ending in '/' that gets
    the file's name. A multipart upload with parallel parts for a large file; the object
    appears whole or not at all."""
    if not os.path.isfile(args.file):
        what = "is a directory" if os.path.isdir(args.file) else "is not a file"
        raise UserError(f"{args.file} {what}: ossc put uploads one file", EXIT_LOCAL)
    scheme, sep, rest = args.url.partition("://")
    bucket, _, key = rest.partition("/")
    if key.endswith("/") or not key:
        key += os.path.basename(args.file)
    client = Client(f"{scheme}{sep}{bucket}/", _settings(args))
    size = os.path.getsize(args.file)
    start = time.monotonic()
    client.upload_file(bucket, key, args.file)
    seconds = time.monotonic() - start
    print(f"put {size} bytes to {scheme}{sep}{bucket}/{key} in {seconds:.2f} s: "
          f"{size / seconds / 1e9 if seconds else 0:.2f} GB/s")
    return 0


def _config_settings(args, config: Optional[str]) -> dict:
    try:
        return setting_options.resolve(args.url, setting_options.overrides(args), os.environ,
                                       config=config)
    except OsscError as exc:
        raise UserError(exc.message, EXIT_CONFIG) from exc


def cmd_config_generate(args) -> int:
    """The settings from the options and the environment (no config file), as config.json,
    without per-run values (endpoint, region, credentialsFile). --write PATH merges them into
    PATH: read as the layer below them, it keeps whatever they do not change (unknown keys
    included). ossc.config.generate and ossc.config.write do the work."""
    layer = args.write if args.write and os.path.exists(args.write) else ""
    settings = config_helper.generate(setting_options.overrides(args), env=os.environ,
                                      base=layer, url=args.url)
    if not args.write:
        sys.stdout.write(to_text(settings))
        return 0
    wrote = config_helper.write(args.write, settings)
    print(f"{'wrote' if wrote else 'unchanged:'} {args.write}", file=sys.stderr)
    return 0


def cmd_config_show(args) -> int:
    """What the engine would use now: options > environment > config file > defaults."""
    sys.stdout.write(to_text(_config_settings(args, args.config)))
    return 0


def cmd_config_validate(args) -> int:
    """The file alone, environment ignored: unknown keys and bad values fail with a hint
    (ossc.config.validate)."""
    config_helper.validate(args.path)
    print(f"{args.path}: valid")
    return 0


def cmd_status(args) -> int:
    """This uid's sessions: what holds memory, who owns and uses it, how far it is."""
    found = sessions(args.model_dir)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no sessions" + (f" for {args.model_dir}" if args.model_dir else ""))
        return 0
    for info in found:
        print(info["path"])
        if "modelDir" not in info:
            print(f"  state      {info['state']} ({info.get('problem', '')})")
            continue
        owner = f"pid {info['ownerPid']}" + ("" if info["ownerAlive"] else " (dead)")
        held = human_bytes(info["memoryBytes"]) + " in memory"
        if info["diskBytes"]:
            held += f", {human_bytes(info['diskBytes'])} on disk ({info['dataDir']})"
        done = info["bytesDone"] / info["bytesTotal"] * 100 if info["bytesTotal"] else 100
        budget = (f"{human_bytes(info['bytesHeld'])} of large files held, cacheLimit "
                  + (f"{human_bytes(info['cacheLimit'])}, {info['releases']} released"
                     if info["cacheLimit"] else "none"))
        for label, value in (("model dir", info["modelDir"]), ("store", info["ossPath"]),
                             ("state", info["state"]), ("owner", owner),
                             ("users", info["users"]), ("holds", held),
                             ("policy", info["policy"]), ("budget", budget),
                             ("progress", f"{human_bytes(info['bytesDone'])} of "
                                          f"{human_bytes(info['bytesTotal'])} ({done:.0f}%), "
                                          f"{info['objects']} large files"
                                          + (f", {info['objectsFailed']} failed"
                                             if info.get("objectsFailed") else ""))):
            print(f"  {label:<10} {value}")
        for error in info["errors"]:
            print(f"  error      {error['file']}: {error['error']}")
    return 0


def cmd_gc(args) -> int:
    """Removes sessions whose owner died and that no process uses any more."""
    removed = kept = 0
    for info in sessions():
        if info["ownerAlive"]:
            continue
        rc = reap_session(info["path"], force=args.force)
        if rc == 1:
            removed += 1
            print(f"removed {info['path']} ({info.get('modelDir', '?')})")
        elif rc == 0:
            kept += 1
            print(f"kept {info['path']}: its owner died but {info['users']} processes still "
                  "use it (--force removes it now; their new reads fail with EIO)")
    print(f"{removed} removed, {kept} kept")
    return 0


def cmd_tar_build(args) -> int:
    from ossc import tartool  # here: every other command starts without it
    return tartool.build(args.source, args.tar, args.index or args.tar + ".idx",
                         _settings(args))


def cmd_tar_index(args) -> int:
    from ossc import tartool
    return tartool.index(args.tar, args.index or args.tar + ".idx", _settings(args))


def _add_tar_parsers(sub, common) -> None:
    tar = sub.add_parser("tar", help="make a tar and its index for datasets (ossc.torch's "
                         "from_tar)")
    tar_sub = tar.add_subparsers(dest="tar_command", required=True)
    where = "a local path or oss://bucket/key, s3://bucket/key (uploaded)"
    p = tar_sub.add_parser("build", parents=[common], help="a tar of every file under a "
                           "local directory or every object under a prefix, and its index")
    p.add_argument("source", help="a local directory, or oss://bucket/prefix/, "
                   "s3://bucket/prefix/ (names below the prefix)")
    p.add_argument("tar", help=f"the tar to write: {where}")
    p.add_argument("index", nargs="?", help="the index to write (default TAR.idx)")
    p.set_defaults(func=cmd_tar_build)
    p = tar_sub.add_parser("index", parents=[common], help="the index of an existing tar "
                           "(in the store: its headers by ranged reads)")
    p.add_argument("tar", help="the tar: a local path or oss://bucket/key, s3://bucket/key")
    p.add_argument("index", nargs="?", help=f"the index to write: {where} (default TAR.idx)")
    p.set_defaults(func=cmd_tar_index)


def _add_config_parsers(sub, common) -> None:
    config = sub.add_parser("config", help="generate, show or validate config.json")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument("--url", help="the store URL the settings are for (s3:// changes "
                          "defaults: SigV4, region us-east-1, path-style for custom endpoints)")
    setting_options.add_options(settings)  # every group
    p = config_sub.add_parser("generate", parents=[settings], help="config.json from the "
                              "options and the environment, on stdout or --write PATH; "
                              "per-run values (endpoint, region, credentialsFile) are left "
                              "out")
    p.add_argument("--write", metavar="PATH", help=f"merge it into PATH (created if missing; "
                   f"keys it does not set are kept), e.g. {DEFAULT_PATH}")
    p.add_argument("--force", action="store_true", help="deprecated, no effect: --write "
                   "merges into an existing file")
    p.set_defaults(func=cmd_config_generate, verbose=0)
    p = config_sub.add_parser("show", parents=[settings], help="the settings in effect: "
                              "options > environment > config file > defaults")
    p.add_argument("--config", help=f"config file (default OSSC_CONFIG, else {DEFAULT_PATH})")
    p.set_defaults(func=cmd_config_show, verbose=0)
    p = config_sub.add_parser("validate", help="check a config file: unknown keys and bad "
                              "values are errors")
    p.add_argument("path", nargs="?", default=os.environ.get("OSSC_CONFIG") or DEFAULT_PATH)
    p.set_defaults(func=cmd_config_validate, verbose=0)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    setting_options.add_options(common, ("store", "tuning"))
    common.add_argument("--config", help=f"config file (default {DEFAULT_PATH})")
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
    p = sub.add_parser("get", parents=[common], help="mirror a prefix, or copy one object, "
                       "into a directory")
    p.add_argument("url", help="s3://bucket/prefix/ or s3://bucket/prefix (a prefix: its "
                   "names below it), s3://bucket/key (that object, into DIR)")
    p.add_argument("dir", help="target directory, e.g. /dev/shm/model")
    p.set_defaults(func=cmd_get)
    p = sub.add_parser("put", parents=[common], help="upload one file to an object (parts in "
                       "parallel; whole or not at all)")
    p.add_argument("file", help="the local file")
    p.add_argument("url", help="s3://bucket/key, or s3://bucket/prefix/ (the file's name "
                   "below it)")
    p.set_defaults(func=cmd_put)
    _add_config_parsers(sub, common)
    _add_tar_parsers(sub, common)
    p = sub.add_parser("status", help="this user's sessions on the node: model dir, store, "
                       "owner, users, memory and disk held, progress, errors")
    p.add_argument("model_dir", nargs="?", help="only the session serving this directory")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.set_defaults(func=cmd_status, verbose=0)
    p = sub.add_parser("gc", help="remove sessions whose owner died and that nobody uses")
    p.add_argument("--force", action="store_true", help="also those still in use")
    p.set_defaults(func=cmd_gc, verbose=0)
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
        return exit_code(exc)
    except KeyboardInterrupt:
        print("ossc: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
