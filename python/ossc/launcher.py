"""ossc-run: COMMAND sees MODEL_DIR as a local directory while the model streams from the store.

    ossc-run --oss-path oss://bucket/models/qwen/ --model-dir /models/qwen -- \\
        python -m vllm.entrypoints.openai.api_server --model /models/qwen

Layered as parse_args -> build_plan(args, env) -> execute(plan, env). build_plan is pure (the
environment comes in as a mapping) and resolves every setting once, through the engine's own
resolver. execute starts the session's owner (ossc-owner, a process of its own, which checks
the store before anything starts, or the live owner already serving MODEL_DIR), counts itself
as a user of the session while COMMAND runs with the shim preloaded in its own process group,
forwards signals to it, and leaves: the owner ends the session once no process has used it for
expireTimeSec.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ossc import config as config_helper
from ossc import settings as setting_options
from ossc.config import DEFAULT_PATH
from ossc.errors import (EXIT_COMMAND_NOT_FOUND, EXIT_COMMAND_NOT_RUNNABLE, EXIT_CONFIG,
                         EXIT_LOCAL, EXIT_USAGE, UserError, exit_code)
from ossc.native import OsscError, owner_program, preload_library, sessions, use_session
from ossc.progress import Progress, human_bytes, write_line

PROG = "ossc-run"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Stopped(Exception):
    """A stop signal arrived before COMMAND started."""

    def __init__(self, sig: int):
        super().__init__(signal.Signals(sig).name)
        self.sig = sig


def _stop_early(sig: int, _frame) -> None:
    """Until COMMAND runs, a stop signal unwinds (and the session is removed on the way)."""
    if sig in STOPPING:
        raise Stopped(sig)


def say(message: str) -> None:
    """A line of its own on stderr, above the prefetch bar if one is drawn."""
    write_line(f"{PROG}: {message}", sys.stderr)


POLICIES = ("lazy", "eager")


@dataclass(frozen=True)
class Mount:
    """One MODEL_DIR served from one store path, by its own session (its own owner)."""
    oss_path: str
    model_dir: str
    policy: str = ""           # "lazy", "eager", or "" for the settings' prefetch.policy
    settings: Optional[dict] = None  # resolved for this mount (its URL, its policy)

    def spec(self) -> str:
        """As OSSC_MOUNTS and --mount spell it: URL=DIR[:policy]."""
        return f"{self.oss_path}={self.model_dir}" + (f":{self.policy}" if self.policy else "")


def parse_mount(text: str, where: str) -> Mount:
    """URL=DIR[:lazy|:eager]; DIR starts at the first "=/" (as the shim reads OSSC_MOUNTS)."""
    url, sep, rest = text.partition("=/")
    policy = ""
    for name in POLICIES:
        if rest.endswith(":" + name):
            rest, policy = rest[:-len(name) - 1], name
    if not sep or "://" not in url or not rest:
        raise UserError(f"{where} {text!r}: expected oss://bucket/prefix/=/absolute/dir "
                        "(optionally :lazy or :eager after the directory)", EXIT_USAGE)
    return Mount(url, "/" + rest, policy)


@dataclass(frozen=True)
class LaunchPlan:
    oss_path: str              # the first mount's (the one-mount case: OSS_PATH, MODEL_DIR)
    model_dir: str
    command: tuple[str, ...]
    settings: dict             # resolved, config-file form
    config_path: str           # read as the lowest layer; "" for none
    config_explicit: bool      # --config given: failing to write it is an error
    config_writes: Optional[dict]  # what _write_config merges into config_path; None: nothing
    write_config: bool         # --write-config: merge even into an existing file
    child_env: dict
    ready_url: Optional[str]
    grace_seconds: float
    print_env: bool
    given: dict                # the settings given as options (for --print-env)
    mounts: tuple = ()         # every Mount, the first being oss_path -> model_dir


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, usage=f"{PROG} [OPTIONS] -- COMMAND [ARGS...]",
        description="Run COMMAND with MODEL_DIR served from object storage: the store is "
        "checked and the prefetch started before COMMAND starts; every process of COMMAND "
        "reads MODEL_DIR through the shim.")
    parser.add_argument("--oss-path", help="oss://bucket/prefix/ or s3://bucket/prefix/ "
                        "(default: OSS_PATH)")
    parser.add_argument("--model-dir", help="the directory COMMAND loads (default: MODEL_DIR)")
    parser.add_argument("--mount", action="append", default=[], metavar="URL=DIR[:lazy]",
                        help="serve DIR from URL, each mount by its own session; repeat for "
                        "several (a base model eager, its adapters lazy); with --oss-path "
                        "and --model-dir those come first (default: OSSC_MOUNTS, mounts "
                        "separated by spaces)")
    parser.add_argument("--config", help=f"the config file, read below the environment and "
                        f"the options (default OSSC_CONFIG, else {DEFAULT_PATH}; \"\" for "
                        f"none); created with the defaults when missing")
    parser.add_argument("--write-config", action="store_true",
                        help="merge this run's settings into the config file (keys it does "
                        "not set are kept; endpoint, region and credentialsFile never go in)")
    parser.add_argument("--force", action="store_true",
                        help="deprecated, no effect: a config file that differs from the "
                        "options or the environment is no longer an error")
    setting_options.add_options(parser)  # every group, a new setting's included
    run = parser.add_argument_group("run")
    run.add_argument("--ready-url", help="poll this URL (e.g. http://127.0.0.1:8000/health) "
                     "and report the time until it answers 200")
    run.add_argument("--grace-period", type=float, default=10.0, metavar="SEC",
                     help="after forwarding a stop signal, SIGKILL COMMAND's process group "
                     "this much later (default 10)")
    run.add_argument("--print-env", action="store_true", help="print export lines for "
                     "env-var mode (containers, Dockerfiles) and exit")
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="tracebacks on errors")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the program to run, after --")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    return args


def _with_preload(current: str, library: str) -> str:
    """library first in LD_PRELOAD, once; whatever else was there stays."""
    others = [p for p in current.replace(":", " ").split() if p != library]
    return " ".join([library, *others])


def build_plan(args: argparse.Namespace, env: Mapping[str, str], preload: str,
               cwd: str = "/") -> LaunchPlan:
    """Everything execute needs, from the options and the environment; touches nothing but
    the config file it reads."""
    oss_path = args.oss_path or env.get("OSS_PATH")
    model_dir = args.model_dir or env.get("MODEL_DIR")
    extra = [parse_mount(m, "--mount") for m in args.mount] or \
        [parse_mount(m, "OSSC_MOUNTS:") for m in env.get("OSSC_MOUNTS", "").split()]
    if not extra or oss_path or model_dir:
        if not oss_path:
            raise UserError("no store path: give --oss-path oss://bucket/prefix/ or set "
                            "OSS_PATH (or --mount URL=DIR)", EXIT_USAGE)
        if not model_dir:
            raise UserError("no model directory: give --model-dir DIR or set MODEL_DIR",
                            EXIT_USAGE)
        extra.insert(0, Mount(oss_path, model_dir))
    if not args.command and not args.print_env:
        raise UserError("no command: put it after --, e.g. ossc-run ... -- python -m "
                        "vllm.entrypoints.openai.api_server --model DIR", EXIT_USAGE)
    if args.ready_url and not args.ready_url.startswith(("http://", "https://")):
        raise UserError(f"--ready-url {args.ready_url!r}: expected http://HOST:PORT/PATH",
                        EXIT_USAGE)
    extra = [Mount(m.oss_path, os.path.normpath(os.path.join(cwd, m.model_dir)), m.policy)
             for m in extra]
    dirs = [m.model_dir for m in extra]
    if len(set(dirs)) != len(dirs):
        raise UserError(f"a directory is mounted twice: {' '.join(dirs)}", EXIT_USAGE)
    for outer in dirs:  # a path below both would be served by one session only
        inner = next((d for d in dirs if d.startswith(outer.rstrip("/") + "/")), None)
        if inner:
            raise UserError(f"mount directories overlap: {inner} is inside {outer}; give "
                            "each mount a directory of its own", EXIT_USAGE)
    oss_path, model_dir = extra[0].oss_path, extra[0].model_dir
    # --config "" or OSSC_CONFIG="" means no config file: none is read, none is written.
    config_path = args.config if args.config is not None else env.get("OSSC_CONFIG",
                                                                       DEFAULT_PATH)
    if args.write_config and not config_path:
        raise UserError("--write-config: no config file to write (--config or OSSC_CONFIG is "
                        "empty)", EXIT_USAGE)
    exists = bool(config_path) and os.path.exists(config_path)
    given = setting_options.overrides(args)
    mounts = []
    try:
        for m in extra:
            # A config file that does not exist yet is no layer (it is created below).
            policy = {"prefetch.policy": m.policy} if m.policy else {}
            mounts.append(Mount(m.oss_path, m.model_dir, m.policy, setting_options.resolve(
                m.oss_path, {**given, **policy}, env, config=config_path if exists else "")))
    except OsscError as exc:
        raise UserError(exc.message, EXIT_CONFIG) from exc
    resolved = mounts[0].settings
    writes = None
    if config_path and args.write_config:
        writes = config_helper.generate(given, env=env, base=config_path if exists else "",
                                        url=oss_path)
    elif config_path and not exists:
        # A new file gets the defaults only: what options and the environment say is this
        # run's, and stays out of the file unless asked (--write-config).
        writes = config_helper.generate(url=oss_path)

    child_env = dict(env)
    child_env.pop("ENABLE_CONNECTOR", None)  # this process owns the session
    # The options reach COMMAND's processes as their variables, as in env-var mode; the
    # config file is theirs to read, not a record of this run.
    child_env.update({setting_options.env_name(k): v for k, v in given.items()})
    child_env.update(LD_PRELOAD=_with_preload(env.get("LD_PRELOAD", ""), preload),
                     MODEL_DIR=model_dir, OSS_PATH=oss_path, OSSC_CONFIG=config_path)
    if len(mounts) > 1:  # the shim serves MODEL_DIR and each of OSSC_MOUNTS
        child_env["OSSC_MOUNTS"] = " ".join(m.spec() for m in mounts[1:])
    else:
        child_env.pop("OSSC_MOUNTS", None)
    if resolved.get("sharedGroup"):  # the shim reads the group from its environment only
        child_env["OSSC_SHARED_GROUP"] = resolved["sharedGroup"]
    if resolved.get("pinGpu", "no") != "no":  # so does it OSSC_PIN_GPU (a config file's too)
        child_env["OSSC_PIN_GPU"] = resolved["pinGpu"]
    return LaunchPlan(oss_path=oss_path, model_dir=model_dir, command=tuple(args.command),
                      settings=resolved, config_path=config_path,
                      config_explicit=args.config is not None, config_writes=writes,
                      write_config=args.write_config, child_env=child_env,
                      ready_url=args.ready_url, grace_seconds=args.grace_period,
                      print_env=args.print_env, given=given, mounts=tuple(mounts))


def env_exports(plan: LaunchPlan) -> str:
    """Env-var mode: the same run without ossc-run, for a container image."""
    lines = [f"export LD_PRELOAD={shlex.quote(plan.child_env['LD_PRELOAD'])}",
             "export ENABLE_CONNECTOR=1"]
    if len(plan.mounts) > 1 or any(m.policy for m in plan.mounts):
        lines.append("export OSSC_MOUNTS=" + shlex.quote(" ".join(m.spec() for m in plan.mounts)))
    else:
        lines += [f"export OSS_PATH={shlex.quote(plan.oss_path)}",
                  f"export MODEL_DIR={shlex.quote(plan.model_dir)}"]
    if plan.settings.get("sharedGroup"):
        lines.append(f"export OSSC_SHARED_GROUP={shlex.quote(plan.settings['sharedGroup'])}")
    if plan.settings.get("pinGpu", "no") != "no" and "pinGpu" not in plan.given:
        lines.append(f"export OSSC_PIN_GPU={shlex.quote(plan.settings['pinGpu'])}")
    if plan.config_explicit:
        lines.append(f"export OSSC_CONFIG={shlex.quote(plan.config_path)}")
    for key, value in sorted(plan.given.items()):
        lines.append(f"export {setting_options.env_name(key)}={shlex.quote(value)}")
    lines.append("# credentials: set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET (and "
                 "OSS_SESSION_TOKEN) when the container starts, never in the image")
    return "\n".join(lines)


def _write_config(plan: LaunchPlan) -> None:
    """Creates a missing config file, or with --write-config merges into it; a file that
    exists is otherwise never touched, whatever this run's options and environment say."""
    if not plan.config_path or plan.config_writes is None:
        return
    try:
        if config_helper.write(plan.config_path, plan.config_writes,
                               create_only=not plan.write_config):
            say(f"wrote {plan.config_path}")
    except UserError as exc:
        # The default location needs root; without it the run goes on, the file is optional.
        if plan.config_explicit or plan.write_config or exc.exit_code != EXIT_LOCAL:
            raise
        say(f"warning: {exc}; going on without it (use --config PATH)")


