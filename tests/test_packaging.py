"""The product does not ship its test harness: no module of tests/support/, no test and no
conftest is in the wheel. Two fast checks instead of a wheel build (which compiles the engine):
what pyproject.toml tells scikit-build-core to put in the wheel (CMake itself installs only the
libraries, ossc-owner and ossc.h there), and the RECORD of the installed ossc, the files of the
wheel that `pip install .` really built."""

import importlib.metadata
import tomllib
from pathlib import Path, PurePosixPath

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def harness_names() -> set[str]:
    """Module names of the harness: support/'s modules, conftest, the tests; and its folders."""
    names = {p.stem for p in (TESTS / "support").glob("*.py") if p.stem != "__init__"}
    names |= {p.stem for p in TESTS.glob("*.py")}
    assert {"localstore", "faultproxy", "vllm_harness", "conftest"} <= names
    return names | {"support", "tests"}


def harness_files(paths) -> list[str]:
    """The paths that are a harness module (.py or its .pyc) or lie in a harness folder."""
    names = harness_names()
    found = []
    for path in map(PurePosixPath, paths):
        module = path.name.split(".")[0]  # localstore.py, localstore.cpython-311.pyc
        if (path.suffix in (".py", ".pyc") and module in names) or names & set(path.parts[:-1]):
            found.append(str(path))
    return found


def test_wheel_packages_hold_no_harness():
    skb = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["scikit-build"]
    packages = skb["wheel"]["packages"]
    assert packages
    files = []
    for package in packages:
        directory = (ROOT / package).resolve()
        assert directory.is_dir(), package
        assert not any(directory.is_relative_to(ROOT / d) for d in ("tests", "scripts"))
        files += [str(PurePosixPath(directory.name) / p.relative_to(directory).as_posix())
                  for p in directory.rglob("*") if p.is_file()]
    assert "ossc/launcher.py" in files
    assert harness_files(files) == []


def test_installed_wheel_holds_no_harness():
    try:
        dist = importlib.metadata.distribution("ossc")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("ossc is not installed (`python3 -m pip install .` installs it)")
    files = [str(f) for f in dist.files or []]
    assert any(f.endswith("ossc/launcher.py") for f in files), files
    assert harness_files(files) == [], f"installed from {dist.read_text('direct_url.json')}"
