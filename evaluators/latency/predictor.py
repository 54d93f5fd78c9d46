"""Latency predicted from the layer table: the sum of the pieces' latencies, corrected by a calibration.

The sum of isolated layer latencies is not the model's latency: every inference pays a runtime overhead, each
piece measured alone paid its own (more for a piece of more graph nodes: an SE body, a head), and neighbouring
layers share caches: a piece measured alone keeps its weights in cache, in the network every layer's weights
stream through it again. The correction is linear in the sum, in the number of pieces of each kind and in the
weights the architecture carries,

    predicted_ms = a * sum_ms + b * pieces + sum_k b_k * pieces_of_kind_k + w * million_parameters + c,

fitted by least squares on relative error over a few dozen whole models measured on the same device
(`build_table`), and refitted as a search measures more (`latency.mode=predict_verify`). With too few models
for a term per kind, only ``b`` is fitted (one overhead for every piece); a table without weight counts
(built before they were recorded) fits no ``w``. Its residuals are kept in the table
file, so `python -m mnas_nni.latency_table show` tells how far to trust it.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mnas_core.errors import ConfigError, MnasNniError, one_line
from search_spaces.arch import ArchSpec
from search_spaces.builder import build_model
from search_spaces.space import SpaceConfig

from .device import LatencyDevice
from .evaluator import LatencyEvaluator
from .export import export_for_runtime
from .layers import (
    arch_signatures,
    piece_kind,
    piece_of,
    piece_weights,
    random_arch,
    space_description,
    space_hash,
    space_signatures,
)
from .lock import DEFAULT_LOCK_DIR, device_lock, table_build_lock
from .prepare import ExportJob, default_workers, export_ahead, kept_file, kept_stem
from .result import LatencyResult
from .table import BUILD_HINT, LatencyTable, Terms, measure_layers, open_table

LAYERS_PER_CALL = 16  # layers measured per device round trip (and per save of a build's progress)
MODELS_PER_TERM = 3   # calibration models per fitted coefficient before the overhead is fitted per piece kind
PARAMETERS_UNIT = 1e6  # the weight term is fitted per million parameters (ms per million)
KIND_MIN_MODELS = 5   # a piece kind gets its own overhead term once this many calibration models contain it


class MissingLayerError(ConfigError):
    """The architecture has pieces the table lacks."""

    def __init__(self, message: str, signatures: list[str]):
        super().__init__(message)
        self.signatures = signatures


def fit_calibration(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares on relative error: minimise sum (predicted / measured - 1)^2 over the measured models.

    Terms: the sum, the piece count, a count per piece kind that enough models contain and the parameter count
    in millions (both only when every model records them and there are MODELS_PER_TERM models per
    coefficient), and a constant. The kind counts add up to the piece count; least squares' minimum-norm
    solution shares the overhead between them, and a kind without a term of its own takes the common ``b``."""
    if not models:
        raise ConfigError("calibration needs at least one whole model measured on the device")
    s = np.array([m["sum_ms"] for m in models], dtype=float)
    n = np.array([m["count"] for m in models], dtype=float)
    measured = np.array([m["measured_ms"] for m in models], dtype=float)
    kinds: list[str] = []
    if all("kinds" in m for m in models):
        present: dict[str, int] = {}
        for m in models:
            for kind, count in m["kinds"].items():
                present[kind] = present.get(kind, 0) + (count > 0)
        kinds = sorted(k for k, seen in present.items() if seen >= KIND_MIN_MODELS)
    with_weights = all(m.get("weights") is not None for m in models)
    if len(models) < MODELS_PER_TERM * (3 + len(kinds) + with_weights):
        with_weights = False  # too few models for every term: the weight term goes first, then the kinds
    if len(models) < MODELS_PER_TERM * (3 + len(kinds)):
        kinds = []
    kind_columns = [np.array([m["kinds"].get(k, 0) for m in models], dtype=float) for k in kinds]
    weight_columns = [np.array([m["weights"] / PARAMETERS_UNIT for m in models], dtype=float)] if with_weights else []
    columns = np.stack([s, n, *kind_columns, *weight_columns, np.ones_like(s)], axis=1)
    if len(models) >= 4:
        solution, *_ = np.linalg.lstsq(columns / measured[:, None], np.ones_like(s), rcond=None)
    else:  # too few points for three terms: a plain scale (kinds is empty here)
        solution = np.zeros(columns.shape[1])
        solution[0] = float(np.median(measured / s))
    coef, kind_coef = (solution[0], solution[1], solution[-1]), solution[2:2 + len(kinds)]
    predicted = columns @ solution
    residuals = predicted / measured - 1.0
    return {"coef": [float(c) for c in coef], "kind_coef": {k: float(c) for k, c in zip(kinds, kind_coef)},
            "weight_coef": float(solution[-2]) if with_weights else 0.0,  # ms per million parameters
            "n": len(models), "residuals": [float(r) for r in residuals], **error_summary(residuals)}


