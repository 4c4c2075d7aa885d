"""One section of config.json as osstorchconnector reads it (datasetConfig, checkpointConfig):
the file the engine would read, the section as a dict, its counts checked."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple

from ossc.connector import _error
from ossc.native import lib


def config_section(config_path: str, name: str) -> Tuple[str, Dict[str, Any]]:
    """(the config file, its `name` object); {} without a file or the key."""
    path = config_path or os.environ.get("OSSC_CONFIG")
    if path is None:
        from ossc.config import DEFAULT_PATH

        path = DEFAULT_PATH
    if not path or not os.path.isfile(path):
        return path, {}
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError) as exc:
        raise _error(lib.OSSC_E_CONFIG, f"cannot read config file {path}: {exc}") from None
    section = content.get(name, {}) if isinstance(content, dict) else {}
    if not isinstance(section, dict):
        raise _error(lib.OSSC_E_CONFIG, f"{path}: {name} should be an object")
    return path, section


def positive_count(path: str, name: str, section: Dict[str, Any], key: str, default: int) -> int:
    """section[key], a positive integer, or default."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(lib.OSSC_E_CONFIG, f"{path}: {name}.{key} should be a positive integer, "
                     f"got {value!r}")
    return value
