"""osstorchconnector's documented dataset examples (its docs/torchconnector/examples.md and the
Alibaba Cloud pages for OssMapDataset / OssIterableDataset), run against ossc.torch: only the
import line differs. The constants come from the environment (a test store instead of Alibaba's
buckets), and the image transform decodes with torch instead of PIL/torchvision (not installed
here); the calls, arguments and item attributes are the documented ones.

ENDPOINT, CRED_PATH, CONFIG_PATH, OSS_URI (a prefix), MANIFEST (its manifest file's URI) and
BASE_URI (what the manifest's names are relative to). Prints "ok N" after N items per pass.
"""

import io
import os
from typing import Iterable, Tuple

import torch

# from osstorchconnector import OssIterableDataset, OssMapDataset
from ossc.torch import OssIterableDataset, OssMapDataset

ENDPOINT = os.environ["ENDPOINT"]
CONFIG_PATH = os.environ["CONFIG_PATH"]
CRED_PATH = os.environ["CRED_PATH"]
OSS_URI = os.environ["OSS_URI"]

# 1) from_prefix, iterable
iterable_dataset = OssIterableDataset.from_prefix(OSS_URI, endpoint=ENDPOINT, cred_path=CRED_PATH,
                                                  config_path=CONFIG_PATH)
count = 0
for item in iterable_dataset:
    content = item.read()
    assert len(content) == item.size
    item.close()
    count += 1

# 2) from_prefix, map: random access, with-statement, iteration
map_dataset = OssMapDataset.from_prefix(oss_uri=OSS_URI, endpoint=ENDPOINT, cred_path=CRED_PATH,
                                        config_path=CONFIG_PATH)
item = map_dataset[0]
print(item.key)
content = item.read()
print(item.size)
print(len(content))
item.close()
with map_dataset[5] as item:
    content = item.read()
    assert len(content) == item.size
assert sum(1 for item in map_dataset) == count == len(map_dataset)

# 3) from_objects
uris = [OSS_URI + "00001.bin", OSS_URI + "00002.bin", OSS_URI + "00003.bin"]
iterable_dataset = OssIterableDataset.from_objects(uris, endpoint=ENDPOINT, cred_path=CRED_PATH,
                                                   config_path=CONFIG_PATH)
assert [item.key.rsplit("/", 1)[1] for item in iterable_dataset] == \
    ["00001.bin", "00002.bin", "00003.bin"]
map_dataset = OssMapDataset.from_objects(uris, endpoint=ENDPOINT, cred_path=CRED_PATH,
                                         config_path=CONFIG_PATH)
item = map_dataset[1]
assert item.read() and item.key.endswith("00002.bin")
item.close()


# 4) manifest file, with the documented parser
def manifest_parser(reader: io.IOBase) -> Iterable[Tuple[str, str]]:
    lines = reader.read().decode("utf-8").strip().split("\n")
    for i, line in enumerate(lines):
        try:
            items = line.strip().split(' ')
            if len(items) >= 2:
                key = items[0]
                label = items[1]
                yield (key, label)
            elif len(items) == 1:
                key = items[0]
                yield (key, '')
            else:
                raise ValueError("format error")
        except ValueError as e:
            raise e


iterable_dataset = OssIterableDataset.from_manifest_file(
    os.environ["MANIFEST"], manifest_parser, os.environ["BASE_URI"], endpoint=ENDPOINT,
    cred_path=CRED_PATH, config_path=CONFIG_PATH)
labelled = 0
for item in iterable_dataset:
    assert item.label != "" and len(item.read()) == item.size
    item.close()
    labelled += 1
assert labelled == count


# 5) transform and DataLoader (the documented transform decodes images; these are bytes)
def transform(data):
    try:
        val = torch.tensor(len(data.read()))
    except Exception as e:
        raise e
    return val, data.key, data.label


iterable_dataset = OssIterableDataset.from_prefix(OSS_URI, endpoint=ENDPOINT, transform=transform,
                                                  cred_path=CRED_PATH, config_path=CONFIG_PATH)
loader = torch.utils.data.DataLoader(iterable_dataset, batch_size=256, num_workers=2,
                                     prefetch_factor=2)
seen = []
for i, (datas, keys, labels) in enumerate(loader):
    seen.extend(keys)
assert len(seen) == len(set(seen)) == count

map_dataset = OssMapDataset.from_prefix(OSS_URI, endpoint=ENDPOINT, transform=transform,
                                        cred_path=CRED_PATH, config_path=CONFIG_PATH)
loader = torch.utils.data.DataLoader(map_dataset, batch_size=256, num_workers=2,
                                     prefetch_factor=2, shuffle=True)
seen = []
for i, (datas, keys, labels) in enumerate(loader):
    seen.extend(keys)
assert len(seen) == len(set(seen)) == count
print(f"ok {count}")