class OwnerFailed(Exception):
    """ossc-owner could not serve the session; it said why on stderr, as one ossc-run line."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _owner_env(plan: LaunchPlan, env: Mapping[str, str]) -> dict:
    """The owner's environment: ours (credentials travel here, never on its command line),
    without the shim and without ENABLE_CONNECTOR."""
    owner_env = {k: v for k, v in env.items() if k not in ("ENABLE_CONNECTOR", "LD_PRELOAD")}
    others = plan.child_env["LD_PRELOAD"].split()[1:]  # the shim is first (build_plan)
    if others:
        owner_env["LD_PRELOAD"] = " ".join(others)
    return owner_env


def owner_argv(owner: str, mount: Mount) -> list:
    """ossc-owner's command line for a mount: its resolved settings, each one set, and no
    config file. A setting left "auto" goes as "auto": the owner derives it (and sizes chunks
    over all its large objects), as in env-var mode."""
    sets = [a for k, v in setting_options.flatten(mount.settings).items()
            for a in ("--set", f"{k}={v}")]
    return [owner, "--oss-path", mount.oss_path, "--model-dir", mount.model_dir,
            "--prog", PROG, *sets, "--set", "config="]


def _start_session(plan: LaunchPlan, env: Mapping[str, str], mount: Mount) -> int:
    """Starts a mount's owner (or finds the live one serving its MODEL_DIR from the same
    store path) and counts this process as its user until COMMAND ends. Returns the fd that
    holds the users lock."""
    try:
        argv = owner_argv(str(owner_program()), mount)
    except FileNotFoundError as exc:
        raise UserError(str(exc), EXIT_LOCAL) from exc
    for _ in range(3):  # a session that ends just as we attach: start it again
        proc = subprocess.Popen(argv, env=_owner_env(plan, env), stdin=subprocess.DEVNULL)
        try:
            code = proc.wait()
        except Stopped:
            proc.send_signal(signal.SIGTERM)  # it passes the stop on to the owner
            proc.wait()
            raise
        if code:
            raise OwnerFailed(code)
        fd = use_session(mount.model_dir, mount.settings.get("sharedGroup", ""))
        if fd is not None:
            return fd
    raise UserError(f"the session for {mount.model_dir} ended each time it was attached",
                    EXIT_LOCAL)


class ReadyProbe(threading.Thread):
    """Polls a URL until it answers 200 and reports how long that took."""

    def __init__(self, url: str, start: float):
        super().__init__(daemon=True)
        self.url, self.start_time = url, start
        self.stopped = threading.Event()
        # A local health URL: never through http_proxy from the environment.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            try:
                with self.opener.open(self.url, timeout=2) as reply:
                    if reply.status == 200:
                        say(f"ready in {time.monotonic() - self.start_time:.1f} s ({self.url})")
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass


class PrefetchReport:
    """Progress of the session's prefetch while COMMAND runs, then one summary line."""

    def __init__(self, model_dir: str, info: dict):
        self.model_dir = model_dir
        self.done = info["state"] != "fetching"  # done before us, or nothing to fetch
        self.progress = Progress(info["bytesTotal"], name=PROG)
        self.start = time.monotonic()
        self.next_poll = 0.0

    def poll(self, now: bool = False) -> None:
        if self.done or (time.monotonic() < self.next_poll and not now):
            return
        self.next_poll = time.monotonic() + 0.25
        found = sessions(self.model_dir)
        if not found:
            self.done = True
            return
        info = found[0]
        self.progress.update(info["bytesDone"], info.get("currentFile", ""))
        if info["state"] == "fetching":
            return
        self.done = True
        self.progress.close()
        seconds = max(time.monotonic() - self.start, 1e-6)
        failed = ", ".join(e["file"] + ": " + e["error"] for e in info.get("errors", []))
        if info["state"] == "complete" and info.get("objectsFailed"):
            say(f"prefetch failed for {info['objectsFailed']} of {info['objects']} files"
                f"{': ' + failed if failed else ''}; their reads fail with that error until "
                "an open fetches them again (log: the session's owner.log or logPath)")
        elif info["state"] == "complete" and info.get("policy") == "lazy":
            say(f"lazy: {info['objects']} large files ({human_bytes(info['bytesTotal'])}) are "
                "fetched when a process opens them")
        elif info["state"] == "complete" and info.get("cacheLimit") and \
                info["bytesDone"] < info["bytesTotal"]:
            say(f"prefetched {human_bytes(info['bytesDone'])} of "
                f"{human_bytes(info['bytesTotal'])} in {seconds:.1f} s, up to cacheLimit "
                f"{human_bytes(info['cacheLimit'])}; the rest is fetched when opened")
        elif info["state"] == "complete":
            say(f"prefetched {info['objects']} files, {human_bytes(info['bytesTotal'])} in "
                f"{seconds:.1f} s ({info['bytesTotal'] / seconds / 1e9:.2f} GB/s)")
        else:
            say(f"prefetch {info['state']}{': ' + failed if failed else ''}; reads of what is "
                "missing fail with EIO (log: the session's owner.log or logPath)")


