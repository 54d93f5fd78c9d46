"""Latency predicted from the layer table: the sum of the pieces' latencies, corrected by a calibration.

The sum of isolated layer latencies is not the model's latency: every inference pays a runtime overhead, each
piece measured alone paid its own, and neighbouring layers share caches. The correction is linear in the sum
and the number of pieces,

    predicted_ms = a * sum_ms + b * pieces + c,

fitted by least squares on relative error over a few dozen whole models measured on the same device
(`build_table`), and refitted as a search measures more (`latency.mode=predict_verify`). Its residuals are kept
in the table file, so `python -m mnas_nni.latency_table show` tells how far to trust it.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnas_core.errors import ConfigError
from search_spaces.arch import ArchSpec
from search_spaces.builder import build_model
from search_spaces.space import SpaceConfig

from .device import LatencyDevice
from .evaluator import LatencyEvaluator
from .export import export_onnx
from .layers import arch_signatures, piece_of, random_arch, space_description, space_hash, space_signatures
from .lock import DEFAULT_LOCK_DIR, device_lock
from .table import BUILD_HINT, LatencyTable, measure_layers, open_table

LAYERS_PER_CALL = 16  # layers measured per device round trip (and per save of a build's progress)


class MissingLayerError(ConfigError):
    """The architecture has pieces the table lacks."""

    def __init__(self, message: str, signatures: list[str]):
        super().__init__(message)
        self.signatures = signatures


def fit_calibration(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares on relative error: minimise sum ((a*s + b*n + c) / m - 1)^2 over the measured models."""
    if not models:
        raise ConfigError("calibration needs at least one whole model measured on the device")
    s = np.array([m["sum_ms"] for m in models], dtype=float)
    n = np.array([m["count"] for m in models], dtype=float)
    measured = np.array([m["measured_ms"] for m in models], dtype=float)
    if len(models) >= 4:
        design = np.stack([s, n, np.ones_like(s)], axis=1) / measured[:, None]
        coef, *_ = np.linalg.lstsq(design, np.ones_like(s), rcond=None)
    else:  # too few points for three terms: a plain scale
        coef = np.array([float(np.median(measured / s)), 0.0, 0.0])
    predicted = coef[0] * s + coef[1] * n + coef[2]
    residuals = predicted / measured - 1.0
    return {"coef": [float(c) for c in coef], "n": len(models), "residuals": [float(r) for r in residuals],
            **error_summary(residuals)}


def error_summary(relative_errors: Any) -> dict[str, float]:
    """Median |error|, the shares within +-5 % and +-10 %, and the worst case, of relative errors."""
    err = np.abs(np.asarray(relative_errors, dtype=float))
    if err.size == 0:
        return {"n": 0}
    return {"median_abs_error": float(np.median(err)), "within_5pct": float(np.mean(err <= 0.05)),
            "within_10pct": float(np.mean(err <= 0.10)), "worst_abs_error": float(err.max())}


def table_terms(table: LatencyTable, signatures: list[str]) -> tuple[float, int]:
    layers = table.layers
    try:
        return sum(layers[s] for s in signatures), len(signatures)
    except KeyError:
        missing = [s for s in signatures if s not in layers]
        raise MissingLayerError(
            f"latency table {table.path} lacks {len(missing)} layer(s) of this architecture (e.g. {missing[0]}); "
            f"rebuild it for this search space: {BUILD_HINT}, or use latency.mode=predict_verify to measure "
            "missing layers on demand", missing) from None


class LatencyPredictor:
    """predict(arch) -> ms from the table: string lookups and three multiplications, no ONNX or torch work."""

    def __init__(self, table: LatencyTable, num_classes: int):
        if table.fit is None or not any(space.get("complete") for space in table.spaces.values()):
            raise ConfigError(f"latency table {table.path} is incomplete ({len(table.layers)} layers, no "
                              f"calibration yet): run the build again to finish it: {BUILD_HINT}")
        self.table, self.num_classes = table, int(num_classes)
        self.layers = table.layers
        self.coef = tuple(table.fit["coef"])

    def signatures(self, arch: ArchSpec, num_classes: int | None = None) -> list[str]:
        return arch_signatures(arch, self.table.resolution, num_classes or self.num_classes)

    def terms(self, arch: ArchSpec, num_classes: int | None = None) -> tuple[float, int]:
        """(sum of the pieces' latencies, number of pieces); MissingLayerError names any piece not in the table."""
        return table_terms(self.table, self.signatures(arch, num_classes))

    def calibrated(self, sum_ms: float, count: int) -> float:
        a, b, c = self.coef
        return a * sum_ms + b * count + c

    def predict(self, arch: ArchSpec, num_classes: int | None = None) -> float:
        return self.calibrated(*self.terms(arch, num_classes))

    def uncalibrated(self, arch: ArchSpec, num_classes: int | None = None) -> float:
        return self.terms(arch, num_classes)[0]

    def refit(self) -> None:
        self.table.fit = fit_calibration(self.table.models)
        self.coef = tuple(self.table.fit["coef"])


