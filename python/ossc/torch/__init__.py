"""ossc.torch: osstorchconnector's datasets and checkpoint classes over libossc, for OSS
(oss://) and S3-compatible stores (s3://). Change the import, keep the calls:

    from ossc.torch import OssMapDataset        # was: from osstorchconnector import ...
    dataset = OssMapDataset.from_prefix("oss://bucket/images/", endpoint=ENDPOINT,
                                        cred_path=CRED_PATH, config_path=CONFIG_PATH)

    from ossc.torch import OssCheckpoint
    checkpoint = OssCheckpoint(endpoint=ENDPOINT, cred_path=CRED_PATH, config_path=CONFIG_PATH)
    with checkpoint.writer("oss://bucket/ckpt/epoch.1") as writer:
        torch.save(state_dict, writer)

Needs torch (`import ossc` does not). OssSafetensor reads and writes the safetensors format
itself (the safetensors package is not needed).
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError("ossc.torch needs PyTorch: pip install torch (ossc itself, its "
                      "commands and OssModelConnector work without it)") from exc

from ossc.torch.checkpoint import OssCheckpoint
from ossc.torch.data_object import DataObject
from ossc.torch.dataset import OssIterableDataset, OssMapDataset, identity
from ossc.torch.entries import parse_manifest

# safetensors and torch.distributed.checkpoint load on first use: importing
# torch.distributed.checkpoint costs more than a second of CPU, which every DataLoader worker
# would pay.
_LAZY = {
    "OssSafetensor": "ossc.torch.safetensors",
    "OssDCPFileSystem": "ossc.torch.dcp",
    "OssStorageReader": "ossc.torch.dcp",
    "OssStorageWriter": "ossc.torch.dcp",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["DataObject", "OssCheckpoint", "OssDCPFileSystem", "OssIterableDataset",
           "OssMapDataset", "OssSafetensor", "OssStorageReader", "OssStorageWriter", "identity",
           "parse_manifest"]
