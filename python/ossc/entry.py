"""Console entry points: a library that cannot be loaded (libossc.so missing or broken) is
one line on stderr and exit 10, like every other local problem, not a traceback."""

from __future__ import annotations

import importlib
import sys

EXIT_LOCAL = 10  # as ossc.errors says; that module needs the library itself


def _run(module: str, prog: str) -> int:
    try:
        main = importlib.import_module(module).main
    except ImportError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_LOCAL
    return main()


def ossc() -> None:
    sys.exit(_run("ossc.cli", "ossc"))


def ossc_run() -> None:
    sys.exit(_run("ossc.launcher", "ossc-run"))
