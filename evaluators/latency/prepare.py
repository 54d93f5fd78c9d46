"""Model files exported ahead of their measurement, on every core this process may use.

Lowering to ExecuTorch (XNNPACK) takes about 2 s a layer and 15-19 s a whole demo model on the project's CPU,
several times what measuring the file takes, and measuring wants the device quiet. So a table build and an
evaluation first export every file they will measure, in worker processes, into the folder `Meter` keeps files
in, then measure: the lowering runs on all cores and never beside a measurement. ONNX exports take milliseconds
and stay where they are (one worker: `Meter` exports as it measures).

A process pinned with `taskset -c N` has one core and so one worker; pin the measurement with `device.cores`
instead and leave the process free.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from search_spaces.arch import ArchSpec

from .export import MODEL_SUFFIX, export_for_runtime


def kept_stem(export_dir: str | Path, key: str, shape: Sequence[int]) -> Path:
    """Where `Meter` keeps the file of `key` at input `shape` (the runtime adds its suffix)."""
    return Path(export_dir) / hashlib.sha1(f"{key}|{tuple(shape)}".encode()).hexdigest()[:20]


def kept_file(export_dir: str | Path, runtime: str, key: str, shape: Sequence[int]) -> Path:
    return kept_stem(export_dir, key, shape).with_suffix(MODEL_SUFFIX[runtime])


@dataclass(frozen=True)
class ExportJob:
    """One file to export: a layer of the table (its signature) or a whole model (architecture and classes)."""

    key: str  # the key `Meter` files it under
    shape: tuple[int, ...]
    layer: str | None = None
    arch: ArchSpec | None = None
    num_classes: int = 0

    def module(self) -> nn.Module:
        if self.layer is not None:
            from .layers import piece_of

            return piece_of(self.layer).make()
        from search_spaces.builder import build_model

        assert self.arch is not None, "an ExportJob names a layer or an architecture"
        return build_model(self.arch, self.num_classes)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(runtime: str) -> int:
    """Every usable core where exporting is slow (ExecuTorch), else one."""
    return usable_cores() if runtime == "executorch" else 1


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # one worker per core: torch's own thread pool would oversubscribe them


def _export(runtime: str, export_dir: str, job: ExportJob) -> str:
    return str(export_for_runtime(runtime, job.module().eval(), job.shape, kept_stem(export_dir, job.key, job.shape)))


def export_ahead(runtime: str, export_dir: str | Path, jobs: Sequence[ExportJob], workers: int,
                 on_done: Callable[[], None] | None = None) -> int:
    """Export the jobs whose file `export_dir` lacks with `workers` processes; returns how many were written.
    With one worker (or one file) nothing happens here: `Meter` exports each file when it first measures it."""
    missing = list({j.key: j for j in jobs if not kept_file(export_dir, runtime, j.key, j.shape).is_file()}.values())
    if workers <= 1 or len(missing) < 2:
        return 0
    Path(export_dir).mkdir(parents=True, exist_ok=True)
    spawn = multiprocessing.get_context("spawn")  # a forked process can hang in the parent's torch thread pools
    pool = ProcessPoolExecutor(max_workers=min(workers, len(missing)), mp_context=spawn, initializer=_one_thread)
    try:
        for future in as_completed([pool.submit(_export, runtime, str(export_dir), job) for job in missing]):
            future.result()  # a failed export (a missing runtime package, a bad layer) stops the build here
            if on_done is not None:
                on_done()
    finally:  # after a failure or Ctrl-C the files not started are dropped; written ones stay for the next run
        pool.shutdown(wait=True, cancel_futures=True)
    return len(missing)
