"""ossc.torch: osstorchconnector's datasets over libossc, for OSS (oss://) and S3-compatible
stores (s3://). Change the import, keep the calls:

    from ossc.torch import OssMapDataset        # was: from osstorchconnector import ...
    dataset = OssMapDataset.from_prefix("oss://bucket/images/", endpoint=ENDPOINT,
                                        cred_path=CRED_PATH, config_path=CONFIG_PATH)

Needs torch (`import ossc` does not).
"""

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("ossc.torch needs PyTorch: pip install torch (ossc itself, its "
                      "commands and OssModelConnector work without it)") from exc

from ossc.torch.data_object import DataObject
from ossc.torch.dataset import OssIterableDataset, OssMapDataset, identity
from ossc.torch.entries import parse_manifest

__all__ = ["DataObject", "OssIterableDataset", "OssMapDataset", "identity", "parse_manifest"]
