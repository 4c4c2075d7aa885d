"""OssCheckpoint: osstorchconnector's checkpoint streams for torch.save and torch.load.

    checkpoint = OssCheckpoint(endpoint=ENDPOINT, cred_path=CRED_PATH, config_path=CONFIG_PATH)
    with checkpoint.writer("oss://bucket/ckpt/epoch.1") as writer:
        torch.save(state_dict, writer)
    with checkpoint.reader("oss://bucket/ckpt/epoch.1") as reader:
        state_dict = torch.load(reader)

A writer is an upload stream (ossc.native.UploadStream): parts go out in parallel while
torch.save still writes; leaving the `with` block completes the object, an exception there
aborts it (nothing appears under the URI). A reader is the connector's ObjectStream: the whole
object is prefetched in parallel, reads wait only for the bytes they cover.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from ossc.connector import ObjectStream
from ossc.native import UploadStream
from ossc.torch.store import Store


class OssCheckpoint:
    """endpoint: the store's endpoint; cred_path: a JSON credentials file, or cred_provider:
    an oss2 credentials provider (neither: OSS_* / AWS_* from the environment); config_path:
    a config.json whose checkpointConfig (prefetchConcurrency, prefetchWorker,
    uploadConcurrency) applies; region: for V4 signing when the endpoint does not say it;
    settings: more engine overrides ({"upload.partSize": "64MiB"})."""

    def __init__(self, endpoint: str, cred_path: str = "", config_path: str = "",
                 cred_provider: Any = None, region: str = "",
                 settings: Optional[Dict[str, Any]] = None):
        self._store = Store(endpoint, cred_path, config_path, cred_provider, region, settings)

    def reader(self, oss_uri: str) -> ObjectStream:
        """A read-only, seekable binary stream of the object at oss_uri (oss://bucket/key or
        s3://bucket/key)."""
        return self._store.open_read(oss_uri)

    def writer(self, oss_uri: str) -> UploadStream:
        """A write-only binary stream that becomes the object at oss_uri when closed."""
        return self._store.open_write(oss_uri)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "OssCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
