"""LocalDevice, export, cache and the per-device lock, measured for real on this machine's CPU."""

from __future__ import annotations

import itertools
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import onnx
import onnxruntime
import pytest
from torch import nn

from evaluators.latency import (
    LatencyEvaluator,
    LocalDevice,
    device_lock,
    export_onnx,
    read_intervals,
)
from mnas_core.errors import DeviceError, DeviceTimeoutError

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 3, 64, 64)
LAST_CORE = max(os.sched_getaffinity(0))


def conv_net(width: int, depth: int) -> nn.Module:
    """A few 3x3 conv layers; width and depth scale the cost."""
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
    return nn.Sequential(*layers)


def small_net() -> nn.Module:
    return conv_net(width=32, depth=4)


def big_net() -> nn.Module:
    return conv_net(width=96, depth=4)


def one_line(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text, f"error message must be one line: {text!r}"
    return text


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(small_net(), SHAPE, tmp_path_factory.mktemp("onnx") / "small.onnx")


def test_export_is_batch_one_fixed_opset_deterministic_and_keeps_train_mode(tmp_path: Path) -> None:
    model = small_net().train()
    first = export_onnx(model, (8, 3, 64, 64), tmp_path / "a.onnx")
    second = export_onnx(model, SHAPE, tmp_path / "b.onnx")
    assert model.training, "export must restore the caller's train mode"
    assert first.read_bytes() == second.read_bytes()
    graph = onnx.load(str(first))
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 64]
    assert {o.domain: o.version for o in graph.opset_import}[""] == 17
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left behind"


def test_describe_names_cpu_runtime_and_threads() -> None:
    info = LocalDevice(threads=1, cores=[LAST_CORE]).describe()
    assert info["runtime"] == "onnxruntime"
    assert info["runtime_version"] == onnxruntime.__version__
    assert info["threads"] == 1 and info["cores"] == [LAST_CORE]
    assert info["cpu"]


def test_median_is_stable_over_five_measurements(small_onnx: Path) -> None:
    device = LocalDevice(threads=1, cores=[LAST_CORE], warmup=10, runs=50)
    results = [device.measure(small_onnx, SHAPE) for _ in range(5)]
    medians = [r.median_ms for r in results]
    cv = statistics.stdev(medians) / statistics.fmean(medians)
    print(f"\nlocal medians (ms) over 5 measurements: {[round(m, 4) for m in medians]}; "
          f"CV of the median = {100 * cv:.2f} % (goal <= 2 %); per-measurement cv: "
          f"{[round(100 * r.cv, 1) for r in results]} %")
    assert all(r.runs == 50 and r.p10_ms <= r.median_ms <= r.p90_ms for r in results)
    # This 2-core VM's speed moves in steps (CI saw medians of 0.58-0.61 ms and 0.77-0.82 ms in one test), so
    # the 2 % stability goal is a benchmark figure (printed above); the test catches a broken measurement only.
    # A busy spell on the shared core can spoil one measurement (CI once saw 0.70-0.77 ms and one 1.40 ms, its
    # runs spread 28 %): that is why table builds keep the lowest of several; four of the five must agree.
    typical = sorted(medians)[:4]
    assert typical[-1] < 2 * typical[0], f"medians disagree by 2x or more: {medians}"


def test_bigger_model_measures_slower(tmp_path: Path) -> None:
    device = LocalDevice(threads=1, cores=[LAST_CORE], warmup=5, runs=30)
    small = device.measure(export_onnx(small_net(), SHAPE, tmp_path / "s.onnx"), SHAPE).median_ms
    big = device.measure(export_onnx(big_net(), SHAPE, tmp_path / "b.onnx"), SHAPE).median_ms
    print(f"\nsmall {small:.3f} ms, big {big:.3f} ms ({big / small:.1f}x)")
    assert big > 2 * small


def test_cache_hit_skips_export_and_measurement(tmp_path: Path) -> None:
    device = LocalDevice(threads=1, warmup=2, runs=10)
    kwargs = {"cache_path": tmp_path / "latency.sqlite", "lock_dir": tmp_path / "locks", "workdir": tmp_path / "w"}
    evaluator = LatencyEvaluator(device, **kwargs)
    first = evaluator.measure(small_net(), "arch-A", SHAPE)
    runs_after_first = evaluator.device_runs
    assert runs_after_first >= 1 and evaluator.cache_hits == 0
    assert evaluator.measure(small_net(), "arch-A", SHAPE) == first
    assert evaluator.device_runs == runs_after_first and evaluator.cache_hits == 1
    # Another process's evaluator on the same file: no model is needed at all for a hit.
    fresh = LatencyEvaluator(LocalDevice(threads=1, warmup=2, runs=10), **kwargs)
    assert fresh.measure(None, "arch-A", SHAPE) == first  # type: ignore[arg-type]
    assert fresh.device_runs == 0
    # A different input size is a different key.
    fresh.measure(small_net(), "arch-A", (1, 3, 32, 32))
    assert fresh.device_runs >= 1
    assert not list((tmp_path / "w").glob("*.onnx")), "exported files are removed after measuring"


