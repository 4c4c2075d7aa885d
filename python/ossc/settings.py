"""The engine's settings as command-line options, and their resolution.

The engine's settings table (preload/src/engine/settings.c) is the one source: each row's
option (--chunk-size for chunkSize, --vcpus for prefetch.vcpus), help text, default, range,
choices and OSSC_ variable come from it (ossc_settings_describe), so a new row is a new option.
Values are checked and resolved (options > environment > config file > defaults) only there.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ossc.native import _take_string, lib, resolve_settings


def _size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


@dataclass(frozen=True)
class Setting:
    """A row of the engine's table (see ossc_settings_describe in ossc.h)."""

    key: str  # the config.json name; a dot is a nested object
    env: str
    type: str  # "string", "int", "size" or "enum"
    default: str
    group: str
    help: str = ""
    choices: Optional[tuple[str, ...]] = None
    numbered: tuple[str, ...] = ()  # enums: the names config.json's numbers stand for
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    is_switch: bool = False  # a flag without value that sets "yes"
    other_env: tuple[str, ...] = ()  # also read: the contract's name, the AWS name for s3://

    @property
    def flag(self) -> str:
        """--chunk-size for chunkSize; a group's name is left out (--vcpus)."""
        name = self.key.rsplit(".", 1)[-1]
        return "--" + re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name).lower()

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def help_text(self) -> str:
        """The help, then range, default and variables, as --help shows them."""
        facts = []
        if self.minimum is not None:
            show = _size_text if self.type == "size" else str
            facts.append(f"{show(self.minimum)} to {show(self.maximum)}")
        if self.default and not self.is_switch:
            facts.append(f"default {self.default}")
        facts.append(", ".join((self.env, *self.other_env)))
        text = f"{self.help} ({'; '.join(facts)})" if self.help else f"({'; '.join(facts)})"
        return text.replace("%", "%%")  # argparse formats help with %


def _from_engine() -> tuple[Setting, ...]:
    rows = json.loads(_take_string(lib.ossc_settings_describe()))
    return tuple(Setting(
        key=r["key"], env=r["env"], type=r["type"], default=r["default"],
        group=r.get("group") or "other", help=r.get("help", ""),
        choices=tuple(r["choices"]) if "choices" in r and not r["switch"] else None,
        numbered=tuple(r.get("numbered", ())), minimum=r.get("min"), maximum=r.get("max"),
        is_switch=r["switch"],
        other_env=tuple(r[k] + (" for s3://" if k == "s3Env" else "")
                        for k in ("ossEnv", "s3Env") if k in r)) for r in rows)


SETTINGS = _from_engine()
OPTIONS = SETTINGS  # every setting is an option
_BY_KEY = {s.key: s for s in SETTINGS}


def setting(key: str) -> Setting:
    return _BY_KEY[key]


def groups() -> tuple[str, ...]:
    """The groups of options, in the table's order."""
    return tuple(dict.fromkeys(s.group for s in SETTINGS))


def add_options(parser: argparse.ArgumentParser, only: Optional[Sequence[str]] = None) -> None:
    """Adds the options of the given groups (None: every group), each defaulting to None (not
    given)."""
    for group in groups() if only is None else only:
        section = parser.add_argument_group(group)
        for opt in SETTINGS:
            if opt.group != group:
                continue
            if opt.is_switch:
                section.add_argument(opt.flag, dest=opt.dest, action="store_const",
                                     const="yes", help=opt.help_text())
            else:
                section.add_argument(opt.flag, dest=opt.dest, choices=opt.choices,
                                     help=opt.help_text())


def overrides(args: argparse.Namespace) -> dict[str, str]:
    """The settings given on the command line, by config key."""
    given = {}
    for opt in SETTINGS:
        value = getattr(args, opt.dest, None)
        if value is not None:
            given[opt.key] = str(value)
    return given


def env_name(key: str) -> str:
    """The OSSC_ variable of a setting: prefetch.vcpus -> OSSC_PREFETCH_VCPUS."""
    return _BY_KEY[key].env


def flatten(settings: Mapping) -> dict[str, str]:
    """Settings in config-file form by key, as text: {"prefetch": {"vcpus": 2}} ->
    {"prefetch.vcpus": "2"}, for every setting of the table they hold."""
    flat = {}
    for opt in SETTINGS:
        node = settings
        for part in opt.key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            flat[opt.key] = str(node)
    return flat


def resolve(url: Optional[str], given: Mapping[str, str], env: Mapping[str, str],
            config: Optional[str] = None) -> dict:
    """Settings in config-file form: given > env > config file (config, else OSSC_CONFIG,
    else the default path; "" for none) > defaults."""
    pairs = [f"{k}={v}" for k, v in given.items()]
    if config is not None:
        pairs.append(f"config={config}")
    return resolve_settings(url, pairs, env)


def as_overrides(settings: Mapping) -> dict[str, str]:
    """Resolved settings as overrides that reproduce them exactly, whatever the environment
    and config file say."""
    return {**flatten(settings), "config": ""}
