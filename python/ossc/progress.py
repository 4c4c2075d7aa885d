"""Progress for long transfers: a bar on a terminal, a log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    LOG_INTERVAL = 5.0
    BAR_WIDTH = 28

    def __init__(self, total_bytes: int, stream: TextIO = sys.stderr,
                 tty: Optional[bool] = None, name: str = "ossc"):
        self.total = total_bytes
        self.name = name
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.start = time.monotonic()
        self._last_log = self.start
        self._drawn = False

    def update(self, done: int, current: str = "") -> None:
        now = time.monotonic()
        elapsed = max(now - self.start, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        frac = done / self.total if self.total else 1.0
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
        if self.tty:
            filled = int(frac * self.BAR_WIDTH)
            bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
            line = (f"[{bar}] {frac * 100:5.1f}% {human_bytes(done)}/{human_bytes(self.total)} "
                    f"{rate / 1e9:.2f} GB/s ETA {eta_text} {current[-40:]}")
            self.stream.write("\r" + line[:150].ljust(150))
            self.stream.flush()
            self._drawn = True
        elif now - self._last_log >= self.LOG_INTERVAL:
            self._last_log = now
            print(f"{self.name}: {frac * 100:.1f}% {human_bytes(done)} of {human_bytes(self.total)}, "
                  f"{rate / 1e9:.2f} GB/s, ETA {eta_text}, {current}", file=self.stream,
                  flush=True)

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
