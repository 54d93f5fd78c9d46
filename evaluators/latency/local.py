"""LocalDevice: ONNX Runtime (or ExecuTorch) on this machine's CPU, measured in a short-lived, core-pinned subprocess.

The subprocess (ort_runner.py) pins itself with os.sched_setaffinity before onnxruntime starts, so the
caller's affinity is never touched; it also isolates a crashing runtime and gives a hard timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnas_core.errors import ConfigError, DeviceError, DeviceTimeoutError

from . import ort_runner
from .device import LatencyDevice, batch_listing, last_line, parse_runner_output, shape_arg
from .export import check_runtime
from .result import LatencyResult, summarize

RUNNER_PATH = Path(ort_runner.__file__)


class LocalDevice(LatencyDevice):
    """This machine's CPU. Defaults follow the paper: one thread, batch 1, sequential execution."""

    def __init__(
        self,
        threads: int = 1,
        cores: Sequence[int] | None = None,
        warmup: int = 10,
        runs: int = 50,
        timeout_s: float = 120.0,
        python: str | None = None,
        runtime: str = "onnxruntime",
    ) -> None:
        if threads < 1 or runs < 1 or warmup < 0 or timeout_s <= 0:
            raise ConfigError("device: threads and runs must be >= 1, warmup >= 0 and timeout_s > 0")
        self.threads = int(threads)
        self.cores = sorted(int(c) for c in cores) if cores else None
        self.warmup = int(warmup)
        self.runs = int(runs)
        self.timeout_s = float(timeout_s)
        self.python = python or sys.executable
        check_runtime(runtime, installed_here=python is None)  # another interpreter's: the runner reports them
        self.runtime = runtime
        if self.cores and hasattr(os, "sched_getaffinity"):
            allowed = os.sched_getaffinity(0)
            if not set(self.cores) <= allowed:
                raise ConfigError(f"device.cores={self.cores} are not available here (allowed: "
                                  f"{sorted(allowed)}); pick cores from that list or set cores: null")
        self.name = f"local-cpu{self.threads}" + (f"-cores{'_'.join(map(str, self.cores))}" if self.cores else "") \
            + ("" if runtime == "onnxruntime" else f"-{runtime}")  # keys the cache and the layer table

    @property
    def lock_name(self) -> str:
        return "local"

    def _describe(self) -> dict[str, Any]:
        return self._run_runner(["--describe"], self.timeout_s)["describe"]

    def measure(self, onnx_path: str | Path, input_shape: Sequence[int]) -> LatencyResult:
        path = Path(onnx_path)
        if not path.is_file():
            raise DeviceError(f"{self.name}: model file {path} does not exist; export it first with export_for_runtime")
        args = ["--model", str(path), "--shape", shape_arg(input_shape),
                "--warmup", str(self.warmup), "--runs", str(self.runs)]
        return summarize(self._run_runner(args, self.timeout_s)["samples_ms"])

    def measure_many(self, items: Sequence[tuple[str | Path, Sequence[int]]]) -> list[LatencyResult]:
        """One runner process for all of them: its start-up (Python, onnxruntime) is paid once, not per layer."""
        batch = batch_listing(self.name, items)
        fd, batch_file = tempfile.mkstemp(prefix="mnas-batch-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(batch, f)
            args = ["--batch", batch_file, "--warmup", str(self.warmup), "--runs", str(self.runs)]
            out = self._run_runner(args, self.timeout_s * max(1, len(batch)))
        finally:
            os.unlink(batch_file)
        return [summarize(samples) for samples in out["batch_samples_ms"]]

    def _run_runner(self, args: list[str], timeout_s: float) -> dict[str, Any]:
        command = [self.python, str(RUNNER_PATH), "--runtime", self.runtime, "--threads", str(self.threads),
                   "--deadline-s", str(timeout_s), *args]
        if self.cores:
            command += ["--cores", ",".join(map(str, self.cores))]
        try:
            proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout_s + 5)
        except subprocess.TimeoutExpired as exc:
            raise DeviceTimeoutError(f"{self.name}: measuring took longer than {timeout_s:g}s; "
                                     "raise device.timeout_s or lower device.runs") from exc
        except OSError as exc:
            raise DeviceError(f"{self.name}: cannot start {self.python} ({exc.strerror}); "
                              "set device.python to a Python with onnxruntime") from exc
        if proc.returncode != 0:
            if proc.returncode == -14:  # SIGALRM: the runner's own deadline
                raise DeviceTimeoutError(f"{self.name}: measuring took longer than {timeout_s:g}s; "
                                         "raise device.timeout_s or lower device.runs")
            raise DeviceError(f"{self.name}: latency runner failed (exit {proc.returncode}): "
                              f"{last_line(proc.stderr)}")
        return parse_runner_output(proc.stdout, self.name)
