"""User errors and exit codes shared by the `ossc` and `ossc-run` commands.

Every user error ends in one line on stderr and a distinct exit code, so scripts can tell
failures apart; tracebacks only with -v.
"""

from __future__ import annotations

from ossc.native import OsscError, lib

EXIT_USAGE = 2
EXIT_COMMAND_NOT_RUNNABLE = 126  # as the shell reports them
EXIT_COMMAND_NOT_FOUND = 127


def status_exit_code(status: int) -> int:
    """The exit code of an engine status (OSSC_E_*): the engine's one table."""
    return lib.ossc_exit_code(status)


EXIT_CONFIG = status_exit_code(lib.OSSC_E_CONFIG)
EXIT_LOCAL = status_exit_code(lib.OSSC_E_IO)  # a local path problem
EXIT_NO_SPACE = status_exit_code(lib.OSSC_E_NO_SPACE)  # the prefetch cannot fit the cache


class UserError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def exit_code(exc: Exception) -> int:
    if isinstance(exc, UserError):
        return exc.exit_code
    if isinstance(exc, OsscError):
        return status_exit_code(exc.code)
    return 1
