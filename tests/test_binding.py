"""The cffi binding (python/ossc/binding.py): declarations parsed ahead of time while they are
the header's, parsed at start otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ossc import binding

REPO = Path(__file__).resolve().parents[1]
HEADER = REPO / "preload" / "include" / "ossc.h"
PROBE = """
import json, sys
import ossc.cli, ossc.connector, ossc.native as n
print(json.dumps({"binding": n.BINDING, "pycparser": "pycparser" in sys.modules,
                  "version": n.ffi.string(n.lib.ossc_version()).decode(),
                  "not_found": n.lib.OSSC_E_NOT_FOUND}))
"""


def probe(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


def test_precompiled_declarations_are_the_headers():
    from ossc import _libossc_cffi

    assert _libossc_cffi.CDEF_SHA256 == binding.digest(binding.declarations(
        HEADER.read_text())), "ossc.h changed: run python3 -m ossc.binding preload/include/ossc.h"


def test_commands_start_without_parsing_c():
    seen = probe()
    assert seen["binding"] == "precompiled" and not seen["pycparser"], seen


def test_a_header_that_differs_is_parsed_not_trusted(tmp_path):
    """Another header (a newer library's) must not get the precompiled declarations: they
    would be the wrong ones. The process parses it instead, and works."""
    text = HEADER.read_text()
    changed = tmp_path / "ossc.h"
    changed.write_text(text.replace(binding.END, "int ossc_not_in_the_library(void);\n"
                                    + binding.END))
    seen = probe(OSSC_HEADER=str(changed))
    reference = probe()
    assert seen["binding"] == "parsed" and seen["pycparser"], seen
    assert (seen["version"], seen["not_found"]) == (reference["version"],
                                                    reference["not_found"])
