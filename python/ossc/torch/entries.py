"""What a dataset holds: one Entry per item, made from a prefix (a listing), a list of URIs, a
manifest file, or a tar and its index. Entries are plain data: a DataLoader worker gets them
by fork or pickle and fetches its share."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

from ossc.connector import OssModelConnector, _error, parse_uri
from ossc.native import lib
from ossc.tarindex import TarIndex, TarIndexError


@dataclass(frozen=True)
class Entry:
    """An item: `length` bytes at `offset` of the object scheme://bucket/key (the whole object,
    or a tar member). length None: the object's size, unknown until a HEAD asks (URIs and
    manifests name objects without sizes). name: the item's key as users see it (a tar
    member's name); object_size: the object's, when it differs from length (a tar's)."""

    scheme: str
    bucket: str
    key: str
    length: Optional[int] = None
    label: str = ""
    name: Optional[str] = None
    offset: int = 0
    object_size: Optional[int] = None

    @property
    def item_key(self) -> str:
        return self.key if self.name is None else self.name

    def sized(self, size: int) -> "Entry":
        return Entry(self.scheme, self.bucket, self.key, size, self.label, self.name,
                     self.offset, size)


def from_prefix(connector: OssModelConnector, uri: str, fast: bool = False,
                threads: int = 0) -> List[Entry]:
    """Every object under the prefix uri (oss:// or s3://), sorted by key; directory markers
    (keys ending in '/') are left out."""
    scheme, bucket, prefix = parse_uri(uri)
    if fast and threads:
        client = connector._client(scheme, bucket)
        connector.refresh_credentials()
        objects = client.list_fast(prefix, threads)
    else:
        objects = connector.list(f"{scheme}://{bucket}", prefix, fast=fast)
    return sorted((Entry(scheme, bucket, o.key, o.size, object_size=o.size)
                   for o in objects if not o.key.endswith("/")), key=lambda e: e.key)


def from_uris(uris: Union[str, Iterable[str]], labels: Optional[Iterable[str]] = None
              ) -> List[Entry]:
    """One entry per object URI, in the order given; sizes come from a HEAD when fetched."""
    if isinstance(uris, str):
        uris = [uris]
    uris = list(uris)
    labels = list(labels) if labels is not None else [""] * len(uris)
    out = []
    for uri, label in zip(uris, labels):
        scheme, bucket, key = parse_uri(uri)
        if not key or key.endswith("/"):
            raise _error(lib.OSSC_E_CONFIG, f"bad URI {uri!r}: names no object")
        out.append(Entry(scheme, bucket, key, label=label))
    return out


def parse_manifest(reader: io.IOBase) -> Iterator[Tuple[str, str]]:
    """osstorchconnector's documented manifest format: one object per line, its name
    (relative to the dataset's base URI) and optionally a label after a space."""
    for line in reader.read().decode("utf-8").splitlines():
        parts = line.strip().split(" ")
        if parts[0]:
            yield parts[0], parts[1] if len(parts) > 1 else ""


def join_uri(base: str, name: str) -> str:
    """A manifest name under the base URI (a name that is a URI itself stays as it is)."""
    if "://" in name:
        return name
    if not base:
        raise _error(lib.OSSC_E_CONFIG, f"manifest name {name!r} is not a URI and no "
                     "oss_base_uri was given")
    return base + name.lstrip("/") if base.endswith("/") else f"{base}/{name.lstrip('/')}"


def _open_file(connector: OssModelConnector, path: str):
    """A local file, or an object (oss:// or s3://) read through the connector."""
    if "://" in path:
        return connector.open(path)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _error(lib.OSSC_E_CONFIG, f"cannot open {path}: {exc.strerror}") from None


def from_manifest(connector: OssModelConnector, manifest_path: str,
                  parser: Optional[Callable[[io.IOBase], Iterable[Tuple[str, str]]]],
                  base_uri: str) -> List[Entry]:
    with _open_file(connector, manifest_path) as reader:
        pairs = list((parser or parse_manifest)(reader))
    return from_uris([join_uri(base_uri, name) for name, _ in pairs],
                     [label or "" for _, label in pairs])


def from_tar(connector: OssModelConnector, tar_uri: str, index_uri: str) -> List[Entry]:
    """One entry per member of the tar's index (a store URI or a local file), in archive
    order."""
    scheme, bucket, key = parse_uri(tar_uri)
    with _open_file(connector, index_uri) as reader:
        data = reader.read()
    try:
        index = TarIndex.parse(data, index_uri)
    except TarIndexError as exc:
        raise _error(lib.OSSC_E_CONFIG, str(exc)) from None
    return [Entry(scheme, bucket, key, m.size, name=m.name, offset=m.offset,
                  object_size=index.tar_size) for m in index.members]
