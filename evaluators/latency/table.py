"""The layer-wise latency table of one device at one resolution: a JSON file, built once, resumable.

    {"format": "mnas-nni/latency-table-v1", "device": ..., "runtime": ..., "resolution": 32,
     "description": {...device.describe()...}, "repeats": 3,
     "layers": {signature: median_ms, ...},                 # every piece measured once (see layers.py)
     "weights": {signature: parameters, ...},               # each piece's parameter count
     "spaces": {space_hash: {"space": {...}, "layers": n, "complete": true, "seconds": s}},
     "calibration": {"models": [{"arch_key", "sum_ms", "count", "kinds", "measured_ms", "origin"}],
                     "fit": {"coef": [a, b, c], "kind_coef": {kind: b_k}, "weight_coef": w, "residuals": [...]}}}

The file is rewritten atomically (write a temporary file, then rename) every few layers, so a killed build,
or a device lost half way, leaves a valid table holding what was measured; the same build command continues
from there. A table answers only for the device, runtime and resolution it was built for.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnas_core.errors import ConfigError

TABLE_FORMAT = "mnas-nni/latency-table-v1"
DEFAULT_TABLE_DIR = Path("~/.cache/mnas-nni/latency-tables")
BUILD_HINT = "python -m mnas_nni.latency_table build (with the search's device/search_space/data overrides)"


def default_table_path(device_name: str, resolution: int, table_dir: str | Path = DEFAULT_TABLE_DIR) -> Path:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", device_name)[:80]
    return Path(table_dir).expanduser() / f"{readable}-{int(resolution)}px.json"


@dataclass(frozen=True)
class Terms:
    """What the calibration reads off an architecture: its pieces' summed latency, its pieces per kind and its
    parameter count (None from a table that predates weight counts)."""

    sum_ms: float
    kinds: dict[str, int]
    weights: int | None = None

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def record(self) -> dict[str, Any]:
        """The fields a calibration model stores (the weights only when known)."""
        record: dict[str, Any] = {"sum_ms": float(self.sum_ms), "count": int(self.count), "kinds": dict(self.kinds)}
        if self.weights is not None:
            record["weights"] = int(self.weights)
        return record


class LatencyTable:
    """The table file's content, in memory. ``layers`` maps a piece signature to its median latency (ms)."""

    def __init__(self, path: str | Path, device: str, runtime: str, resolution: int,
                 description: dict[str, Any] | None = None, data: dict[str, Any] | None = None):
        self.path = Path(path).expanduser()
        data = data or {}
        self.device, self.runtime, self.resolution = device, runtime, int(resolution)
        self.description = description or data.get("description") or {}
        self.layers: dict[str, float] = {k: float(v) for k, v in data.get("layers", {}).items()}
        self.weights: dict[str, int] = {k: int(v) for k, v in data.get("weights", {}).items()}
        self.spaces: dict[str, dict[str, Any]] = dict(data.get("spaces", {}))
        calibration = data.get("calibration", {})
        self.models: list[dict[str, Any]] = list(calibration.get("models", []))
        self.fit: dict[str, Any] | None = calibration.get("fit")
        self.repeats: int | None = data.get("repeats")  # passes over every layer/model, the lowest median kept
        self.passes: dict[str, int] = {k: int(v) for k, v in data.get("passes", {}).items()}  # per layer

    def layer_passes(self, signature: str) -> int:
        """Passes the layer has been measured in (a table from before pass counts: 1 if it holds the layer)."""
        return self.passes.get(signature, 1 if signature in self.layers else 0)

    # ------------------------------------------------------------ file

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table file; a missing one names the build command, a damaged one says so."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"no latency table at {path}; build it first: {BUILD_HINT}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
                raise ValueError(f"not a {TABLE_FORMAT} file")
            return cls(path, str(data["device"]), str(data["runtime"]), int(data["resolution"]), data=data)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise ConfigError(f"latency table {path} is damaged ({str(err)[:80]}); delete it and rebuild: "
                              f"{BUILD_HINT}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "device": self.device, "runtime": self.runtime,
                "resolution": self.resolution, "repeats": self.repeats, "description": self.description,
                "layers": self.layers, "weights": self.weights, "passes": self.passes,
                "spaces": self.spaces, "calibration": {"models": self.models, "fit": self.fit}}

    def save(self) -> None:
        """Replace the file atomically: readers and a later resume only ever see a complete table. What another
        process saved to the file since this one read it is taken in first (two searches, or a search and a build,
        adding to one table keep both sides' measurements, not the last save's)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)  # one save at a time in this folder; dropped if the process dies
            self._take_in_saved()
            self._write()
        finally:
            os.close(folder)

    def _take_in_saved(self) -> None:
        """Add what the saved file holds and this table lacks; what this table holds wins."""
        try:
            saved = LatencyTable.load(self.path)
        except ConfigError:
            return  # none yet, or damaged: this save replaces it
        if (saved.device, saved.runtime, saved.resolution) != (self.device, self.runtime, self.resolution):
            return
        for mine, theirs in ((self.layers, saved.layers), (self.weights, saved.weights),
                             (self.passes, saved.passes), (self.spaces, saved.spaces)):
            for key, value in theirs.items():
                mine.setdefault(key, value)
        known = self.calibration_keys()
        self.models.extend(m for m in saved.models if m["arch_key"] not in known)

    def _write(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def check_matches(self, device: str | None = None, runtime: str | None = None,
                      resolution: int | None = None) -> None:
        """Refuse a table built for another device, runtime or resolution, saying which differs."""
        wanted = {"device": device, "runtime": runtime, "resolution": resolution}
        have = {"device": self.device, "runtime": self.runtime, "resolution": self.resolution}
        differs = [f"{k} {have[k]!r} (this run: {v!r})" for k, v in wanted.items() if v is not None and v != have[k]]
        if differs:
            raise ConfigError(f"latency table {self.path} was built for another setup: {'; '.join(differs)}; "
                              f"build one for this setup ({BUILD_HINT}) or set latency.table to another file")

    # ------------------------------------------------------------ calibration points

    def calibration_keys(self) -> set[str]:
        return {m["arch_key"] for m in self.models}

    def add_model(self, arch_key: str, terms: Terms, measured_ms: float, origin: str, passes: int = 1) -> None:
        """A whole model measured on the device, with its `Terms` (summed layers, pieces per kind, weights);
        measured again (another pass), it keeps the lowest median."""
        record = terms.record()
        for model in self.models:
            if model["arch_key"] == arch_key:
                model.update(record, measured_ms=min(model["measured_ms"], float(measured_ms)), passes=passes)
                return
        self.models.append({"arch_key": arch_key, **record, "measured_ms": float(measured_ms), "origin": origin,
                            "passes": passes})


def open_table(path: str | Path, device: str, runtime: str, resolution: int,
               description: dict[str, Any] | None = None) -> LatencyTable:
    """The table at ``path`` to extend (checked against this setup), or a new empty one."""
    path = Path(path).expanduser()
    if path.is_file():
        table = LatencyTable.load(path)
        table.check_matches(device, runtime, resolution)
        return table
    return LatencyTable(path, device, runtime, resolution, description=description)


def measure_layers(table: LatencyTable, signatures: Sequence[str], measure: Callable[[list[str]], list[float]],
                   passes: int = 1, chunk: int = 16, save_every_s: float = 2.0, progress: bool = True) -> int:
    """Measure the signatures the table lacks in ``passes`` passes over all of them (``chunk`` per device call),
    keeping each layer's lowest median, with a progress bar and ETA.

    Passes, not back-to-back repeats: a busy spell on a shared device then spoils one pass of a layer, not all.
    Returns how many layers were new. The table (with each layer's pass count) is saved every few seconds and
    on any failure (the device lost, Ctrl-C), so the same build continues from there.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    new = sum(1 for s in signatures if s not in table.layers)
    total = sum(max(0, passes - table.layer_passes(s)) for s in signatures)
    if not total:
        return 0
    measured, last_save = 0, time.monotonic()
    columns = (TextColumn("[bold]layers"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    try:
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("layers", total=total)
            for pass_index in range(passes):
                todo = [s for s in signatures if table.layer_passes(s) <= pass_index]
                for start in range(0, len(todo), max(1, chunk)):
                    batch = todo[start:start + max(1, chunk)]
                    for signature, ms in zip(batch, measure(batch)):
                        table.layers[signature] = min(ms, table.layers.get(signature, ms))
                        table.passes[signature] = pass_index + 1
                    measured += len(batch)
                    bar.advance(task, len(batch))
                    if time.monotonic() - last_save >= save_every_s:
                        table.save()
                        last_save = time.monotonic()
    finally:
        if measured:
            table.save()
    return new
