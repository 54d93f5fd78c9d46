"""What watches a search: the trial log, the console, the tracker. Each gets the same few calls."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnas_nni.run.records import TrialRecord

log = logging.getLogger(__name__)


@dataclass
class SearchInfo:
    """Handed to observers when a search starts."""

    run_dir: Path
    config: dict[str, Any]  # the whole composed Hydra config, resolved
    config_yaml: str
    device: dict[str, Any]  # the latency device's own description
    strategy: str
    target_ms: float
    decisions: dict[str, list[Any]] = field(default_factory=dict)  # label -> choices
    resumed: bool = False


class SearchObserver:
    """Base observer: every hook is optional. Hooks must not raise; `ObserverGroup` logs and drops errors."""

    def on_search_start(self, info: SearchInfo) -> None: ...

    def on_trial_end(self, record: TrialRecord) -> None: ...

    def on_controller_update(self, step: int, stats: dict[str, float]) -> None: ...

    def on_search_end(self, records: list[TrialRecord]) -> None: ...

    def close(self) -> None: ...


class ObserverGroup(SearchObserver):
    """Fans each call out; one observer's fault never stops the search or the other observers."""

    def __init__(self, *observers: SearchObserver):
        self.observers = [o for o in observers if o is not None]

    def _each(self, method: str, *args: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception as err:  # noqa: BLE001 - observers must never crash a search
                log.warning("%s.%s failed: %s", type(observer).__name__, method, err)

    def on_search_start(self, info: SearchInfo) -> None:
        # Not guarded: a tracker that cannot start (server unreachable) must stop the search before any training.
        for observer in self.observers:
            observer.on_search_start(info)

    def on_trial_end(self, record: TrialRecord) -> None:
        self._each("on_trial_end", record)

    def on_controller_update(self, step: int, stats: dict[str, float]) -> None:
        self._each("on_controller_update", step, stats)

    def on_search_end(self, records: list[TrialRecord]) -> None:
        self._each("on_search_end", records)

    def close(self) -> None:
        self._each("close")


class TrialLogObserver(SearchObserver):
    """Appends each finished trial to `trials.jsonl` in the run directory (the search's durable record). A full
    disk stops the search (`stop(reason)`) once the record is saved in the room the run's reserve leaves."""

    def __init__(self, path: Path, stop: Callable[[str], None]):
        from mnas_nni.run.records import TrialLog

        self.log, self.stop = TrialLog(path), stop

    def on_trial_end(self, record: TrialRecord) -> None:
        from mnas_nni.run.disk_space import DiskFull, write_or_stop

        try:
            write_or_stop(self.log.path, lambda: self.log.append(record), self.stop)
        except DiskFull as err:  # no reserve left: the search has to stop; this trial runs again on resume
            self.stop(str(err))


class FailureGuard(SearchObserver):
    """Stops a search once its last `limit` trials in a row failed for the same reason (numbers aside), at any
    point of the search: a device lost mid-search or a full disk would fail every further trial the same way.
    `stop(reason)` ends the search. A success starts the count again; once a trial has succeeded, failures that
    depend on the architecture (out of memory, the trial time limit) do not count: smaller ones still fit."""

    ARCH_DEPENDENT = re.compile(r"out of memory|timed? ?out|time limit", re.IGNORECASE)

    def __init__(self, limit: int, stop: Callable[[str], None]):
        self.limit, self.stop = int(limit), stop
        self.reasons: list[str] = []
        self.succeeded = False

    def on_search_start(self, info: SearchInfo) -> None:
        self.reasons, self.succeeded = [], False

    def on_trial_end(self, record: TrialRecord) -> None:
        if self.limit < 1:
            return
        if record.ok:
            self.reasons.clear()
            self.succeeded = True
            return
        reason = record.error or "unknown error"
        if self.succeeded and self.ARCH_DEPENDENT.search(reason):
            return
        self.reasons.append(reason)
        recent = self.reasons[-self.limit:]
        if len(recent) == self.limit and len({re.sub(r"[-+0-9.e]+", "#", r) for r in recent}) == 1:
            self.stop(f"{self.limit} trials in a row failed: {recent[-1]}")
