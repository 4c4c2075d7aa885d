"""Reading the end of a helper process's log for an error message (stdlib only)."""

import os


def log_tail(path: str, lines: int) -> str:
    """The last lines of the log at path (from its last 64 KiB), or why there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])
