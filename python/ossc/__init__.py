"""ossc: load models straight from OSS and S3-compatible object stores at line rate."""

_NATIVE = ["Client", "Fetch", "FetchItem", "ObjectInfo", "OsscError", "crc64"]
# The drop-in for Aliyun's OSS Model Connector (ossc.connector).
_CONNECTOR = ["OssModelConnector", "OssObject", "ObjectStream", "ConnectorError", "ConfigError",
              "CredentialsError", "RefusedError", "NotFoundError", "NetworkError",
              "IntegrityError"]
__all__ = [*_NATIVE, *_CONNECTOR, "__version__"]


def __getattr__(name: str):
    """The binding's names, loaded on first use: importing the package (say, for the console
    entry points) must not fail where libossc.so cannot be loaded."""
    if name in _NATIVE:
        from ossc import native

        return getattr(native, name)
    if name == "__version__":  # the engine's: CMakeLists.txt's project version, as everywhere
        from ossc.native import ffi, lib

        return ffi.string(lib.ossc_version()).decode()
    if name in _CONNECTOR:
        from ossc import connector

        return getattr(connector, name)
    if name in ("config", "connector"):  # ossc.config.generate(...) without an import
        import importlib

        return importlib.import_module(f"ossc.{name}")
    raise AttributeError(f"module 'ossc' has no attribute {name!r}")