def test_timeout_is_a_device_timeout_error(small_onnx: Path) -> None:
    device = LocalDevice(threads=1, warmup=0, runs=10**8, timeout_s=1)
    started = time.monotonic()
    with pytest.raises(DeviceTimeoutError) as caught:
        device.measure(small_onnx, SHAPE)
    assert time.monotonic() - started < 10
    assert "timeout_s" in one_line(caught.value)


def test_broken_model_is_a_one_line_device_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(DeviceError) as caught:
        LocalDevice(runs=1, warmup=0).measure(broken, SHAPE)
    assert "runner failed" in one_line(caught.value)


# --- one measurement at a time per device, across processes ----------------------------------------------

WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from torch import nn
    from evaluators.latency import LatencyEvaluator, LocalDevice

    tmp, worker = Path(sys.argv[1]), sys.argv[2]
    evaluator = LatencyEvaluator(LocalDevice(warmup=2, runs=20), cache_path=None, lock_dir=tmp / "locks",
                                 workdir=tmp / "work", interval_log=tmp / "intervals.log")
    (tmp / f"ready-{sys.argv[2]}").touch()
    while not (tmp / "go").exists():
        time.sleep(0.005)
    for i in range(3):
        model = nn.Sequential(nn.Conv2d(3, 8 * (i + 1), 3, padding=1), nn.ReLU())
        evaluator.measure(model, f"{worker}-{i}", (1, 3, 64, 64))
""")

SLEEPER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from evaluators.latency import device_lock

    tmp, name = Path(sys.argv[1]), sys.argv[2]
    (tmp / f"ready-{sys.argv[2]}").touch()
    while not (tmp / "go").exists():
        time.sleep(0.005)
    for _ in range(2):
        with device_lock(name, tmp / "locks", interval_log=tmp / "intervals.log"):
            time.sleep(0.3)
""")


def run_together(tmp_path: Path, script: str, args: list[str]) -> list[tuple[str, int, int, int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), arg], cwd=REPO, env=env)
             for arg in args]
    deadline = time.monotonic() + 60  # start together only once every process waits at the start line
    while not all((tmp_path / f"ready-{arg}").exists() for arg in args):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a worker did not start"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    assert [p.wait(timeout=60) for p in procs] == [0] * len(procs)
    return sorted(read_intervals(tmp_path / "intervals.log"), key=lambda row: row[1])


def overlaps(intervals: list[tuple[str, int, int, int]]) -> int:
    return sum(1 for before, after in itertools.pairwise(intervals) if after[1] < before[2])


def test_two_processes_never_measure_at_the_same_time(tmp_path: Path) -> None:
    intervals = run_together(tmp_path, WORKER, ["p1", "p2"])
    assert len(intervals) == 6 and len({row[3] for row in intervals}) == 2
    assert {row[0] for row in intervals} == {"local"}
    assert overlaps(intervals) == 0, intervals


def test_the_overlap_check_sees_overlap_between_different_devices(tmp_path: Path) -> None:
    intervals = run_together(tmp_path, SLEEPER, ["device-a", "device-b"])
    assert len(intervals) == 4
    assert overlaps(intervals) >= 1, "two different devices are expected to be measured concurrently"


def test_lock_is_shared_by_threads_and_cores_settings() -> None:
    assert LocalDevice(threads=1).lock_name == LocalDevice(threads=2, cores=[0]).lock_name
    assert LocalDevice(threads=1).name != LocalDevice(threads=2).name


def test_device_lock_serializes_within_one_process(tmp_path: Path) -> None:
    import threading

    log = tmp_path / "intervals.log"

    def hold() -> None:
        with device_lock("dev", tmp_path / "locks", interval_log=log):
            time.sleep(0.1)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    intervals = sorted(read_intervals(log), key=lambda row: row[1])
    assert len(intervals) == 3 and overlaps(intervals) == 0
