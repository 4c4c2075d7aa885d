"""ossc: load models straight from OSS and S3-compatible object stores at line rate."""

from ossc.native import Client, Fetch, FetchItem, ObjectInfo, OsscError, crc64

__version__ = "0.1.0"
__all__ = ["Client", "Fetch", "FetchItem", "ObjectInfo", "OsscError", "crc64", "__version__"]
