"""Measured latencies kept in SQLite so a repeated architecture is not measured twice.

Key: (architecture key, device name, runtime + version, input shape). WAL mode and a busy timeout make
one file safe to share between concurrent trial processes; each call opens its own short connection.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

from mnas_core.errors import ConfigError

from .result import LatencyResult

DEFAULT_CACHE_PATH = Path("~/.cache/mnas-nni/latency.sqlite")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latency (
    arch_key TEXT NOT NULL,
    device TEXT NOT NULL,
    runtime TEXT NOT NULL,
    input_shape TEXT NOT NULL,
    result TEXT NOT NULL,
    measured_at REAL NOT NULL,
    PRIMARY KEY (arch_key, device, runtime, input_shape)
)
"""


def shape_key(input_shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in input_shape)


class LatencyCache:
    """get/put of LatencyResult by (arch_key, device, runtime, input_shape)."""

    def __init__(self, path: str | Path = DEFAULT_CACHE_PATH, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout_s = busy_timeout_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
                # A valid header over damaged pages opens fine and fails every later query: check them now.
                problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc) or "readonly" in str(exc):
                raise ConfigError(f"cannot use latency cache {self.path} ({exc}); point latency.cache_path at a "
                                  "writable SQLite file") from exc
            problems = [str(exc)]
        except OSError as exc:
            raise ConfigError(f"cannot use latency cache {self.path} ({exc}); point latency.cache_path at a "
                              "writable SQLite file") from exc
        if problems != ["ok"]:
            detail = " ".join("; ".join(problems).replace("*", "").split())[:160]
            raise ConfigError(f"latency cache {self.path} is damaged ({detail}); delete it (it refills as models are "
                              "measured) or point latency.cache_path at another file")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.busy_timeout_s)

    def get(self, arch_key: str, device: str, runtime: str, input_shape: Sequence[int]) -> LatencyResult | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT result FROM latency WHERE arch_key=? AND device=? AND runtime=? AND input_shape=?",
                (arch_key, device, runtime, shape_key(input_shape)),
            ).fetchone()
        return LatencyResult.from_dict(json.loads(row[0])) if row else None

    def put(self, arch_key: str, device: str, runtime: str, input_shape: Sequence[int],
            result: LatencyResult) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?, ?)",
                (arch_key, device, runtime, shape_key(input_shape), json.dumps(result.to_dict()), time.time()),
            )

    def __len__(self) -> int:
        with closing(self._connect()) as db:
            return db.execute("SELECT COUNT(*) FROM latency").fetchone()[0]
