"""OssMapDataset and OssIterableDataset: osstorchconnector's datasets (same classes, same
from_prefix / from_objects / from_manifest_file / from_tar and arguments), over the engine.

The dataset's items are listed (or read from the manifest or tar index) once, where the
dataset is made, so every DataLoader worker shares one list: a map dataset's worker fetches
the indices its sampler hands it (a whole batch at once through __getitems__), an iterable
dataset's worker takes its contiguous share (torch.utils.data.get_worker_info) and reads it
with the next batch always in flight. Each process makes its own engine client on first use.
"""

from __future__ import annotations

import io
from functools import partial
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.data

from ossc.torch import entries as sources
from ossc.torch.client import ProcessConnector
from ossc.torch.data_object import DataObject
from ossc.torch.entries import Entry
from ossc.torch.prefetch import fetch_all, iterate

ManifestParser = Callable[[io.IOBase], Iterable[Tuple[str, str]]]


def identity(obj: DataObject) -> DataObject:
    return obj


class _OssDataset:
    """What both datasets share: the connection, the entries, the transform."""

    def __init__(self, endpoint: str, cred_path: str = "", config_path: str = "",
                 get_entries: Optional[Callable[..., List[Entry]]] = None,
                 transform: Callable[[DataObject], Any] = identity,
                 cred_provider: Any = None, *, region: str = "",
                 settings: Optional[dict] = None):
        self._connection = ProcessConnector(endpoint, cred_path, config_path, cred_provider,
                                            region, settings)
        self._transform = transform
        self._entries: List[Entry] = []
        if get_entries is not None:
            self._entries = get_entries(self._connection.get(), self._connection.dataset)

    @classmethod
    def _make(cls, get_entries, endpoint, cred_path, cred_provider, config_path, transform,
              region, settings, **more):
        return cls(endpoint, cred_path, config_path, get_entries, transform, cred_provider,
                   region=region, settings=settings, **more)

    @classmethod
    def from_prefix(cls, oss_uri: str, endpoint: str, *, cred_path: str = "",
                    cred_provider: Any = None, config_path: str = "",
                    transform: Callable[[DataObject], Any] = identity, region: str = "",
                    settings: Optional[dict] = None):
        """Every object under oss_uri (oss://bucket/prefix/ or s3://bucket/prefix/), by key;
        datasetConfig.enableFastList lists key ranges concurrently."""
        def get(connector, dataset):
            return sources.from_prefix(connector, oss_uri, dataset.fast_list,
                                       dataset.list_threads)
        return cls._make(get, endpoint, cred_path, cred_provider, config_path, transform,
                         region, settings)

    @classmethod
    def from_objects(cls, object_uris: Union[str, Iterable[str]], endpoint: str, *,
                     cred_path: str = "", cred_provider: Any = None, config_path: str = "",
                     transform: Callable[[DataObject], Any] = identity, region: str = "",
                     settings: Optional[dict] = None):
        """The objects named by URI, in that order (sizes are asked when fetched)."""
        uris = [object_uris] if isinstance(object_uris, str) else list(object_uris)
        return cls._make(lambda connector, dataset: sources.from_uris(uris), endpoint,
                         cred_path, cred_provider, config_path, transform, region, settings)

    @classmethod
    def from_manifest_file(cls, manifest_file_path: str,
                           manifest_parser: Optional[ManifestParser] = None,
                           oss_base_uri: str = "", endpoint: str = "", *,
                           cred_path: str = "", cred_provider: Any = None,
                           config_path: str = "",
                           transform: Callable[[DataObject], Any] = identity,
                           region: str = "", settings: Optional[dict] = None):
        """The objects a manifest names (a local file or an object URI): manifest_parser
        reads it (a binary reader) into (name, label) pairs, names relative to oss_base_uri;
        without a parser, osstorchconnector's documented format ('name [label]' per line)."""
        def get(connector, dataset):
            return sources.from_manifest(connector, manifest_file_path, manifest_parser,
                                         oss_base_uri)
        return cls._make(get, endpoint, cred_path, cred_provider, config_path, transform,
                         region, settings)


