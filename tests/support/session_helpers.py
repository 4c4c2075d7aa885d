"""Looking at a session from a test: its owner, its data directory, its end."""

import os
import time

from ossc.native import session_dir, sessions


def session_info(model_dir) -> dict:
    found = sessions(str(model_dir))
    assert found, f"no session serves {model_dir}"
    return found[0]


def wait_session_gone(model_dir, timeout: float = 15.0) -> bool:
    """True once nothing of the session for model_dir is left in /dev/shm (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sessions(str(model_dir)) and not os.path.exists(session_dir(str(model_dir))):
            return True
        time.sleep(0.1)
    return False




def wanted_count(control_path: str) -> int:
    """The header's `wanted` futex word (offset 80, session_layout.h): it changes each time
    a blocked reader asks for a chunk."""
    with open(control_path, "rb") as f:
        f.seek(80)
        return int.from_bytes(f.read(4), "little")
