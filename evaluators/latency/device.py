"""The device surface every latency plugin implements (local CPU, SSH board, Android over adb)."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnas_core.errors import ConfigError, DeviceError

from .result import LatencyResult


class LatencyDevice(ABC):
    """Measures the latency of an exported model on one device.

    ``name`` identifies the device *and* the settings that change its numbers (threads, cores): it keys the
    cache. ``lock_name`` identifies the hardware only: measurements holding the same lock never overlap.
    """

    name: str
    runtime: str = "onnxruntime"  # what runs the model: the evaluator exports the file it reads (export.py)

    @property
    def lock_name(self) -> str:
        return self.name

    def describe(self) -> dict[str, Any]:
        """What the device is: at least ``runtime``, ``runtime_version``, ``cpu`` and ``threads``.

        Asked once per device object (it may need a round trip to the device), then remembered.
        """
        if getattr(self, "_description", None) is None:
            self._description = {"device": self.name, **self._describe()}
        return dict(self._description)

    @abstractmethod
    def _describe(self) -> dict[str, Any]:
        """Query the device for describe()."""

    @abstractmethod
    def measure(self, onnx_path: str | Path, input_shape: Sequence[int]) -> LatencyResult:
        """Time the model on the device (warm-up first); raise DeviceError/DeviceTimeoutError on failure."""

    def measure_many(self, items: Sequence[tuple[str | Path, Sequence[int]]]) -> list[LatencyResult]:
        """Time several small models in turn (a layer table's layers); a plugin may do it in one round trip."""
        return [self.measure(path, shape) for path, shape in items]

    def runtime_id(self) -> str:
        """Runtime and version as one string, part of the cache key."""
        info = self.describe()
        return f"{info['runtime']} {info['runtime_version']}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def parse_runner_output(stdout: str, device: str) -> dict[str, Any]:
    """The JSON object printed as the last line by ort_runner.py."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = stdout.strip().splitlines()[-1:] or ["<empty>"]
    raise DeviceError(f"{device}: the latency runner printed no result (last line: {tail[0][:200]}); "
                      "run evaluators/latency/ort_runner.py by hand on the device to see why")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "<no output>"


def batch_listing(device_name: str, items: Sequence[tuple[str | Path, Sequence[int]]]) -> list[list[Any]]:
    """`ort_runner.py --batch`'s listing, [[model path, [dims]], ...], after checking every model file exists."""
    listing = []
    for onnx_path, input_shape in items:
        if not Path(onnx_path).is_file():
            raise DeviceError(f"{device_name}: model file {onnx_path} does not exist; export it first with export_for_runtime")
        listing.append([str(onnx_path), [int(d) for d in shape_arg(input_shape).split(",")]])
    return listing


def shape_arg(input_shape: Sequence[int]) -> str:
    dims = [int(d) for d in input_shape]
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"input_shape must be positive integers such as (1, 3, 224, 224), "
                          f"got {tuple(input_shape)}")
    return ",".join(str(d) for d in dims)
