"""config.json: the resolved settings, written for the processes and tools that read it.

Written with sorted keys and two-space indents; an existing file with different settings is
never replaced without force.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

from ossc.errors import EXIT_CONFIG, EXIT_LOCAL, UserError
from ossc.settings import flatten

DEFAULT_PATH = "/etc/oss-connector/config.json"


@dataclass(frozen=True)
class ConfigFile:
    path: str
    settings: dict

    @classmethod
    def from_file(cls, path: str) -> Optional["ConfigFile"]:
        """The file's JSON object; None if there is no file, a UserError if it is unreadable."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read config file {path}: {exc}", EXIT_CONFIG) from exc
        if not isinstance(data, dict):
            raise UserError(f"config file {path} is not a JSON object", EXIT_CONFIG)
        return cls(path, data)

    def text(self) -> str:
        return json.dumps(self.settings, indent=2, sort_keys=True) + "\n"

    def difference(self, other: "ConfigFile") -> Optional[str]:
        """The first setting that differs, as "key: 'old' -> 'new'"; None if none does."""
        old, new = flatten(other.settings), flatten(self.settings)
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        return None

    def check_replaceable(self, force: bool) -> bool:
        """True if the file must be (re)written; a UserError if it holds other settings and
        force is not given."""
        try:
            existing = ConfigFile.from_file(self.path)
        except UserError:
            existing = ConfigFile(self.path, {"(unreadable)": True})
        if existing is None:
            return True
        diff = self.difference(existing)
        if diff is None:
            return False
        if not force:
            raise UserError(f"config file {self.path} holds different settings ({diff}): pass "
                            "--force to replace it, or --config PATH to write elsewhere",
                            EXIT_CONFIG)
        return True

    def to_file(self, force: bool = False) -> bool:
        """Writes the file atomically; False if it already held these settings."""
        if not self.check_replaceable(force):
            return False
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".config.", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.text())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise UserError(f"cannot write config file {self.path}: {exc.strerror}",
                            EXIT_LOCAL) from exc
        return True