def error_summary(relative_errors: Any) -> dict[str, float]:
    """Median |error|, the shares within +-5 % and +-10 %, and the worst case, of relative errors."""
    err = np.abs(np.asarray(relative_errors, dtype=float))
    if err.size == 0:
        return {"n": 0}
    return {"median_abs_error": float(np.median(err)), "within_5pct": float(np.mean(err <= 0.05)),
            "within_10pct": float(np.mean(err <= 0.10)), "worst_abs_error": float(err.max())}


def table_terms(table: LatencyTable, signatures: list[str]) -> Terms:
    layers, weights, kinds, total = table.layers, table.weights, {}, 0.0
    try:
        for signature in signatures:
            total += layers[signature]
            kind = piece_kind(signature)
            kinds[kind] = kinds.get(kind, 0) + 1
    except KeyError:
        missing = [s for s in signatures if s not in layers]
        raise MissingLayerError(
            f"latency table {table.path} lacks {len(missing)} layer(s) of this architecture (e.g. {missing[0]}); "
            f"rebuild it for this search space: {BUILD_HINT}, or use latency.mode=predict_verify to measure "
            "missing layers on demand", missing) from None
    params = sum(weights[s] for s in signatures) if all(s in weights for s in signatures) else None
    return Terms(total, kinds, params)


def add_measured_layers(table: LatencyTable, signatures: list[str], meter: Meter) -> None:
    """Measure `signatures` (layers the table lacks) with `meter` and save them into the table."""
    table.layers.update(zip(signatures, meter.layers(signatures)))
    record_weights(table, signatures)
    table.save()


def record_weights(table: LatencyTable, signatures: list[str]) -> None:
    """Count the parameters of every piece the table lacks a count for (a fraction of a second per hundred)."""
    for signature in signatures:
        if signature not in table.weights:
            table.weights[signature] = piece_weights(signature)


class LatencyPredictor:
    """predict(arch) -> ms from the table: string lookups and a few multiplications, no ONNX or torch work."""

    def __init__(self, table: LatencyTable, num_classes: int):
        if table.fit is None or not any(space.get("complete") for space in table.spaces.values()):
            raise ConfigError(f"latency table {table.path} is incomplete ({len(table.layers)} layers, no "
                              f"calibration yet): run the build again to finish it: {BUILD_HINT}")
        self.table, self.num_classes = table, int(num_classes)
        self.layers = table.layers
        self._use_fit(table.fit)

    def _use_fit(self, fit: dict[str, Any]) -> None:
        self.coef = tuple(fit["coef"])
        self.kind_coef: dict[str, float] = dict(fit.get("kind_coef") or {})
        self.weight_coef = float(fit.get("weight_coef") or 0.0)

    def signatures(self, arch: ArchSpec, num_classes: int | None = None) -> list[str]:
        return arch_signatures(arch, self.table.resolution, num_classes or self.num_classes)

    def terms(self, arch: ArchSpec, num_classes: int | None = None) -> Terms:
        """The pieces' summed latency and kinds; MissingLayerError names any piece not in the table."""
        return table_terms(self.table, self.signatures(arch, num_classes))

    def calibrated(self, terms: Terms) -> float:
        a, b, c = self.coef
        kind_coef = self.kind_coef
        weights = self.weight_coef * terms.weights / PARAMETERS_UNIT if terms.weights is not None else 0.0
        return (a * terms.sum_ms + b * terms.count + c + weights
                + sum(kind_coef.get(k, 0.0) * n for k, n in terms.kinds.items()))

    def predict(self, arch: ArchSpec, num_classes: int | None = None) -> float:
        return self.calibrated(self.terms(arch, num_classes))

    def uncalibrated(self, arch: ArchSpec, num_classes: int | None = None) -> float:
        return self.terms(arch, num_classes).sum_ms

    def refit(self) -> None:
        self.table.fit = fit_calibration(self.table.models)
        self._use_fit(self.table.fit)


