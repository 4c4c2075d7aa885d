"""config.json: an input, owned by the user or the package that installed it.

ossc-run reads it as the lowest layer of settings (options > environment > file > defaults) and
writes it only when it does not exist yet, or when asked (--write-config). A write merges into
what the file holds and changes as little as it can: keys it does not know (Aliyun's
datasetConfig and checkpointConfig) stay verbatim, and so does a value that already resolves
the same ("8MiB" for 8388608, Aliyun's "logLevel": 1 for info). Per-run values (endpoint,
region, credentialsFile; OSS_PATH, MODEL_DIR and credentials are not settings at all) are never
written: the processes of a run get them through the environment.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Union

from ossc.errors import EXIT_CONFIG, EXIT_LOCAL, UserError
from ossc.native import OsscError, ffi, lib
from ossc.settings import SETTINGS, flatten, resolve, setting

DEFAULT_PATH = ffi.string(lib.ossc_default_config_path()).decode()  # the engine's

# Settings that belong to one run, never to the file.
PER_RUN = ("endpoint", "region", "credentialsFile")
# Resolved from the store URL ("auto" becomes virtual or path): written only when given.
STORE_DERIVED = ("addressing",)
# logLevel as a number, in Aliyun's numbering (0 DEBUG .. 3 ERROR), from the engine's table.
ALIYUN_LOG_LEVELS = setting("logLevel").numbered


def to_text(settings: Mapping) -> str:
    return json.dumps(settings, indent=2, sort_keys=True) + "\n"


def _leaves(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"prefetch": {"vcpus": 2}} -> {"prefetch.vcpus": 2}, values as they are."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_leaves(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _put(tree: dict, key: str, value: Any) -> None:
    *groups, name = key.split(".")
    for group in groups:
        if not isinstance(tree.get(group), dict):
            tree[group] = {}
        tree = tree[group]
    tree[name] = value


def persistent(settings: Mapping, given: Iterable[str] = ()) -> dict:
    """What of the resolved settings may go into config.json: no per-run values, and a
    store-derived value only where it was given (an option or its OSSC_ variable)."""
    given = set(given)
    kept: dict = {}
    for key, value in _leaves(settings).items():
        if key in PER_RUN or (key in STORE_DERIVED and key not in given):
            continue
        _put(kept, key, value)
    return kept


@dataclass(frozen=True)
class ConfigFile:
    path: str

    def read(self) -> dict:
        """The file's JSON object as it is; {} if there is no file."""
        try:
            with open(self.path, encoding="utf-8") as f:
                content = json.load(f)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UserError(f"cannot read config file {self.path}: {exc.strerror}",
                            EXIT_CONFIG) from exc
        except ValueError as exc:
            raise UserError(f"config file {self.path} is not a JSON object", EXIT_CONFIG) from exc
        if not isinstance(content, dict):
            raise UserError(f"config file {self.path} is not a JSON object", EXIT_CONFIG)
        return content

    def merged(self, settings: Mapping) -> dict:
        """The file with settings merged in: every key it holds stays unless settings give it
        another value, and a value it already resolves to is left as it is spelled."""
        content = self.read()
        if not content:
            return json.loads(json.dumps(settings))
        try:
            theirs = flatten(resolve(None, {}, {}, config=self.path))
        except OsscError as exc:
            raise UserError(exc.message, EXIT_CONFIG) from exc
        old = _leaves(content)
        for key, value in _leaves(settings).items():
            if theirs.get(key) == str(value):
                continue
            if (key == "logLevel" and type(old.get(key)) is int
                    and value in ALIYUN_LOG_LEVELS):
                value = ALIYUN_LOG_LEVELS.index(value)  # the file speaks Aliyun's numbers
            _put(content, key, value)
        return content

    def to_file(self, settings: Mapping, create_only: bool = False, merge: bool = True) -> bool:
        """Merges settings into the file (merge=False: replaces what it holds) and writes it
        atomically; False if it was left as it was (create_only and it exists, or nothing to
        change)."""
        if create_only and os.path.exists(self.path):
            return False
        content = self.merged(settings) if merge else json.loads(json.dumps(settings))
        if os.path.exists(self.path) and content == self.read():
            return False
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = None
        try:
            # A new file is not for everyone to read; the rename replaces whatever is at the
            # path (a symlink there is never followed, its target never written).
            try:
                st = os.lstat(self.path)
                mode = st.st_mode & 0o7777 if stat.S_ISREG(st.st_mode) else 0o640
            except FileNotFoundError:
                mode = 0o640
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".config.", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(to_text(content))
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except OSError as exc:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            raise UserError(f"cannot write config file {self.path}: {exc.strerror}",
                            EXIT_LOCAL) from exc
        return True


