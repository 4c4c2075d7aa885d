"""OssSafetensor: safetensors files on the store, as osstorchconnector's class reads and writes
them:

    sfts = OssSafetensor(endpoint=ENDPOINT, cred_path=CRED_PATH, config_path=CONFIG_PATH)
    sfts.save_file(tensors, "oss://bucket/model.safetensors", metadata)
    tensors = sfts.load_file("oss://bucket/model.safetensors", device="cpu")
    with sfts.safe_open("oss://bucket/model.safetensors", device="cpu") as f:
        for key in f.keys():
            tensor = f.get_tensor(key)

The format (an 8-byte little-endian header length, a JSON header padded with spaces to a
multiple of 8, then the tensors' bytes) is written and read here: save_file streams each
tensor's bytes straight into the upload (no serialized copy of the file in memory), and a
read copies each tensor once, from the prefetched object into its own storage.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Dict, List, Optional, Union

import torch

from ossc.connector import ObjectStream, _error
from ossc.native import lib
from ossc.torch.store import Store

# The safetensors dtype names (safetensors' own table, for the dtypes torch has).
_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2", torch.uint16: "U16", torch.uint32: "U32",
    torch.uint64: "U64", torch.complex64: "C64",
}
_TORCH_DTYPES = {name: dtype for dtype, name in _DTYPES.items()}
# A header larger than this is not a safetensors file (safetensors' own limit).
MAX_HEADER = 100_000_000


def _bytes_of(tensor: torch.Tensor):
    """The tensor's bytes in row-major order, as a buffer (no copy for a contiguous CPU
    tensor)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy()


def _header(tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]]) -> bytes:
    header: Dict[str, Any] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("safetensors metadata must map str to str")
        header["__metadata__"] = metadata
    offset = 0
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name}: not a tensor ({type(tensor).__name__})")
        if tensor.layout != torch.strided:
            raise ValueError(f"{name}: only dense tensors go into safetensors")
        if tensor.dtype not in _DTYPES:
            raise ValueError(f"{name}: safetensors has no dtype {tensor.dtype}")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


class SafeOpen:
    """An open safetensors object: keys(), metadata(), get_tensor(name), get_slice(name) (the
    whole tensor, to slice), as safetensors.safe_open's. Tensors come to `device`."""

    def __init__(self, stream: ObjectStream, device: Union[str, int, torch.device] = "cpu"):
        self._stream = stream
        self._device = torch.device(device) if not isinstance(device, int) \
            else torch.device("cuda", device)
        prefix = stream.read(8)
        if len(prefix) != 8:
            raise _error(lib.OSSC_E_PROTOCOL, f"{stream.name}: not a safetensors file (shorter "
                         "than its header)")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER or 8 + length > stream.size():
            raise _error(lib.OSSC_E_PROTOCOL, f"{stream.name}: not a safetensors file (header "
                         f"length {length})")
        try:
            header = json.loads(stream.read(length))
        except ValueError as exc:
            raise _error(lib.OSSC_E_PROTOCOL, f"{stream.name}: bad safetensors header: "
                         f"{exc}") from None
        self._metadata = header.pop("__metadata__", None)
        self._data_start = 8 + length
        self._entries: Dict[str, Dict[str, Any]] = header
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            dtype = _TORCH_DTYPES.get(entry["dtype"])
            if dtype is None:
                raise _error(lib.OSSC_E_PROTOCOL, f"{stream.name}: {name} has dtype "
                             f"{entry['dtype']}, which torch lacks")
            count = 1
            for dim in entry["shape"]:
                count *= dim
            if end - begin != count * dtype.itemsize or \
                    self._data_start + end > stream.size() or begin > end:
                raise _error(lib.OSSC_E_PROTOCOL, f"{stream.name}: {name}'s data_offsets do not "
                             "match its shape and dtype or the object's size")

    def keys(self) -> List[str]:
        return sorted(self._entries)

    def offset_keys(self) -> List[str]:
        """The names in the order of their bytes in the object (the fastest order to read)."""
        return sorted(self._entries, key=lambda n: self._entries[n]["data_offsets"][0])

    def metadata(self) -> Optional[Dict[str, str]]:
        return self._metadata

    def get_tensor(self, name: str) -> torch.Tensor:
        entry = self._entries[name]
        begin, end = entry["data_offsets"]
        tensor = torch.empty(entry["shape"], dtype=_TORCH_DTYPES[entry["dtype"]])
        if end > begin:
            self._stream.seek(self._data_start + begin)
            got = self._stream.readinto(tensor.reshape(-1).view(torch.uint8).numpy())
            if got != end - begin:
                raise _error(lib.OSSC_E_PROTOCOL, f"{self._stream.name}: {name} is cut short")
        return tensor if self._device.type == "cpu" else tensor.to(self._device)

    get_slice = get_tensor

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "SafeOpen":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OssSafetensor:
    """Constructor arguments as OssCheckpoint's."""

    def __init__(self, endpoint: str, cred_path: str = "", config_path: str = "",
                 cred_provider: Any = None, region: str = "",
                 settings: Optional[Dict[str, Any]] = None):
        self._store = Store(endpoint, cred_path, config_path, cred_provider, region, settings)

    def safe_open(self, uri: str, framework: str = "pt",
                  device: Union[str, int, torch.device] = "cpu") -> SafeOpen:
        if framework not in ("pt", "torch", "pytorch"):
            raise ValueError(f"framework {framework!r}: only \"pt\" (torch) is supported")
        stream = self._store.open_read(uri)
        try:
            return SafeOpen(stream, device)
        except BaseException:
            stream.close()
            raise

    def load_file(self, uri: str, device: Union[str, int, torch.device] = "cpu"
                  ) -> Dict[str, torch.Tensor]:
        with self.safe_open(uri, device=device) as f:
            return {name: f.get_tensor(name) for name in f.offset_keys()}

    def save_file(self, tensors: Dict[str, torch.Tensor], uri: str,
                  metadata: Optional[Dict[str, str]] = None) -> None:
        """Writes tensors as one safetensors object: whole, or (on any failure) not at all."""
        header = _header(tensors, metadata)
        with self._store.open_write(uri) as out:
            out.write(header)
            for tensor in tensors.values():
                if tensor.numel():
                    out.write(_bytes_of(tensor))

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> "OssSafetensor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