class Child:
    """COMMAND in its own process group: signals go to the whole group, a stop signal is
    followed by SIGKILL after the grace period."""

    def __init__(self, plan: LaunchPlan):
        try:
            # A session of its own, so a process group of its own (Popen's process_group
            # needs Python 3.11, and preexec_fn is unsafe with threads); the terminal's
            # signals reach COMMAND through forward().
            self.proc = subprocess.Popen(plan.command, env=plan.child_env,
                                         start_new_session=True)
        except OSError as exc:  # found but not runnable: as the shell says it
            raise UserError(f"cannot run {plan.command[0]}: {exc.strerror}",
                            EXIT_COMMAND_NOT_RUNNABLE) from exc
        self.grace = plan.grace_seconds
        self.kill_at: Optional[float] = None

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def forward(self, sig: int, _frame=None) -> None:
        self.signal_group(sig)
        if sig in STOPPING and self.kill_at is None:
            self.kill_at = time.monotonic() + self.grace

    def _reap_orphans(self) -> None:
        """As PID 1 (a container's entry point) the workers COMMAND leaves behind become our
        children: reap them, or their zombies would count as a live group. COMMAND itself is
        left to Popen, so its status is not lost."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == self.proc.pid:
                return
            os.waitpid(info.si_pid, 0)

    def group_alive(self) -> bool:
        self._reap_orphans()
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def tick(self) -> Optional[int]:
        """The exit status once COMMAND has ended, after a short wait."""
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            say(f"still running {self.grace:g} s after the stop signal: SIGKILL")
            self.signal_group(signal.SIGKILL)
            self.kill_at = float("inf")
        try:
            return self.proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            return None

    def reap_group(self) -> None:
        """Processes COMMAND left behind in its group (workers) go with it."""
        if not self.group_alive():
            return
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.group_alive():
            self.signal_group(signal.SIGKILL)


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def execute(plan: LaunchPlan, env: Mapping[str, str]) -> int:
    if plan.print_env:
        print(env_exports(plan))
        return 0
    found = shutil.which(plan.command[0], path=plan.child_env.get("PATH", os.defpath))
    if not found and not ("/" in plan.command[0] and os.path.exists(plan.command[0])):
        raise UserError(f"command not found: {plan.command[0]}", EXIT_COMMAND_NOT_FOUND)
    for sig in FORWARDED:  # until COMMAND runs, a stop signal unwinds
        signal.signal(sig, _stop_early)
    start = time.monotonic()
    users_fds = []
    try:
        reports = []
        for mount in plan.mounts:  # each its own session, started before COMMAND
            users_fds.append(_start_session(plan, env, mount))
            served = sessions(mount.model_dir)  # held by us: it cannot end before we let go
            if not served:
                raise UserError(f"cannot read the session serving {mount.model_dir}",
                                EXIT_LOCAL)
            info = served[0]
            say(f"{mount.oss_path} -> {mount.model_dir} ({info['objects']} large files, "
                f"{human_bytes(info['bytesTotal'])}, {info['policy']}; session owner pid "
                f"{info['ownerPid']})")
            reports.append(PrefetchReport(mount.model_dir, info))
        _write_config(plan)
        child = Child(plan)
        for sig in FORWARDED:
            signal.signal(sig, child.forward)
        probe = ReadyProbe(plan.ready_url, start) if plan.ready_url else None
        if probe:
            probe.start()
        status = None
        while status is None:
            for report in reports:
                report.poll()
            status = child.tick()
        if probe:
            probe.stopped.set()
        child.reap_group()
        for report in reports:
            report.poll(now=True)
            report.progress.close()
        return _status(status)
    finally:
        # Each owner ends its session once no process has used it for expireTimeSec.
        for fd in users_fds:
            os.close(fd)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        try:
            preload = str(preload_library())
        except FileNotFoundError as exc:
            raise UserError(str(exc), EXIT_LOCAL) from exc
        return execute(build_plan(args, os.environ, preload, os.getcwd()), os.environ)
    except (OsscError, UserError) as exc:
        if args.verbose:
            import traceback

            traceback.print_exc()
        say(exc.message if isinstance(exc, OsscError) else str(exc))
        return exit_code(exc)
    except OwnerFailed as exc:  # it said why already
        return exc.code
    except Stopped as exc:
        say(f"stopped by {exc} before the command started")
        return 128 + exc.sig
    except KeyboardInterrupt:
        say("interrupted")
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
