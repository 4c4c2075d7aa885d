"""The engine's settings as command-line options, and their resolution.

Resolution itself (CLI > environment > config file > defaults) happens in one place, the
engine's settings table (preload/src/engine/settings.c); this module only maps options to its
keys and hands them over.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ossc.native import resolve_settings


@dataclass(frozen=True)
class SettingOption:
    flag: str
    key: str  # the config.json name; a dot is a nested object
    help: str
    group: str = "store"
    choices: Optional[Sequence[str]] = None
    is_switch: bool = False  # a flag without value that sets "yes"


OPTIONS = (
    SettingOption("--endpoint", "endpoint", "e.g. http://oss-cn-hangzhou-internal.aliyuncs.com "
                  "(default: OSS_ENDPOINT, or AWS_ENDPOINT_URL for s3://)"),
    SettingOption("--region", "region", "region for V4 signing (default: from the endpoint)"),
    SettingOption("--signature", "signature", "OSS signature version", choices=("v4", "v1")),
    SettingOption("--addressing", "addressing", "bucket in the host name or in the path",
                  choices=("virtual", "path")),
    SettingOption("--credentials-file", "credentialsFile", "JSON file with AccessKeyId, "
                  "AccessKeySecret, SecurityToken, Expiration"),
    SettingOption("--vcpus", "prefetch.vcpus", "fetch threads", "tuning"),
    SettingOption("--workers", "prefetch.workers", "transfers in flight per thread", "tuning"),
    SettingOption("--chunk-size", "chunkSize", "bytes per ranged GET, e.g. 32MiB", "tuning"),
    SettingOption("--retries", "retries", "retries per request after the first attempt",
                  "tuning"),
    SettingOption("--connect-timeout-sec", "connectTimeoutSec", "TCP/TLS connect timeout",
                  "tuning"),
    SettingOption("--stall-timeout-sec", "stallTimeoutSec", "a transfer below 1 KiB/s for "
                  "this long is retried", "tuning"),
    SettingOption("--small-file-size", "smallFileSize", "objects below this size are fetched "
                  "whole into MODEL_DIR before COMMAND starts", "session"),
    SettingOption("--expire-time-sec", "expireTimeSec", "release the data files this long "
                  "after the last open of a complete session (0: never)", "session"),
    SettingOption("--read-timeout-sec", "readTimeoutSec", "a read waiting longer fails with "
                  "EIO", "session"),
    SettingOption("--cache-dir", "cacheDir", "where the data files go (default: the "
                  "session in /dev/shm), e.g. a local NVMe directory", "session"),
    SettingOption("--verify-before-read", "verifyBeforeRead", "readers see an object the "
                  "store sends a CRC-64 for only once it verified (default yes)", "session",
                  choices=("yes", "no")),
    SettingOption("--allow-non-empty-model-dir", "allowNonEmptyModelDir", "fill a non-empty "
                  "MODEL_DIR that ossc did not create", "session", is_switch=True),
    SettingOption("--log-level", "logLevel", "engine and shim log level", "logging",
                  choices=("error", "warn", "info", "debug", "off")),
    SettingOption("--log-path", "logPath", "log file (default: stderr)", "logging"),
    SettingOption("--audit-path", "auditPath", "a line per model file a process read: pid, "
                  "path, bytes, time waited", "logging"),
)


def add_options(parser: argparse.ArgumentParser, groups: Sequence[str]) -> None:
    """Adds the options of the given groups, each defaulting to None (not given)."""
    for group in groups:
        section = parser.add_argument_group(group)
        for opt in OPTIONS:
            if opt.group != group:
                continue
            if opt.is_switch:
                section.add_argument(opt.flag, action="store_const", const="yes",
                                     help=opt.help)
            else:
                section.add_argument(opt.flag, choices=opt.choices, help=opt.help)


def overrides(args: argparse.Namespace) -> dict[str, str]:
    """The settings given on the command line, by config key."""
    given = {}
    for opt in OPTIONS:
        value = getattr(args, opt.flag[2:].replace("-", "_"), None)
        if value is not None:
            given[opt.key] = str(value)
    return given


def env_name(key: str) -> str:
    """The OSSC_ variable of a setting: prefetch.vcpus -> OSSC_PREFETCH_VCPUS."""
    return "OSSC_" + "".join("_" + c if c.isupper() else c.upper()
                             for c in key.replace(".", "_"))


def flatten(settings: Mapping, prefix: str = "") -> dict[str, str]:
    """{"prefetch": {"vcpus": 2}} -> {"prefetch.vcpus": "2"}."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = str(value)
    return flat


def resolve(url: Optional[str], given: Mapping[str, str], env: Mapping[str, str],
            config: Optional[str] = None) -> dict:
    """Settings in config-file form: given > env > config file (config, else OSSC_CONFIG,
    else /etc/oss-connector/config.json; "" for none) > defaults."""
    pairs = [f"{k}={v}" for k, v in given.items()]
    if config is not None:
        pairs.append(f"config={config}")
    return resolve_settings(url, pairs, env)


def as_overrides(settings: Mapping) -> dict[str, str]:
    """Resolved settings as overrides that reproduce them exactly, whatever the environment
    and config file say."""
    return {**flatten(settings), "config": ""}
