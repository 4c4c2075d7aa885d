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
from typing import Any, Iterable, Mapping

from ossc.errors import EXIT_CONFIG, EXIT_LOCAL, UserError
from ossc.native import OsscError, ffi, lib
from ossc.settings import flatten, resolve, setting

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

    def to_file(self, settings: Mapping, create_only: bool = False) -> bool:
        """Merges settings into the file and writes it atomically; False if it was left as it
        was (create_only and it exists, or nothing to change)."""
        if create_only and os.path.exists(self.path):
            return False
        content = self.merged(settings)
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
