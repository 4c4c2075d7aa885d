"""The store access the checkpoint classes share: one OssModelConnector (credentials, reads)
made from osstorchconnector's constructor arguments, with config.json's checkpointConfig
applied, and write streams through its engine clients."""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional

from ossc.connector import ObjectStream, OssModelConnector, _error, _translated, parse_uri
from ossc.native import UploadStream, lib
from ossc.torch.config_section import config_section, positive_count

# osstorchconnector's default for checkpointConfig.prefetchWorker (fetch threads).
ALIYUN_CHECKPOINT_PREFETCH_WORKER = 4


class EnvironmentVariableCredentialsProvider:
    """Stands for oss2's provider of that name when neither cred_path nor cred_provider is
    given: the engine itself reads OSS_ACCESS_KEY_ID... (AWS_ACCESS_KEY_ID... for s3://)."""


def checkpoint_settings(config_path: str) -> Dict[str, str]:
    """Engine settings from config.json's checkpointConfig: prefetchWorker (fetch threads) and
    prefetchConcurrency (transfers in flight over them) become prefetch.vcpus and
    prefetch.workers, uploadConcurrency (parts in flight, over all uploads) upload.concurrency."""
    path, section = config_section(config_path, "checkpointConfig")

    def count(key: str, default: int) -> int:
        return positive_count(path, "checkpointConfig", section, key, default)

    out: Dict[str, str] = {}
    vcpus = count("prefetchWorker", ALIYUN_CHECKPOINT_PREFETCH_WORKER)
    if "prefetchWorker" in section:
        out["prefetch.vcpus"] = str(vcpus)
    if "prefetchConcurrency" in section:
        out["prefetch.workers"] = str(math.ceil(count("prefetchConcurrency", 1) / vcpus))
    if "uploadConcurrency" in section:
        out["upload.concurrency"] = str(min(64, count("uploadConcurrency", 1)))
    return out


class Store:
    """endpoint, cred_path / cred_provider, config_path and region as osstorchconnector's
    classes take them; settings: more engine overrides ({"upload.partSize": "64MiB"})."""

    def __init__(self, endpoint: str, cred_path: str = "", config_path: str = "",
                 cred_provider: Any = None, region: str = "",
                 settings: Optional[Dict[str, Any]] = None):
        overrides: Dict[str, Any] = checkpoint_settings(config_path or "")
        if region:
            overrides["region"] = region
        overrides.update(settings or {})
        if not cred_path and cred_provider is None:
            cred_provider = EnvironmentVariableCredentialsProvider()
        self.connector = OssModelConnector(endpoint, cred_path=cred_path or "",
                                           config_path=config_path or "",
                                           cred_provider=cred_provider, settings=overrides)

    def locate(self, uri: str):
        """(engine client, key) of an object URI."""
        scheme, bucket, key = parse_uri(os.fspath(uri))
        if not key or key.endswith("/"):
            raise _error(lib.OSSC_E_CONFIG, f"bad URI {uri!r}: names no object")
        self.connector.refresh_credentials()
        return self.connector._client(scheme, bucket), key

    def open_read(self, uri: str) -> ObjectStream:
        return self.connector.open(os.fspath(uri))

    def open_write(self, uri: str) -> UploadStream:
        client, key = self.locate(uri)
        with _translated():
            return client.open_upload(client.bucket, key)

    def exists(self, uri: str) -> bool:
        client, key = self.locate(uri)
        try:
            with _translated():
                client.head(key)
        except FileNotFoundError:
            return False
        return True

    def delete(self, uri: str) -> None:
        client, key = self.locate(uri)
        with _translated():
            client.delete_object(client.bucket, key)

    def rename(self, old: str, new: str) -> None:
        """Copy, then delete (within one bucket)."""
        old_client, old_key = self.locate(old)
        new_client, new_key = self.locate(new)
        if old_client is not new_client:
            raise _error(lib.OSSC_E_CONFIG, f"cannot rename {old} to {new}: another bucket")
        with _translated():
            old_client.copy_object(old_client.bucket, old_key, new_key)
            old_client.delete_object(old_client.bucket, old_key)

    def close(self) -> None:
        self.connector.close()

