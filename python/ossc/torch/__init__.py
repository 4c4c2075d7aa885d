"""ossc.torch: osstorchconnector's checkpoint classes over libossc, for OSS (oss://) and
S3-compatible stores (s3://). Change the import, keep the calls:

    from ossc.torch import OssCheckpoint        # was: from osstorchconnector import ...
    checkpoint = OssCheckpoint(endpoint=ENDPOINT, cred_path=CRED_PATH, config_path=CONFIG_PATH)
    with checkpoint.writer("oss://bucket/ckpt/epoch.1") as writer:
        torch.save(state_dict, writer)

Needs torch (`import ossc` does not). OssSafetensor reads and writes the safetensors format
itself (the safetensors package is not needed).
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("ossc.torch needs PyTorch: pip install torch (ossc itself, its "
                      "commands and OssModelConnector work without it)") from exc

# Checkpoints: torch.save/torch.load here; safetensors and torch.distributed.checkpoint on
# first use (importing torch.distributed.checkpoint costs more than a second of CPU, which
# every DataLoader worker would pay).
from ossc.torch.checkpoint import OssCheckpoint

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


__all__ = ["OssCheckpoint", "OssDCPFileSystem", "OssSafetensor", "OssStorageReader",
           "OssStorageWriter"]
