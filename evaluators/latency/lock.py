"""One measurement at a time per device, across threads and processes (filelock-based)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
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
