"""Trial records: what one finished trial produced, appended to `trials.jsonl` as it finishes.

One JSON object per line, so a crashed search keeps every finished trial and the file loads straight
into pandas (`pd.read_json(path, lines=True)`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mnas_nni.run.disk_space import write_file_atomically

SUCCEEDED, FAILED = "succeeded", "failed"


@dataclass
class TrialRecord:
    trial: int
    status: str
    arch: dict[str, Any] | None = None
    sample: dict[str, Any] = field(default_factory=dict)
    accuracy: float | None = None
    latency_ms: float | None = None
    reward: float | None = None
    params: int | None = None
    macs: int | None = None
    train_seconds: float = 0.0
    measure_seconds: float = 0.0
    duration_seconds: float = 0.0
    error: str | None = None
    latency: dict[str, Any] = field(default_factory=dict)
    latency_source: str | None = None          # what latency_ms is: "measured" or "predicted" (latency.mode)
    latency_predicted_ms: float | None = None  # the layer table's prediction, when latency.mode predicted it
    latency_measured_ms: float | None = None   # the device's figure, when predict_verify also measured it
    history: list[dict[str, Any]] = field(default_factory=list)
    nni_trial_id: str | None = None
    finished_at: str | None = None
    evaluator: str | None = None  # what scored the trial: proxy | supernet
    # a stand-alone proxy training and device measurement after the search (mnas_nni/run/confirm.py)
    confirmed_accuracy: float | None = None
    confirmed_latency_ms: float | None = None
    confirmed_reward: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    @property
    def confirmed(self) -> bool:
        return self.confirmed_accuracy is not None

    @property
    def final_accuracy(self) -> float | None:
        """The confirmed accuracy once the trial was confirmed (stand-alone), else the search's own figure."""
        return self.confirmed_accuracy if self.confirmed else self.accuracy

    @property
    def final_latency_ms(self) -> float | None:
        return self.confirmed_latency_ms if self.confirmed else self.latency_ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


class TrialLog:
    """Append-only JSON-lines log; each line is flushed and fsynced before the call returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: TrialRecord) -> None:
        """One whole line, or (the write failed: a full disk) the log exactly as it was."""
        line = (json.dumps(_json_safe(record.to_dict()), allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # unbuffered: no late flush
        try:
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)

    def read(self) -> list[TrialRecord]:
        return load_records(self.path)

    def rewrite(self, records: Iterable[TrialRecord]) -> None:
        """Replace the log by `records` at once (a crash leaves the old log or the new one, never half)."""
        lines = "".join(json.dumps(_json_safe(r.to_dict()), allow_nan=False) + "\n" for r in records)
        write_file_atomically(self.path, lines.encode("utf-8"))


def set_aside_torn_tail(path: str | Path) -> Path | None:
    """A last line cut short by a kill mid-write (no newline after it) is moved to a side file next to the log,
    so the next record starts on a line of its own; returns the side file, or None when the log ends whole."""
    path = Path(path)
    if not path.is_file():
        return None
    with path.open("rb+") as f:
        data = f.read()
        whole = data.rfind(b"\n") + 1
        if whole == len(data):
            return None
        try:  # a whole record that only lacks its newline (a hand-edited file) stays
            json.loads(data[whole:])
            f.write(b"\n")
            return None
        except ValueError:
            pass
        side = next(path.with_name(f"{path.name}.torn-{n}") for n in range(1, 10**6)
                    if not path.with_name(f"{path.name}.torn-{n}").exists())
        side.write_bytes(data[whole:])
        f.truncate(whole)
        f.flush()
        os.fsync(f.fileno())
    return side


def set_aside_failed_after(path: str | Path, trial: int) -> tuple[Path | None, int]:
    """Failed trials numbered above `trial` move to a side file next to the log (they are run again);
    returns the side file (None when there were none) and how many moved."""
    path = Path(path)
    records = load_records(path)
    moved = [r for r in records if r.trial > trial and not r.ok]
    if not moved:
        return None, 0
    side = next(path.with_name(f"{path.name}.rerun-{n}") for n in range(1, 10**6)
                if not path.with_name(f"{path.name}.rerun-{n}").exists())
    TrialLog(side).rewrite(moved)
    TrialLog(path).rewrite(r for r in records if r not in moved)
    return side, len(moved)


def load_records(path: str | Path) -> list[TrialRecord]:
    """Every complete line of a trial log; a line cut short by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(TrialRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return records


def top_k(records: Iterable[TrialRecord], k: int, key: str | None = None) -> list[TrialRecord]:
    """The best k by `key`; by default the confirmed reward once a search has confirmed trials, else the reward."""
    records = list(records)
    if key is None:
        key = "confirmed_reward" if any(r.confirmed_reward is not None for r in records) else "reward"
    done = [r for r in records if r.ok and getattr(r, key) is not None]
    return sorted(done, key=lambda r: getattr(r, key), reverse=True)[:k]


def target_answer(records: Iterable[TrialRecord], target_ms: float) -> TrialRecord | None:
    """The search's answer for a latency target T: the most accurate successful trial whose latency meets T
    (among the confirmed trials, with their confirmed figures, once a search confirmed some); None if none does."""
    records = [r for r in records if r.ok]
    if any(r.confirmed for r in records):
        records = [r for r in records if r.confirmed]
    meets = [r for r in records if r.final_accuracy is not None and r.final_latency_ms is not None
             and r.final_latency_ms <= target_ms]
    return max(meets, key=lambda r: (r.final_accuracy, -r.final_latency_ms), default=None)


def pareto_front(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """Trials no other trial beats on both accuracy (higher) and latency (lower), sorted by latency."""
    done = sorted((r for r in records if r.ok and r.accuracy is not None and r.latency_ms is not None),
                  key=lambda r: (r.latency_ms, -r.accuracy))
    front, best_acc = [], -math.inf
    for record in done:
        if record.accuracy > best_acc:
            front.append(record)
            best_acc = record.accuracy
    return front
