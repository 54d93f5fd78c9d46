"""LatencyEvaluator: export -> lock the device -> measure (with an outlier guard) -> cache."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from mnas_core.errors import ConfigError

from .cache import DEFAULT_CACHE_PATH, LatencyCache
from .device import LatencyDevice
from .export import export_for_runtime
from .lock import DEFAULT_LOCK_DIR, device_lock
from .result import LatencyResult

log = logging.getLogger(__name__)


class LatencyEvaluator:
    """Measured latency of sampled models on one device, cached by architecture.

    ``outlier_rel_tol``: when a measurement's coefficient of variation (std / mean) exceeds it, the model is
    measured once more and the result with the lower spread is kept.
    ``cache_path=None`` disables caching; ``cache`` passes a ready LatencyCache instead.
    ``interval_log`` (optional) records each held device-lock interval, see lock.device_lock.
    """

    def __init__(
        self,
        device: LatencyDevice,
        cache_path: str | Path | None = DEFAULT_CACHE_PATH,
        lock_dir: str | Path = DEFAULT_LOCK_DIR,
        outlier_rel_tol: float = 0.05,
        workdir: str | Path | None = None,
        lock_timeout_s: float = 3600.0,
        cache: LatencyCache | None = None,
        interval_log: str | Path | None = None,
    ) -> None:
        if outlier_rel_tol <= 0:
            raise ConfigError(f"outlier_rel_tol must be > 0 (e.g. 0.05 for 5 %), got {outlier_rel_tol}")
        self.device = device
        self.cache = cache if cache is not None else (LatencyCache(cache_path) if cache_path else None)
        self.lock_dir = Path(lock_dir).expanduser()
        self.outlier_rel_tol = outlier_rel_tol
        self.workdir = Path(workdir) if workdir else Path(tempfile.gettempdir()) / "mnas-nni-onnx"
        self.lock_timeout_s = lock_timeout_s
        self.interval_log = interval_log
        self.device_runs = 0  # device.measure() calls made by this evaluator
        self.cache_hits = 0

    def measure(self, model: nn.Module, arch_key: str, input_shape: Sequence[int]) -> LatencyResult:
        """Latency of ``model`` (identified by ``arch_key``) at batch 1; cached results are returned as-is."""
        shape = (1, *(int(d) for d in tuple(input_shape)[1:]))
        cached = self._cached(arch_key, shape)
        if cached is not None:
            return cached
        stem = self.workdir / f"{_file_stem(arch_key)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        onnx_path = export_for_runtime(self.device.runtime, model, shape, stem)  # .onnx, or .pte for ExecuTorch
        try:
            with device_lock(self.device.lock_name, self.lock_dir, self.lock_timeout_s, self.interval_log):
                cached = self._cached(arch_key, shape)  # measured by another process while we waited
                if cached is not None:
                    return cached
                result = self._measure_guarded(onnx_path, shape)
        finally:
            onnx_path.unlink(missing_ok=True)
        if self.cache is not None:
            self.cache.put(arch_key, self.device.name, self.device.runtime_id(), shape, result)
        return result

    def _cached(self, arch_key: str, shape: tuple[int, ...]) -> LatencyResult | None:
        if self.cache is None:
            return None
        hit = self.cache.get(arch_key, self.device.name, self.device.runtime_id(), shape)
        if hit is not None:
            self.cache_hits += 1
        return hit

    def _measure_guarded(self, onnx_path: Path, shape: tuple[int, ...]) -> LatencyResult:
        result = self.device.measure(onnx_path, shape)
        self.device_runs += 1
        if result.cv > self.outlier_rel_tol:
            again = self.device.measure(onnx_path, shape)
            self.device_runs += 1
            log.debug("latency spread %.1f%% > %.1f%% on %s: re-measured (%.1f%%)",
                     100 * result.cv, 100 * self.outlier_rel_tol, self.device.name, 100 * again.cv)
            result = min(result, again, key=lambda r: r.cv)
        return result


def _file_stem(arch_key: str) -> str:
    return "arch-" + hashlib.sha256(arch_key.encode()).hexdigest()[:16]
