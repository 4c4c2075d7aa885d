"""Skips the suite may take. With OSSC_NO_UNEXPECTED_SKIPS=1 (scripts/test.sh sets it) a run
fails when a test skips that is not listed here (conftest.py's hooks): a missing dependency,
server or kernel feature must not pass as green.

Keys are paths under tests/ and the test's name, without parameters ("test_x.py::test_y"
allows every test_y[...]); a module name alone allows a skip of the whole module. Each value
says why the skip is legitimate.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent

# Empty: a full run (scripts/test.sh, vLLM included) skips nothing.
ALLOWED: dict[str, str] = {}


def key_of(path: str, nodeid: str) -> str:
    """"test_x.py::test_y[p]" for a test (or "test_x.py" for a module) under tests/."""
    try:
        where = Path(path).resolve().relative_to(TESTS).as_posix()
    except ValueError:
        where = Path(path).name
    rest = nodeid.split("::", 1)[1] if "::" in nodeid else ""
    return f"{where}::{rest}" if rest else where


def allowed(key: str) -> bool:
    return key in ALLOWED or key.split("[", 1)[0] in ALLOWED