def layer_meter(device: LatencyDevice, lock_dir: str | Path = DEFAULT_LOCK_DIR,
                interval_log: str | Path | None = None) -> Callable[[list[str]], list[float]]:
    """signatures -> median ms on the device: each piece exported with export_onnx, then all of them measured in
    one `device.measure_many` call under the device lock (one runner start-up for the lot)."""
    workdir = Path(tempfile.mkdtemp(prefix="mnas-nni-layers-"))

    def measure(signatures: list[str]) -> list[float]:
        items = []
        try:
            for i, signature in enumerate(signatures):
                piece = piece_of(signature)
                items.append((export_onnx(piece.make(), piece.input_shape, workdir / f"layer{i}.onnx"),
                              piece.input_shape))
            with device_lock(device.lock_name, lock_dir, interval_log=interval_log):
                results = device.measure_many(items)
        finally:
            for path, _ in items:
                path.unlink(missing_ok=True)
        return [r.median_ms for r in results]

    return measure


@dataclass
class BuildReport:
    path: Path
    layers: int             # distinct layers of the space
    layers_measured: int    # measured by this build (the rest were already in the table)
    models_measured: int    # whole models measured for the calibration by this build
    seconds: float
    fit: dict[str, Any]

    @property
    def device_measurements(self) -> int:
        return self.layers_measured + self.models_measured

    def line(self) -> str:
        return (f"latency table {self.path}: {self.layers} layers ({self.layers_measured} measured now), "
                f"{self.fit['n']} calibration models ({self.models_measured} measured now) in {self.seconds:.0f} s; "
                f"calibration residuals: median {100 * self.fit['median_abs_error']:.1f} %, "
                f"{100 * self.fit['within_5pct']:.0f} % within +-5 %, worst {100 * self.fit['worst_abs_error']:.1f} %")


def build_table(device: LatencyDevice, config: SpaceConfig, path: str | Path, evaluator: LatencyEvaluator,
                calibration_models: int = 40, seed: int = 0, progress: bool = True,
                log: Callable[[str], None] = print, layers_per_call: int = LAYERS_PER_CALL) -> BuildReport:
    """Measure every distinct layer of ``config`` at its resolution once, then calibrate on whole models.

    ``evaluator`` measures the whole models (the same export -> lock -> measure -> cache path as
    ``latency.mode=measure``). Killed or failed half way, the table keeps what it has; call again to continue.
    """
    started = time.perf_counter()
    resolution, num_classes = config.resolution, config.num_classes
    table = open_table(path, device.name, device.runtime_id(), resolution, device.describe())
    signatures = space_signatures(config, resolution, num_classes)
    todo = sum(1 for s in signatures if s not in table.layers)
    log(f"{device.name} ({table.runtime}), {resolution} px: {len(signatures)} distinct layers, {todo} to measure; "
        f"table {table.path}")
    measured = measure_layers(table, signatures, layer_meter(device, evaluator.lock_dir, evaluator.interval_log),
                              progress=progress, chunk=layers_per_call)
    key = space_hash(config)
    space = table.spaces.setdefault(key, {"space": space_description(config), "layers": len(signatures),
                                          "complete": False, "seconds": 0.0})
    models = calibrate(table, config, evaluator, calibration_models, seed, progress)
    space.update(complete=True, seconds=space["seconds"] + time.perf_counter() - started)  # over every resumed run
    table.save()
    return BuildReport(table.path, len(signatures), measured, models, time.perf_counter() - started, table.fit or {})


def calibration_archs(config: SpaceConfig, n: int, seed: int) -> list[ArchSpec]:
    rng = random.Random(f"calibration-{seed}")
    return [random_arch(config, rng) for _ in range(n)]


def calibrate(table: LatencyTable, config: SpaceConfig, evaluator: LatencyEvaluator, n: int, seed: int = 0,
              progress: bool = True) -> int:
    """Measure ``n`` seeded random whole models the table has not calibrated on yet, then refit; returns how many."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    shape = (1, 3, config.resolution, config.resolution)
    known = table.calibration_keys()
    todo = [a for a in calibration_archs(config, n, seed) if a.key not in known]
    done = 0
    try:
        with Progress(TextColumn("[bold]models"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                      TimeRemainingColumn(), disable=not progress or not todo) as bar:
            task = bar.add_task("models", total=len(todo))
            for arch in todo:
                sum_ms, count = table_terms(table, arch_signatures(arch, config.resolution, config.num_classes))
                result = evaluator.measure(build_model(arch, config.num_classes), arch.key, shape)
                table.add_model(arch.key, sum_ms, count, result.median_ms, "build")
                done += 1
                bar.advance(task)
    finally:
        if table.models:
            table.fit = fit_calibration(table.models)
        table.save()
    return done
