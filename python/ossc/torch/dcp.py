"""torch.distributed.checkpoint on the store, as osstorchconnector's OssDCPFileSystem:

    fs = OssDCPFileSystem(endpoint=ENDPOINT, cred_path=CRED_PATH, config_path=CONFIG_PATH)
    DCP.save(state_dict, storage_writer=fs.writer("oss://bucket/dcp/step-100"))
    DCP.load(state_dict, storage_reader=fs.reader("oss://bucket/dcp/step-100"))

torch's FileSystemWriter/Reader do the planning and the file layout (a data object per rank
and writer thread, then .metadata); this file system gives them the store: a written file is
an upload stream (parts in parallel, whole or nothing), a read one the connector's prefetched
ObjectStream, a rename a server-side copy and a delete, a directory nothing at all.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Generator, Optional, Union

from torch.distributed.checkpoint.filesystem import (
    FileSystemBase,
    FileSystemReader,
    FileSystemWriter,
)

from ossc.connector import ConnectorError, parse_uri
from ossc.torch.store import Store

PathLike = Union[str, os.PathLike]


def _text(path: PathLike) -> str:
    return path if isinstance(path, str) else str(path)


class OssDCPFileSystem(FileSystemBase):
    """Constructor arguments as OssCheckpoint's (osstorchconnector's, region included). For
    DCP only: not a general file system."""

    def __init__(self, endpoint: str, cred_path: str = "", config_path: str = "",
                 cred_provider: Any = None, region: str = "",
                 settings: Optional[Dict[str, Any]] = None):
        self._store = Store(endpoint, cred_path, config_path, cred_provider, region, settings)
        self._path: PathLike = ""

    @contextmanager
    def create_stream(self, path: PathLike, mode: str) -> Generator[io.IOBase, None, None]:
        if mode == "wb":
            with self._store.open_write(_text(path)) as stream:
                yield stream
        elif mode == "rb":
            with self._store.open_read(_text(path)) as stream:
                yield stream
        else:
            raise ValueError(f"mode {mode!r}: only rb and wb are supported")

    def concat_path(self, path: PathLike, suffix: str) -> str:
        return _text(path).rstrip("/") + "/" + suffix

    def init_path(self, path: PathLike) -> PathLike:
        self._path = path
        return path

    def rename(self, path: PathLike, new_path: PathLike) -> None:
        self._store.rename(_text(path), _text(new_path))

    def mkdir(self, path: PathLike) -> None:
        pass  # a store has no directories: keys make them

    def exists(self, path: PathLike) -> bool:
        return self._store.exists(_text(path))

    def rm_file(self, path: PathLike) -> None:
        self._store.delete(_text(path))

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        if isinstance(checkpoint_id, Path):
            return True
        try:
            parse_uri(_text(checkpoint_id))
        except ConnectorError:
            return False
        return True

    def writer(self, path: str, **kwargs) -> "OssStorageWriter":
        return OssStorageWriter(self, path, **kwargs)

    def reader(self, path: str) -> "OssStorageReader":
        return OssStorageReader(self, path)

    def close(self) -> None:
        self._store.close()


class OssStorageWriter(FileSystemWriter):
    """FileSystemWriter on an OssDCPFileSystem (kwargs: FileSystemWriter's, e.g.
    thread_count; sync_files has no meaning on a store: an object is durable once written)."""

    def __init__(self, fs: OssDCPFileSystem, path: str, **kwargs) -> None:
        kwargs["sync_files"] = False
        super().__init__(path=path, **kwargs)
        self.fs = fs
        self.path = fs.init_path(path)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        return OssDCPFileSystem.validate_checkpoint_id(checkpoint_id)


class OssStorageReader(FileSystemReader):
    """FileSystemReader on an OssDCPFileSystem."""

    def __init__(self, fs: OssDCPFileSystem, path: str) -> None:
        super().__init__(path)
        self.fs = fs
        self.path = fs.init_path(path)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: PathLike) -> bool:
        return OssDCPFileSystem.validate_checkpoint_id(checkpoint_id)