class Meter:
    """Measures small models on the device for a table: exported for the device's runtime, measured under the device
    lock with `device.measure_many` (one runner start-up for a batch), ``repeats`` times.

    Each model keeps the repeat with the lowest median: on a shared machine other processes only ever add
    time, and one repeat may fall in a busy period; the lowest of a few medians is what the device does when
    quiet, measured the same way for layers and whole models.

    With ``export_dir``, a model file is kept there under its key (a layer signature, an architecture key) and
    later passes measure that file instead of exporting again: lowering to ExecuTorch costs about 2 s a layer, five
    times the measurement, so a table built in passes would otherwise spend most of its time exporting.
    `prepare_layers` / `prepare_models` write those files first on ``export_workers`` processes (default: every
    usable core for ExecuTorch, one for ONNX Runtime), so that no export runs beside a measurement.
    """

    def __init__(self, device: LatencyDevice, lock_dir: str | Path = DEFAULT_LOCK_DIR,
                 interval_log: str | Path | None = None, repeats: int = 3, export_dir: str | Path | None = None,
                 export_workers: int | None = None):
        if repeats < 1:
            raise ConfigError(f"repeats must be >= 1, got {repeats}")
        if export_workers is not None and (not isinstance(export_workers, int) or export_workers < 1):
            raise ConfigError(f"export workers must be a positive integer, got {export_workers!r}")
        self.device, self.lock_dir, self.interval_log, self.repeats = device, lock_dir, interval_log, int(repeats)
        self.workdir = Path(tempfile.gettempdir()) / "mnas-nni-table"
        self.export_dir = Path(export_dir) if export_dir is not None else None
        self.export_workers = export_workers or default_workers(device.runtime)  # for `prepare_*` (prepare.py)
        self.calls = 0  # device round trips
        self.exports = 0  # model files written (the rest were reused from export_dir)

    def _model_file(self, module: nn.Module, shape: tuple[int, ...], key: str | None, scratch: Path) -> Path:
        if self.export_dir is None or key is None:  # a scratch file, deleted after the measurement
            self.exports += 1
            return export_for_runtime(self.device.runtime, module, shape, scratch)
        kept = kept_file(self.export_dir, self.device.runtime, key, shape)
        if kept.is_file():  # export_for_runtime writes atomically: a file that is there is whole
            return kept
        self.exports += 1
        return export_for_runtime(self.device.runtime, module, shape, kept_stem(self.export_dir, key, shape))

    def _prepare(self, jobs: list[ExportJob], progress: bool) -> None:
        if self.export_dir is None or self.export_workers <= 1 or len(jobs) < 2:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn(f"[bold]exporting ({self.export_workers} workers)"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn(), disable=not progress) as bar:
            task = bar.add_task("export", total=len(jobs))
            self.exports += export_ahead(self.device.runtime, self.export_dir, jobs, self.export_workers,
                                         on_done=lambda: bar.advance(task))

    def prepare_layers(self, signatures: list[str], progress: bool = False) -> None:
        """Export the layers' files ahead on `export_workers` processes (prepare.py), before any is measured."""
        self._prepare([ExportJob(s, piece_of(s).input_shape, layer=s) for s in signatures], progress)

    def prepare_models(self, archs: list[ArchSpec], num_classes: int, resolution: int, progress: bool = False) -> None:
        shape = (1, 3, resolution, resolution)
        self._prepare([ExportJob(self.model_key(a, num_classes), shape, arch=a, num_classes=num_classes)
                       for a in archs], progress)

    @staticmethod
    def model_key(arch: ArchSpec, num_classes: int) -> str:
        return f"{arch.key}|{num_classes}"

    def measure(self, modules: list[tuple[nn.Module, tuple[int, ...]]],
                keys: list[str] | None = None) -> list[LatencyResult]:
        items, scratch = [], []
        try:
            stem = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            for i, (module, shape) in enumerate(modules):
                key = keys[i] if keys and self.export_dir is not None else None
                path = self._model_file(module, shape, key, self.workdir / f"{stem}-{i}")
                if key is None:
                    scratch.append(path)
                items.append((path, shape))
            best: list[LatencyResult | None] = [None] * len(items)
            with device_lock(self.device.lock_name, self.lock_dir, interval_log=self.interval_log):
                for _ in range(self.repeats):
                    self.calls += 1
                    for i, result in enumerate(self.device.measure_many(items)):
                        if best[i] is None or result.median_ms < best[i].median_ms:  # type: ignore[union-attr]
                            best[i] = result
        finally:
            for path in scratch:
                path.unlink(missing_ok=True)
        return best  # type: ignore[return-value]

    def layers(self, signatures: list[str]) -> list[float]:
        pieces = [piece_of(s) for s in signatures]
        return [r.median_ms for r in self.measure([(p.make(), p.input_shape) for p in pieces], list(signatures))]

    def models(self, archs: list[ArchSpec], num_classes: int, resolution: int) -> list[float]:
        shape = (1, 3, resolution, resolution)
        keys = [self.model_key(a, num_classes) for a in archs]
        return [r.median_ms for r in self.measure([(build_model(a, num_classes), shape) for a in archs], keys)]


