"""ossc: load models straight from OSS and S3-compatible object stores at line rate."""

__version__ = "0.1.0"
__all__ = ["Client", "Fetch", "FetchItem", "ObjectInfo", "OsscError", "crc64", "__version__"]


def __getattr__(name: str):
    """The binding's names, loaded on first use: importing the package (say, for the console
    entry points) must not fail where libossc.so cannot be loaded."""
    if name in __all__:
        from ossc import native

        return getattr(native, name)
    raise AttributeError(f"module 'ossc' has no attribute {name!r}")