class OssMapDataset(_OssDataset, torch.utils.data.Dataset):
    """A map-style dataset: dataset[i] fetches item i; a DataLoader batch (__getitems__) is
    fetched at once; iterating the dataset itself prefetches ahead as OssIterableDataset
    does."""

    @classmethod
    def from_tar(cls, tar_uri: str, tar_index_uri: str, endpoint: str, *,
                 cred_path: str = "", cred_provider: Any = None, config_path: str = "",
                 transform: Callable[[DataObject], Any] = identity, region: str = "",
                 settings: Optional[dict] = None):
        """The members of a tar (an object URI) listed in its index (`ossc tar index`; an
        object URI or a local file), in archive order; each member is one ranged read,
        adjacent members of a batch one read together."""
        return cls._make(partial(_tar_entries, tar_uri, tar_index_uri), endpoint, cred_path,
                         cred_provider, config_path, transform, region, settings)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> Any:
        entry = self._entries[i]
        return self._transform(fetch_all(self._connection.get(), [entry])[0])

    def __getitems__(self, indices: Sequence[int]) -> List[Any]:
        entries = [self._entries[i] for i in indices]
        return [self._transform(o) for o in fetch_all(self._connection.get(), entries)]

    def __iter__(self) -> Iterator[Any]:
        settings = self._connection.dataset
        return map(self._transform, iterate(self._connection.get(), self._entries,
                                            settings.prefetch_objects,
                                            settings.prefetch_bytes))


class OssIterableDataset(_OssDataset, torch.utils.data.IterableDataset):
    """An iterable dataset: each DataLoader worker reads a contiguous share of the items in
    order, the next prefetch batch in flight while it hands out this one. from_tar with
    shuffle=True reads chunks of about shuffle_chunk_size members in a random order (drawn
    when the dataset is made, again on shuffle())."""

    def __init__(self, endpoint: str, cred_path: str = "", config_path: str = "",
                 get_entries: Optional[Callable[..., List[Entry]]] = None,
                 transform: Callable[[DataObject], Any] = identity,
                 cred_provider: Any = None, *, region: str = "",
                 settings: Optional[dict] = None, shuffle: bool = False,
                 shuffle_chunk_size: int = 1000):
        super().__init__(endpoint, cred_path, config_path, get_entries, transform,
                         cred_provider, region=region, settings=settings)
        self._order: List[Tuple[int, int]] = [(0, len(self._entries))]
        self._chunk_size = max(1, shuffle_chunk_size)
        if shuffle:
            self.shuffle()

    @classmethod
    def from_tar(cls, tar_uri: str, tar_index_uri: str, endpoint: str, *,
                 cred_path: str = "", cred_provider: Any = None, config_path: str = "",
                 transform: Callable[[DataObject], Any] = identity, shuffle: bool = False,
                 shuffle_chunk_size: int = 1000, region: str = "",
                 settings: Optional[dict] = None):
        """The members of a tar listed in its index, in archive order (or in shuffled chunks);
        adjacent members are read together in one ranged read."""
        return cls._make(partial(_tar_entries, tar_uri, tar_index_uri), endpoint, cred_path,
                         cred_provider, config_path, transform, region, settings,
                         shuffle=shuffle, shuffle_chunk_size=shuffle_chunk_size)

    def shuffle(self, generator: Optional[torch.Generator] = None) -> None:
        """A new random order of chunks (about shuffle_chunk_size items each)."""
        n = len(self._entries)
        chunks = [(start, min(n, start + self._chunk_size))
                  for start in range(0, n, self._chunk_size)]
        order = torch.randperm(len(chunks), generator=generator).tolist()
        self._order = [chunks[i] for i in order]

    def _ordered(self) -> List[Entry]:
        return [e for start, end in self._order for e in self._entries[start:end]]

    def __iter__(self) -> Iterator[Any]:
        entries = self._ordered()
        info = torch.utils.data.get_worker_info()
        if info is not None:
            share = -(-len(entries) // info.num_workers)
            entries = entries[info.id * share:(info.id + 1) * share]
        settings = self._connection.dataset
        return map(self._transform, iterate(self._connection.get(), entries,
                                            settings.prefetch_objects,
                                            settings.prefetch_bytes))


def _tar_entries(tar_uri: str, index_uri: str, connector, dataset) -> List[Entry]:
    return sources.from_tar(connector, tar_uri, index_uri)
