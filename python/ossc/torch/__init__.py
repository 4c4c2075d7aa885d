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

# Checkpoints (h13w): torch.save/torch.load, safetensors, torch.distributed.checkpoint.
from ossc.torch.checkpoint import OssCheckpoint
from ossc.torch.dcp import OssDCPFileSystem, OssStorageReader, OssStorageWriter
from ossc.torch.safetensors import OssSafetensor

__all__ = ["OssCheckpoint", "OssDCPFileSystem", "OssSafetensor", "OssStorageReader",
           "OssStorageWriter"]
