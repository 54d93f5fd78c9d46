"""`evaluator=table`: a trial's accuracy and latency looked up in tables instead of trained and measured.

Two CSV files joined on `index`: an accuracy table `index, arch_str, <one column per dataset>` (accuracy in
percent, as NAS-Bench-201 publishes it) and a latency table `index, latency_ms` (one per device, as HW-NAS-Bench
publishes it). Any device's latency table in that format plugs in. The project ships NAS-Bench-201's accuracies
and HW-NAS-Bench's Pixel 3 and Eyeriss latencies (`evaluators/tables/hw_nas_bench/`, README there); a table is
named by one of those words or given by path. Tables are loaded and checked once per process; a lookup is a
dict access.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from torch import nn

from evaluators.base import TrialEvaluator, TrialParts
from mnas_core.errors import ConfigError, TrialError

SHIPPED = Path(__file__).resolve().parent / "tables" / "hw_nas_bench"
SHIPPED_LATENCY = {"pixel3": SHIPPED / "latency_pixel3.csv", "eyeriss": SHIPPED / "latency_eyeriss.csv"}
SHIPPED_ACCURACY = SHIPPED / "nb201_accuracy.csv"


@dataclass(frozen=True)
class Table:
    """Rows of architectures: their key (`arch_str`), accuracy in percent and latency in ms."""

    arch_strs: tuple[str, ...]
    accuracy: tuple[float, ...]
    latency_ms: tuple[float, ...]
    row_of: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_of", {key: row for row, key in enumerate(self.arch_strs)})

    def lookup(self, arch_key: str) -> tuple[float, float]:
        row = self.row_of.get(arch_key)
        if row is None:
            raise TrialError(f"architecture {arch_key!r} is not in the table; evaluator=table needs a search space "
                             "whose architectures the table lists (search_space=nb201)")
        return self.accuracy[row], self.latency_ms[row]

    def oracle(self, target_ms: float) -> float:
        """The best accuracy (percent) among the architectures that meet the target."""
        meeting = [acc for acc, lat in zip(self.accuracy, self.latency_ms) if lat <= target_ms]
        if not meeting:
            raise ConfigError(f"no architecture of the table meets T = {target_ms} ms; the fastest takes "
                              f"{min(self.latency_ms):.3f} ms: raise the target")
        return max(meeting)


def resolve_table(value: str | Path | None, shipped: dict[str, Path], default: Path, what: str) -> Path:
    if value is None:
        return default
    path = shipped.get(str(value)) or Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"evaluator.{what}={value!s}: no such file; give a CSV path"
                          + (f" or one of {', '.join(shipped)}" if shipped else ""))
    return path.resolve()


def read_csv(path: Path, what: str, needs: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    missing = [c for c in needs if c not in columns]
    if missing:
        raise ConfigError(f"evaluator.{what} {path} lacks column(s) {', '.join(missing)}; expected "
                          f"{', '.join(needs)} (found {', '.join(columns) or 'no header'})")
    return columns, rows


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{path} line {line}: {column} {text!r} is not a number; fix that row") from None


@lru_cache(maxsize=8)
def load_table(accuracy_path: Path, latency_path: Path, dataset: str, space_keys: frozenset[str] | None) -> Table:
    """Join the two tables on `index`, keep the dataset's column; check that the rows cover `space_keys`."""
    columns, acc_rows = read_csv(accuracy_path, "accuracy_table", ("index", "arch_str"))
    datasets = [c for c in columns if c not in ("index", "arch_str")]
    if dataset not in datasets:
        raise ConfigError(f"evaluator.dataset={dataset!r} is not a column of {accuracy_path}; use one of "
                          f"{', '.join(datasets) or '(none)'}")
    _, lat_rows = read_csv(latency_path, "latency_table", ("index", "latency_ms"))
    latency = {row["index"]: _number(row["latency_ms"], latency_path, n, "latency_ms")
               for n, row in enumerate(lat_rows, start=2)}
    indexes = [row["index"] for row in acc_rows]
    if set(indexes) != set(latency) or len(latency) != len(lat_rows):
        unmatched = sorted(set(indexes) ^ set(latency), key=lambda s: (len(s), s))
        raise ConfigError(f"latency table {latency_path} has {len(lat_rows)} rows whose index does not match the "
                          f"{len(acc_rows)} of {accuracy_path} (e.g. index {unmatched[:1] or 'repeated'}); give "
                          "the latency table of the same benchmark")
    keys = [row["arch_str"] for row in acc_rows]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"accuracy table {accuracy_path} lists an architecture twice; keep one row each")
    missing = len(space_keys - set(keys)) if space_keys is not None else 0
    if missing:
        raise ConfigError(f"accuracy table {accuracy_path} does not cover the search space: {missing} of its "
                          f"{len(space_keys)} architectures have no row; give the full table")
    for n, row in enumerate(acc_rows, start=2):
        latency_ms = latency[row["index"]]
        if not latency_ms > 0:
            raise ConfigError(f"{latency_path}: index {row['index']} has latency {latency_ms}; latencies must be > 0")
    accuracy = tuple(_number(row[dataset], accuracy_path, n, dataset) for n, row in enumerate(acc_rows, start=2))
    if not all(0.0 <= a <= 100.0 for a in accuracy):
        raise ConfigError(f"{accuracy_path} column {dataset} must hold accuracies in percent (0-100)")
    return Table(tuple(keys), accuracy, tuple(latency[i] for i in indexes))


@lru_cache(maxsize=1)
def nb201_keys() -> frozenset[str]:
    from search_spaces.nb201 import all_archs

    return frozenset(arch.key for arch in all_archs())


def load_nb201_table(latency_table: str | Path = "pixel3", dataset: str = "cifar10",
                     accuracy_table: str | Path | None = None, check_coverage: bool = True) -> Table:
    """The NAS-Bench-201 table of one device (a shipped word or a path) and dataset."""
    accuracy_path = resolve_table(accuracy_table, {}, SHIPPED_ACCURACY, "accuracy_table")
    latency_path = resolve_table(latency_table, SHIPPED_LATENCY, SHIPPED_LATENCY["pixel3"], "latency_table")
    return load_table(accuracy_path, latency_path, str(dataset), nb201_keys() if check_coverage else None)


class TableEvaluator(TrialEvaluator):
    """Accuracy (converted from percent to [0, 1]) and latency of a trial, looked up by its architecture key."""

    kind = "table"

    def __init__(self, parts: TrialParts, latency_table: str = "pixel3", dataset: str = "cifar10",
                 accuracy_table: str | None = None, check_coverage: bool = True) -> None:
        super().__init__(parts)
        self.table = load_nb201_table(latency_table, dataset, accuracy_table, check_coverage)
        self.dataset = dataset

    def evaluate(self, model: nn.Module, arch_key: str) -> dict[str, Any]:
        started = time.perf_counter()
        accuracy, latency_ms = self.table.lookup(arch_key)
        return {"accuracy": accuracy / 100.0, "latency_ms": latency_ms, "latency_source": "table",
                "measure_seconds": time.perf_counter() - started}
