"""One owner per run directory: a search or a resume holds `<run dir>/.owner.lock` for as long as it runs.

The lock is an advisory `flock` on an open file, so the kernel drops it when its process ends in any way
(`kill -9` included): a lock left by a killed search never blocks the resume that follows. The file keeps the
holder's pid and command so that a refused second search can name the process to wait for or stop.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from typing import IO

from mnas_core.errors import ResumeError

LOCK_NAME = ".owner.lock"
_held: dict[Path, IO[str]] = {}


def own_run_dir(run_dir: Path) -> None:
    """Take the run directory for this process, or fail in one line naming the process that holds it."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return
    try:
        handle = (run_dir / LOCK_NAME).open("a+", encoding="utf-8")  # not truncated: the holder's pid stays readable
    except OSError as err:
        raise ResumeError(f"cannot take {run_dir / LOCK_NAME} ({err.strerror}); the run directory must be "
                          "writable") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(handle)
        handle.close()
        raise ResumeError(f"{run_dir} is in use by {holder}: one search owns a run directory at a time; "
                          "wait for it to finish, or stop it (Ctrl-C) and resume then") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} ({' '.join(sys.argv[:1] + sys.argv[1:3])[:120]})\n")
    handle.flush()
    _held[run_dir] = handle


def _holder(handle: IO[str], wait_s: float = 2.0) -> str:
    """The holder's line in the lock file. A holder writes it just after taking the lock, so a search refused at
    that very moment (two resumes started together) reads on for a moment rather than naming nobody."""
    deadline = time.monotonic() + wait_s
    while True:
        handle.seek(0)
        holder = " ".join(handle.read().split())
        if holder or time.monotonic() >= deadline:
            return holder or "another process"
        time.sleep(0.02)


def release_run_dir(run_dir: Path) -> None:
    handle = _held.pop(Path(run_dir).resolve(), None)
    if handle is not None:
        handle.close()  # closing drops the flock; the file stays, naming the last owner


def release_all() -> None:
    """Every run directory this process holds (a search whose set-up failed after taking its folder)."""
    for run_dir in list(_held):
        release_run_dir(run_dir)
