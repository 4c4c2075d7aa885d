"""User errors and exit codes shared by the `ossc` and `ossc-run` commands.

Every user error ends in one line on stderr and a distinct exit code, so scripts can tell
failures apart; tracebacks only with -v.
"""

from __future__ import annotations

from ossc.native import OsscError, lib

EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_LOCAL = 10  # a local path problem, like OSSC_E_IO
EXIT_COMMAND_NOT_RUNNABLE = 126  # as the shell reports them
EXIT_COMMAND_NOT_FOUND = 127
EXIT_CODES = {
    lib.OSSC_E_CONFIG: EXIT_CONFIG,
    lib.OSSC_E_CREDENTIALS: 4,
    lib.OSSC_E_AUTH: 5,
    lib.OSSC_E_NOT_FOUND: 6,
    lib.OSSC_E_NETWORK: 7,
    lib.OSSC_E_PROTOCOL: 8,
    lib.OSSC_E_INTEGRITY: 9,
    lib.OSSC_E_IO: EXIT_LOCAL,
    lib.OSSC_E_SERVER: 11,
    lib.OSSC_E_NOMEM: 12,
    lib.OSSC_E_CANCELLED: 130,
}


class UserError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def exit_code(exc: Exception) -> int:
    if isinstance(exc, UserError):
        return exc.exit_code
    if isinstance(exc, OsscError):
        return EXIT_CODES.get(exc.code, 1)
    return 1
