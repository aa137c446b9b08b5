"""Progress for people and for log files: a tqdm bar on a terminal, plain timed lines anywhere else.

On a cluster, stdout and stderr go to files (Slurm's `%A_%a.out`, torchrun's logs); a redrawn bar writes a
carriage-return line at every update there, thousands of them. `progress_bar` keeps tqdm's bar when its stream
is a terminal, and otherwise prints its state as one ordinary line at most every POLYLM_PROGRESS_SECONDS
(default 30), plus a last line when it closes.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

DEFAULT_SECONDS = 30.0


def log_interval() -> float:
    """Seconds between two progress lines in a log (env POLYLM_PROGRESS_SECONDS)."""
    value = os.environ.get("POLYLM_PROGRESS_SECONDS", "")
    try:
        return max(float(value), 0.0) if value else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS


class LogLines(tqdm):
    """A tqdm that prints its state as a plain line, at most once per `interval` seconds and once when it closes:
    never a carriage return or a redraw."""

    def __init__(self, *args, interval: float = DEFAULT_SECONDS, **kwargs) -> None:
        self._interval, self._last_line = interval, -float("inf")
        super().__init__(*args, mininterval=interval, maxinterval=max(interval, 1.0), **kwargs)
        self.sp = None  # tqdm's own printer: with none, tqdm's close() displays nothing (this close() does)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            self._line(msg)
        return True

    def _line(self, msg: str | None = None) -> None:
        self.fp.write((msg if msg is not None else self.__str__()).strip() + "\n")
        self.fp.flush()

    def clear(self, nolock: bool = False) -> None:
        """Nothing to erase: lines stay (`tqdm.write` calls this around its message)."""

    def close(self) -> None:
        if not self.disable:
            self._line()
        super().close()


def progress_bar(iterable=None, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)` on a terminal; `LogLines` (timed plain lines) when its stream is a file or pipe."""
    stream = kwargs.get("file") or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(iterable, **kwargs)
    return LogLines(iterable, interval=log_interval(), ascii=True, **kwargs)
