"""A full disk never loses a finished trial.

A search keeps a reserve file of `RESERVE_BYTES` in its run directory. When a write of the search's own records
(the trial log, the checkpoint, resume.json) finds the disk full, the reserve is deleted, the write is made again
in the room it leaves, and the search stops at once with one line naming the path and the free space. A resume
after space is freed finds every finished trial. A disk too full for the reserve is one line at start.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mnas_core.errors import MnasNniError

RESERVE_NAME = ".disk-reserve"
RESERVE_BYTES = 4 << 20  # room for a few trial records and strategy checkpoints (a PPO controller's is ~100 KB)
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
T = TypeVar("T")

_reserves: dict[int, Path] = {}  # st_dev -> the reserve file kept on that filesystem


class DiskFull(MnasNniError, OSError):
    """The disk a run writes to is full."""


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in FULL_ERRNOS


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest parent that exists (where a file for `path` would land)."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def free_space(path: Path) -> str:
    """'1.2 MB free on /mnt' for the filesystem holding `path` (or its nearest existing parent)."""
    existing = nearest_existing(path)
    mount = existing
    while not mount.is_mount() and mount != mount.parent:
        mount = mount.parent
    return f"{shutil.disk_usage(existing).free / 1e6:.1f} MB free on {mount}"


def keep_reserve(run_dir: Path) -> None:
    """Set `RESERVE_BYTES` aside in `run_dir` (kept from an earlier start of the same run)."""
    path = Path(run_dir) / RESERVE_NAME
    try:
        if not path.is_file() or path.stat().st_size < RESERVE_BYTES:
            with path.open("wb") as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
                except OSError as err:
                    if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    f.write(b"\0" * RESERVE_BYTES)  # a filesystem without fallocate
                    f.flush()
                    os.fsync(f.fileno())
    except OSError as err:
        path.unlink(missing_ok=True)
        if not is_disk_full(err):
            raise
        raise DiskFull(f"the disk of {run_dir} is full ({free_space(run_dir)}); a search keeps "
                       f"{RESERVE_BYTES >> 20} MB spare there so that a full disk never loses a finished trial: "
                       "free space, or set hydra.run.dir to a folder on another disk") from None
    _reserves[path.stat().st_dev] = path


def release_reserve(run_dir: Path) -> None:
    """The search is over: give the reserve back."""
    path = Path(run_dir) / RESERVE_NAME
    for device, kept in list(_reserves.items()):
        if kept == path:
            del _reserves[device]
    path.unlink(missing_ok=True)


def _free_reserve_for(path: Path) -> bool:
    reserve = _reserves.pop(nearest_existing(path).stat().st_dev, None)
    if reserve is None or not reserve.exists():
        return False
    reserve.unlink()
    return True


def write_or_stop(path: Path, write: Callable[[], T], stop: Callable[[str], None]) -> T:
    """`write()` (which leaves nothing half-written when it fails); on a full disk, free the run's reserve, write
    again and call `stop` with one line naming `path` and the free space. With no reserve left: `DiskFull`."""
    try:
        return write()
    except OSError as err:
        if not is_disk_full(err):
            raise
        message = (f"no space left on the disk writing {path} ({free_space(path)}); every finished trial is "
                   "saved: free space")
        if not _free_reserve_for(path):
            raise DiskFull(message) from None
    result = write()
    stop(message)
    return result


def write_file_atomically(path: Path, data: bytes) -> None:
    """`data` in `path` whole, or (the write failed) `path` as it was and no temporary file left. The temporary
    file is this writer's own: two processes writing one path at once (two resumes of a run, each masking
    Hydra's copies) each replace it whole, the last one wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
