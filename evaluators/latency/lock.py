"""One measurement at a time per device, across threads and processes (filelock-based); one build per latency
table, and a kept-exports folder removed only by its last user (`flock`, which the kernel drops when a process ends
in any way, so a killed build never blocks the next)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from mnas_core.errors import DeviceTimeoutError

DEFAULT_LOCK_DIR = Path("~/.cache/mnas-nni/locks")


def lock_path(lock_dir: str | Path, device_name: str) -> Path:
    """A file name safe for any device name (``ssh:user@host:22`` ...), unique per name."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", device_name)[:64]
    digest = hashlib.sha256(device_name.encode()).hexdigest()[:12]
    return Path(lock_dir).expanduser() / f"{readable}-{digest}.lock"


@contextmanager
def device_lock(
    device_name: str,
    lock_dir: str | Path = DEFAULT_LOCK_DIR,
    timeout_s: float = 3600.0,
    interval_log: str | Path | None = None,
) -> Iterator[None]:
    """Hold the device's lock for the body.

    With ``interval_log``, the held interval is appended as ``<device> <start_ns> <end_ns> <pid>`` (monotonic
    clock, comparable across processes on this machine) before the lock is released, so tests and audits
    can check that measurements never overlapped.
    """
    path = lock_path(lock_dir, device_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout as exc:
        raise DeviceTimeoutError(
            f"waited {timeout_s:g}s for the measurement lock of {device_name} ({path}); another process is "
            "measuring on it: wait, or end that process if it is stuck"
        ) from exc
    try:
        start_ns = time.monotonic_ns()
        yield
    finally:
        if interval_log is not None:
            log = Path(interval_log).expanduser()
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{device_name} {start_ns} {time.monotonic_ns()} {os.getpid()}\n")
        lock.release()


def read_intervals(interval_log: str | Path) -> list[tuple[str, int, int, int]]:
    """Parse an interval log written by device_lock: (device, start_ns, end_ns, pid) per line."""
    rows = []
    for line in Path(interval_log).read_text(encoding="utf-8").splitlines():
        if line.strip():
            device, start, end, pid = line.rsplit(" ", 3)
            rows.append((device, int(start), int(end), int(pid)))
    return rows


def _path_lock(lock_dir: str | Path, job: str, path: Path) -> Path:
    """The lock file of `job` on `path` (a table, a folder), in the lock directory rather than beside it."""
    lock = lock_path(lock_dir, f"{job}:{path.expanduser().resolve()}")
    lock.parent.mkdir(parents=True, exist_ok=True)
    return lock


@contextmanager
def waiting_lock(lock_file: str | Path, waiting: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold an exclusive `flock` on `lock_file` for the body; if another process holds it, say `waiting` and wait
    for it. The kernel drops the lock when its holder ends in any way."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(waiting)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextmanager
def table_build_lock(table_path: str | Path, lock_dir: str | Path = DEFAULT_LOCK_DIR,
                     log: Callable[[str], None] = print) -> Iterator[None]:
    """One build of a table at a time, across processes: a second build waits for the first and then goes on
    from the table it saved, so no layer is measured twice and neither build's save overwrites the other's."""
    with waiting_lock(_path_lock(lock_dir, "table-build", Path(table_path)),
                      f"another process is building {table_path}: waiting for it, then going on from what it saved", log):
        yield


@contextmanager
def shared_folder(folder: str | Path, lock_dir: str | Path = DEFAULT_LOCK_DIR) -> Iterator[Path]:
    """Use `folder` (kept model files) while other processes may use it too. When the body ends normally the
    folder is removed, unless another process still holds it (the last one removes it); when the body fails it
    stays, so a job run again reuses its files."""
    folder = Path(folder)
    with open(_path_lock(lock_dir, "folder", folder), "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # waits while a last user removes the folder
        yield folder
        try:  # only when no other process holds it shared
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        shutil.rmtree(folder, ignore_errors=True)
