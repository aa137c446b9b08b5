"""One writer per run directory: `OUT/.lock`, held with `flock` for as long as a command writes into OUT.

A second `polylm pretrain|finetune|data prepare|self-instruct` on the same OUT is refused at once with the
holder's pid. The kernel drops a `flock` when its holder dies, so the lock of a process killed with -9 is free
again: the next run takes it over and writes its own pid. Under torchrun only global rank 0 holds it (the other
ranks share its directory). Re-entrant within one process, so a command and the library call it makes can both
hold it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from polylm.errors import PolyLMError

LOCK_FILE = ".lock"
_held: dict[Path, int] = {}  # resolved directory -> depth of nested holds in this process


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode("utf-8", "replace").split()
    return f"pid {text[0]} on {text[1]}" if len(text) >= 2 else "another process"


@contextmanager
def hold_run_dir(directory: Path, command: str) -> Iterator[None]:
    """Hold `directory` (created if needed) exclusively while the block runs; PolyLMError if another holds it."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise PolyLMError(
            f"{directory} is in use by {holder} (its {LOCK_FILE}); wait for it to finish, or stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {command}\n".encode(), 0)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        os.close(fd)  # closing the descriptor releases the flock