@dataclass
class BuildReport:
    path: Path
    layers: int             # distinct layers of the space
    layers_measured: int    # measured by this build (the rest were already in the table)
    models_measured: int    # whole models measured for the calibration by this build
    seconds: float
    fit: dict[str, Any]
    device_calls: int = 0   # device round trips of this build (each measures a batch, `repeats` times over)
    exports: int = 0        # model files written by this build (one per layer or model, whatever the passes)

    @property
    def device_measurements(self) -> int:
        return self.layers_measured + self.models_measured

    def line(self) -> str:
        return (f"latency table {self.path}: {self.layers} layers ({self.layers_measured} measured now), "
                f"{self.fit['n']} calibration models ({self.models_measured} measured now) in {self.seconds:.0f} s; "
                f"calibration residuals: median {100 * self.fit['median_abs_error']:.1f} %, "
                f"{100 * self.fit['within_5pct']:.0f} % within +-5 %, worst {100 * self.fit['worst_abs_error']:.1f} %")


def build_table(device: LatencyDevice, config: SpaceConfig, path: str | Path, evaluator: LatencyEvaluator,
                calibration_models: int = 160, seed: int = 0, progress: bool = True,
                log: Callable[[str], None] = print, layers_per_call: int = LAYERS_PER_CALL,
                repeats: int = 5, export_workers: int | None = None) -> BuildReport:
    """Measure every distinct layer of ``config`` at its resolution once, then calibrate on whole models.

    ``evaluator`` gives the lock directory and interval log. Layers and whole models are measured alike (see
    `Meter`), in ``repeats`` passes over all of them, each keeping its lowest median; their files are exported
    first, on ``export_workers`` processes (`Meter`). Killed or failed half way, the table keeps what it has (and
    the files exported so far); call again to continue. A second build of the same table started meanwhile waits
    for this one, then goes on from the table it saved.
    """
    with table_build_lock(path, evaluator.lock_dir, log):
        return _build(device, config, path, evaluator, calibration_models, seed, progress, log, layers_per_call,
                      repeats, export_workers)