# ---- the config helper: ossc.config.generate / validate / write (`ossc config` and ossc-run
# use them too)

# The keys Aliyun's OSS Model Connector reads from its config.json.
ALIYUN_KEYS = ("logLevel", "logPath", "auditPath", "prefetch.vcpus", "prefetch.workers",
               "expireTimeSec")


class InvalidConfig(UserError, ValueError):
    """A config file or settings the engine refuses; the message is the command's."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_CONFIG)


def _setting_key(name: str) -> str:
    """A config key from a config key ("prefetch.vcpus"), its last part ("vcpus") or its
    Python spelling ("chunk_size", "expire_time_sec"); unknown names are left for the engine,
    whose message has the hint."""
    if "." in name or any(s.key == name for s in SETTINGS):
        return name
    for s in SETTINGS:
        if name in (s.key.rsplit(".", 1)[-1], s.dest):
            return s.key
    return name


def _given(settings: Optional[Mapping], more: Mapping) -> dict:
    """Settings as "key": "text", from nested dicts ({"prefetch": {"vcpus": 4}}), dotted keys
    or keyword spellings."""
    given: dict = {}
    for key, value in _leaves({**(settings or {}), **more}).items():
        if value is not None:
            given[_setting_key(key)] = str(value)
    return given


def generate(settings: Optional[Mapping] = None, *, env: Optional[Mapping[str, str]] = None,
             base: str = "", aliyun: bool = False, url: Optional[str] = None,
             **more: Any) -> dict:
    """A config.json as a dict: the defaults with settings on top (keyword arguments, a
    mapping with nested or dotted keys; env: OSSC_ variables too, as `ossc config generate`
    reads them), checked by the engine, without per-run values (endpoint, region,
    credentialsFile). base: a config file read below them. url: the store URL they are for
    (s3:// changes defaults). A setting left "auto" (prefetch.vcpus, prefetch.workers,
    chunkSize) stays "auto": the file never holds this machine's numbers. aliyun: only the keys
    Aliyun's connector reads, logLevel as its number, "auto" ones left out (it has no "auto").
    Raises InvalidConfig with the command's message.

        ossc.config.generate(chunkSize="16MiB", prefetch={"vcpus": 8})
    """
    given = _given(settings, more)
    env = {} if env is None else env
    try:
        resolved = resolve(url, given, env, config=base)
    except OsscError as exc:
        raise InvalidConfig(exc.message) from None
    named = set(given) | {o.key for o in SETTINGS if o.env in env}
    out = persistent(resolved, named)
    if aliyun:
        flat = _leaves(out)
        out = {}
        for key in ALIYUN_KEYS:
            value = flat[key]
            if value == "auto":
                continue
            if key == "logLevel" and value in ALIYUN_LOG_LEVELS:
                value = ALIYUN_LOG_LEVELS.index(value)
            elif setting(key).type == "int":
                value = int(value)
            _put(out, key, value)
    return out


def validate(config: Union[str, "os.PathLike[str]", Mapping]) -> dict:
    """Checks a config file (a path) or a config dict alone, the environment ignored: unknown
    keys (with a hint) and bad values raise InvalidConfig with the message `ossc config
    validate` prints. Returns the settings it resolves to."""
    if isinstance(config, Mapping):
        fd, tmp = tempfile.mkstemp(prefix="ossc-config-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(config, f)
            try:
                return resolve(None, {}, {}, config=tmp)
            except OsscError as exc:
                raise InvalidConfig(exc.message.replace(f"config file {tmp}", "config")
                                    .replace(tmp, "config")) from None
        finally:
            os.unlink(tmp)
    path = os.fspath(config)
    if not os.path.exists(path):
        raise InvalidConfig(f"no config file at {path}")
    try:
        return resolve(None, {}, {}, config=path)
    except OsscError as exc:
        raise InvalidConfig(exc.message) from None


def write(path: Union[str, "os.PathLike[str]"], settings: Mapping, merge: bool = True,
          create_only: bool = False) -> bool:
    """Writes settings (a dict as generate returns, nested or dotted keys) to path, atomically
    (0640 when new; a symlink at path is replaced, never written through). merge: into what
    the file holds, keeping keys it does not know and values it spells otherwise; else the
    file holds exactly settings. The result must validate, or nothing is written. Returns
    False if the file was left as it was (create_only and it exists, or nothing changed).

        ossc.config.write("/etc/oss-connector/config.json",
                          ossc.config.generate(aliyun=True, vcpus=8))
    """
    tree: dict = {}
    for key, value in _leaves(settings).items():
        _put(tree, key, value)
    path = os.fspath(path)
    file = ConfigFile(path)
    if create_only and os.path.exists(path):
        return False
    validate(file.merged(tree) if merge else tree)
    return file.to_file(tree, create_only=create_only, merge=merge)
