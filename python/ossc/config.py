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
from ossc.native import OsscError
from ossc.settings import flatten, resolve

DEFAULT_PATH = "/etc/oss-connector/config.json"


@dataclass(frozen=True)
class ConfigFile:
    path: str
    settings: dict

    def text(self) -> str:
        return json.dumps(self.settings, indent=2, sort_keys=True) + "\n"

    def difference(self, url: Optional[str] = None) -> Optional[str]:
        """How the existing file's settings differ from ours, as "key: 'old' -> 'new'" for
        the first that does; None if they resolve the same (a hand-written file that says
        less, or "8MiB" for 8388608, is not different)."""
        try:
            theirs = flatten(resolve(url, {}, {}, config=self.path))
        except OsscError as exc:
            return f"unreadable: {exc.message}"
        ours = flatten(self.settings)
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                return f"{key}: {theirs.get(key, '(unset)')!r} -> {ours.get(key, '(unset)')!r}"
        return None

    def check_replaceable(self, force: bool, url: Optional[str] = None) -> bool:
        """True if the file must be (re)written; a UserError if it holds other settings and
        force is not given."""
        if not os.path.exists(self.path):
            return True
        diff = self.difference(url)
        if diff is None:
            return False
        if not force:
            raise UserError(f"config file {self.path} holds different settings ({diff}): pass "
                            "--force to replace it, or --config PATH to write elsewhere",
                            EXIT_CONFIG)
        return True

    def to_file(self, force: bool = False, url: Optional[str] = None) -> bool:
        """Writes the file atomically; False if it already held these settings."""
        if not self.check_replaceable(force, url):
            return False
        directory = os.path.dirname(os.path.abspath(self.path))
        tmp = None
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".config.", dir=directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.text())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except OSError as exc:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
            raise UserError(f"cannot write config file {self.path}: {exc.strerror}",
                            EXIT_LOCAL) from exc
        return True