def _build(device: LatencyDevice, config: SpaceConfig, path: str | Path, evaluator: LatencyEvaluator,
           calibration_models: int, seed: int, progress: bool, log: Callable[[str], None], layers_per_call: int,
           repeats: int, export_workers: int | None) -> BuildReport:
    started = time.perf_counter()
    resolution, num_classes = config.resolution, config.num_classes
    table = open_table(path, device.name, device.runtime_id(), resolution, device.describe())
    table.repeats = table.repeats or repeats
    exports = exports_dir(table.path)  # kept while the build runs (a killed one reuses them), removed at the end
    meter = Meter(device, evaluator.lock_dir, evaluator.interval_log, repeats=1, export_dir=exports,
                  export_workers=export_workers)  # passes
    signatures = space_signatures(config, resolution, num_classes)
    todo = sum(1 for s in signatures if s not in table.layers)
    log(f"{device.name} ({table.runtime}), {resolution} px: {len(signatures)} distinct layers, {todo} to measure; "
        f"table {table.path}")
    try:
        meter.prepare_layers([s for s in signatures if table.layer_passes(s) < table.repeats], progress)
        measured = measure_layers(table, signatures, meter.layers, passes=table.repeats, progress=progress,
                                  chunk=layers_per_call)
        record_weights(table, signatures)
        key = space_hash(config)
        space = table.spaces.setdefault(key, {"space": space_description(config), "layers": len(signatures),
                                              "complete": False, "seconds": 0.0})
        models = calibrate(table, config, meter, calibration_models, seed, progress, passes=table.repeats)
    except MnasNniError as err:  # the device lost, a timeout: what was measured is saved
        done = sum(1 for s in signatures if s in table.layers)
        raise type(err)(f"{one_line(err, 300)}; {done} of {len(signatures)} layers and {len(table.models)} "
                        f"calibration models are saved in {table.path}: run the same build again to continue") from None
    space.update(complete=True, seconds=space["seconds"] + time.perf_counter() - started)  # over every resumed run
    table.save()
    shutil.rmtree(exports, ignore_errors=True)
    return BuildReport(table.path, len(signatures), measured, models, time.perf_counter() - started, table.fit or {},
                       meter.calls, meter.exports)


def exports_dir(table_path: str | Path, job: str = "") -> Path:
    """Where a build (or, with `job="evaluate"`, `latency_table evaluate`) keeps the model files it measures in
    passes: beside its table."""
    path = Path(table_path)
    return path.with_name(path.name + (f".{job}-exports" if job else ".exports"))


def calibration_archs(config: SpaceConfig, n: int, seed: int) -> list[ArchSpec]:
    rng = random.Random(f"calibration-{seed}")
    return [random_arch(config, rng) for _ in range(n)]


def calibrate(table: LatencyTable, config: SpaceConfig, meter: Meter, n: int, seed: int = 0,
              progress: bool = True, per_call: int = 4, passes: int = 1) -> int:
    """Measure ``n`` seeded random whole models in ``passes`` passes (the lowest median kept), then refit;
    returns how many models were new. A resumed build continues with the passes a model still lacks."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    archs = calibration_archs(config, n, seed)
    by_key = {a.key: a for a in archs}
    for model in table.models:  # measured before weight counts were recorded: the terms again, not the device
        if model.get("weights") is None and model["arch_key"] in by_key:
            terms = table_terms(table, arch_signatures(by_key[model["arch_key"]], config.resolution, config.num_classes))
            model.update(terms.record())
    done_passes = {m["arch_key"]: int(m.get("passes", 1)) for m in table.models}
    new = sum(1 for a in archs if a.key not in done_passes)
    total = sum(max(0, passes - done_passes.get(a.key, 0)) for a in archs)
    meter.prepare_models([a for a in archs if done_passes.get(a.key, 0) < passes], config.num_classes,
                         config.resolution, progress)
    try:
        with Progress(TextColumn("[bold]models"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                      TimeRemainingColumn(), disable=not progress or not total) as bar:
            task = bar.add_task("models", total=total)
            for pass_index in range(passes):
                todo = [a for a in archs if done_passes.get(a.key, 0) <= pass_index]
                for start in range(0, len(todo), per_call):
                    batch = todo[start:start + per_call]
                    measured = meter.models(batch, config.num_classes, config.resolution)
                    for arch, ms in zip(batch, measured):
                        terms = table_terms(table, arch_signatures(arch, config.resolution, config.num_classes))
                        table.add_model(arch.key, terms, ms, "build", passes=pass_index + 1)
                        done_passes[arch.key] = pass_index + 1
                    bar.advance(task, len(batch))
                    table.save()
    finally:
        if table.models:
            table.fit = fit_calibration(table.models)
        table.save()
    return new
