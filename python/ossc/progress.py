"""Progress for long transfers: on a terminal, a tqdm bar redrawn in place ("\r") and cut to
the terminal's width, asked again at every redraw (tmux, a resized window); otherwise (pipes, CI
logs) a log line every few seconds. Without tqdm (a distribution package that lacks it) a
terminal gets the log lines too."""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO

_tqdm = None  # tqdm's class, imported with the first bar (pipes and logs never need it)

# The file name after the bar only where the bar keeps room for itself.
NAME_MIN_COLUMNS = 100
# tqdm's default with the unit on the sizes too: "ossc:  45%|####  | 1.2GB/2.7GB [...]".
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _bar_class():
    """tqdm's class, or None where it is missing (a distribution package that lacks it).
    Imported on the first bar: it costs a command's start-up 15-30 ms."""
    global _tqdm
    if _tqdm is None:
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - pyproject depends on it
            tqdm = False
        _tqdm = tqdm
    return _tqdm or None


def write_line(text: str, stream: TextIO = sys.stderr) -> None:
    """A line of its own while a bar may be drawn: the bar is cleared, the line written, the
    bar drawn again below it."""
    if _tqdm:  # a bar may be drawn only once tqdm is imported
        _tqdm.write(text, file=stream)
    else:
        stream.write(text + "\n")
    stream.flush()


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


class Progress:
    LOG_INTERVAL = 5.0

    def __init__(self, total_bytes: int, stream: TextIO = sys.stderr,
                 tty: Optional[bool] = None, name: str = "ossc"):
        self.total = total_bytes
        self.name = name
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.start = time.monotonic()
        self._last_log = self.start
        self._bar = None  # drawn from the first update: nothing at all if none comes
        self._closed = False

    def update(self, done: int, current: str = "") -> None:
        if self.tty and _bar_class() is not None:
            if self._closed:
                return
            if self._bar is None:
                # Redrawn by update() at the callers' pace; the rate is the average since
                # start, the width the terminal's at each redraw.
                self._bar = _tqdm(total=self.total, desc=self.name, file=self.stream, unit="B",
                                  unit_scale=True, unit_divisor=1000, dynamic_ncols=True,
                                  smoothing=0, leave=True, bar_format=BAR_FORMAT)
            name = current.rsplit("/", 1)[-1] if _columns(self.stream) >= NAME_MIN_COLUMNS else ""
            self._bar.n = done
            self._bar.set_postfix_str(name[-40:], refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_log < self.LOG_INTERVAL:
            return
        self._last_log = now
        elapsed = max(now - self.start, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        frac = done / self.total if self.total else 1.0
        eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
        print(f"{self.name}: {frac * 100:.1f}% {human_bytes(done)} of {human_bytes(self.total)}, "
              f"{rate / 1e9:.2f} GB/s, ETA {eta_text}, {current}", file=self.stream, flush=True)

    def close(self) -> None:
        """Leaves the last bar on its line; a second close does nothing."""
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            self._bar = None
