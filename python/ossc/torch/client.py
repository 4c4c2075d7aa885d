"""The connection a dataset reads through: an OssModelConnector per process, made on first use
in that process (a DataLoader worker forked from the main process never touches the engine
client it inherited: its threads and sockets belong to the parent), and the dataset settings
of config.json's datasetConfig (osstorchconnector's keys, and ossc's window keys)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ossc import connector as connector_module
from ossc.connector import OssModelConnector, _error
from ossc.native import lib
from ossc.torch.config_section import config_section, positive_count

# Objects and bytes one prefetch batch holds; iteration keeps the batch being read and the
# next one in flight, so a worker holds at most twice these.
PREFETCH_OBJECTS = 64
PREFETCH_BYTES = 64 << 20
# Fetch threads per process when nothing sets them: every DataLoader worker runs its own
# engine, so one thread each (8 transfers in flight on it) is enough; on 2 cores with the
# store beside it, 2 threads per worker read 100 KiB objects slower (scripts/bench_dataset.py).
DATASET_VCPUS = 1

# Connectors a forked child inherited: kept referenced (never used, never freed) so that
# garbage collection in the child does not free the parent's engine clients.
_inherited: List[OssModelConnector] = []


@dataclass
class DatasetSettings:
    """What datasetConfig sets. prefetchWorker (fetch threads; else DATASET_VCPUS, unless
    OSSC_PREFETCH_VCPUS says) and prefetchConcurrency (transfers in flight, spread over those
    threads) become the engine's prefetch.vcpus and prefetch.workers; enableFastList and
    listConcurrency choose the listing; prefetchObjects and prefetchBytes (ossc's) bound a
    prefetch batch."""

    engine: Dict[str, str] = field(default_factory=dict)
    fast_list: bool = False
    list_threads: int = 0
    prefetch_objects: int = PREFETCH_OBJECTS
    prefetch_bytes: int = PREFETCH_BYTES

    @classmethod
    def from_config(cls, config_path: str) -> "DatasetSettings":
        path, section = config_section(config_path, "datasetConfig")

        def count(key: str, default: int) -> int:
            return positive_count(path, "datasetConfig", section, key, default)

        out = cls()
        vcpus = count("prefetchWorker", DATASET_VCPUS)
        if "prefetchWorker" in section:
            out.engine["prefetch.vcpus"] = str(vcpus)
        if "prefetchConcurrency" in section:
            concurrency = count("prefetchConcurrency", 1)
            out.engine["prefetch.workers"] = str(math.ceil(concurrency / vcpus))
        out.fast_list = bool(section.get("enableFastList", False))
        if "listConcurrency" in section:
            out.list_threads = count("listConcurrency", 1)
        out.prefetch_objects = count("prefetchObjects", PREFETCH_OBJECTS)
        out.prefetch_bytes = count("prefetchBytes", PREFETCH_BYTES)
        return out


class ProcessConnector:
    """Makes the dataset's OssModelConnector in the process that first needs it, and a new one
    in each forked or spawned worker. Picklable: only the arguments travel."""

    def __init__(self, endpoint: str, cred_path: str = "", config_path: str = "",
                 cred_provider: Any = None, region: str = "",
                 settings: Optional[Dict[str, Any]] = None):
        if not endpoint:
            raise _error(lib.OSSC_E_CONFIG, "endpoint is required (e.g. "
                         "http://oss-cn-beijing-internal.aliyuncs.com)")
        self.endpoint = endpoint
        self.cred_path = cred_path or ""
        self.config_path = config_path or ""
        self.cred_provider = cred_provider
        self.dataset = DatasetSettings.from_config(self.config_path)
        self.settings: Dict[str, Any] = dict(self.dataset.engine)
        if "OSSC_PREFETCH_VCPUS" not in os.environ:
            self.settings.setdefault("prefetch.vcpus", str(DATASET_VCPUS))
        if region:
            self.settings["region"] = region
        self.settings.update(settings or {})
        self._pid: Optional[int] = None
        self._connector: Optional[OssModelConnector] = None

    def get(self) -> OssModelConnector:
        if self._pid != os.getpid():
            if self._connector is not None:
                _inherited.append(self._connector)
                connector_module._live_connectors.discard(self._connector)
            self._connector = OssModelConnector(self.endpoint, cred_path=self.cred_path,
                                                config_path=self.config_path,
                                                cred_provider=self.cred_provider,
                                                settings=self.settings)
            self._pid = os.getpid()
        return self._connector

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pid"] = state["_connector"] = None
        return state
