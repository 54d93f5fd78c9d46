"""Pluggable benchmark tools for AdbDevice: how to call a tool on the phone, and how to read what it prints.

A *runner* turns a BenchmarkJob into argv lists (the first is the benchmark itself and gets pinned with
taskset by the device; any others run after it, e.g. to print a result file). A *parser* turns the combined
output into a LatencyResult. Shipped:

* onnxruntime_perf_test (ONNX Runtime's C++ perf tool): OnnxPerfTestRunner + OnnxPerfTestParser.
  It times each run and, given a result file, writes one CSV line per run; we print that file and compute
  exact statistics. Without the file the parser falls back to the printed summary (see its docstring).
* LiteRT/TFLite ``benchmark_model`` for a .tflite export: TFLiteBenchmarkModelRunner + TFLiteBenchmarkModelParser.
* ExecuTorch's ``executor_runner`` (built for Android with the XNNPACK backend) for a .pte export:
  ExecutorRunnerRunner + ExecutorRunnerParser.

The output formats follow the tools' sources (onnxruntime/test/perftest/performance_runner.cc;
tensorflow/lite/tools/benchmark/benchmark_model.cc and tsl/util/stats_calculator.h;
executorch/examples/portable/executor_runner/executor_runner.cpp); tests/fixtures/adb/ holds samples of each.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from dataclasses import dataclass
from typing import Protocol

from mnas_core.errors import ConfigError, DeviceError

from .device import last_line
from .result import LatencyResult, summarize

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_Z90 = 1.2815515655446004  # standard normal 90th percentile, for estimates from mean and std


@dataclass(frozen=True)
class BenchmarkJob:
    """One measurement on the phone. Paths are on the device; ``result_path`` is a scratch file the runner
    may write (the device deletes it afterwards)."""

    binary: str
    model_path: str
    result_path: str
    threads: int
    warmup: int
    runs: int


class BenchmarkRunner(Protocol):
    model_suffix: str  # the model format the tool reads, e.g. ".onnx"
    runtime: str  # tool name, part of the cache key
    # (optional) `export_runtime`: the runtime whose model file the evaluator exports for it (export.py);
    # "onnxruntime" when absent

    def __call__(self, job: BenchmarkJob) -> list[list[str]]: ...


class BenchmarkParser(Protocol):
    def __call__(self, output: str) -> LatencyResult: ...


# --- onnxruntime_perf_test -----------------------------------------------------------------------------

class OnnxPerfTestRunner:
    """``onnxruntime_perf_test -m times -r RUNS -e cpu -x T -y T -o 99 -I -s MODEL RESULT`` then ``cat RESULT``.

    Sequential executor (the default), all graph optimizations (-o 99), generated input (-I), intra- and
    inter-op threads = ``threads``. The tool always does exactly one untimed warm-up run; ``warmup`` cannot be
    passed to it and is ignored.
    """

    model_suffix = ".onnx"
    runtime = "onnxruntime_perf_test"
    export_runtime = "onnxruntime"

    def __call__(self, job: BenchmarkJob) -> list[list[str]]:
        benchmark = [
            job.binary, "-m", "times", "-r", str(job.runs), "-e", "cpu",
            "-x", str(job.threads), "-y", str(job.threads), "-o", "99", "-I", "-s",
            job.model_path, job.result_path,
        ]
        return [benchmark, ["cat", job.result_path]]


class OnnxPerfTestParser:
    """Reads onnxruntime_perf_test output.

    Preferred: the per-run CSV lines of its result file (``model,seconds,peak_bytes,cpu_pct,run``; newer
    versions insert the submission time before the total: ``model,submit_s,total_s,peak,cpu,run``) give
    exact statistics. Fallback (stdout only): median = P50, p90 = P90, mean = average; std is estimated as
    (P90 - P50) / 1.2816 and p10 as max(min, 2 * P50 - P90), i.e. assuming symmetric, normal-ish noise.
    """

    _run_line = re.compile(rf"^.*,(?P<seconds>{_NUMBER}),\d+,-?\d+,(?P<run>\d+)\s*$", re.MULTILINE)

    def __call__(self, output: str) -> LatencyResult:
        samples = [float(m["seconds"]) * 1e3 for m in self._run_line.finditer(output)]
        if samples:
            return summarize(samples)
        return self._from_summary(output)

    @staticmethod
    def _from_summary(output: str) -> LatencyResult:
        def seconds(label: str) -> float | None:
            match = re.search(rf"^\s*{label} Latency: ({_NUMBER}) s\s*$", output, re.MULTILINE)
            return float(match[1]) * 1e3 if match else None

        average = re.search(rf"Average inference time cost: ({_NUMBER}) ms", output)
        requests = re.search(r"Total inference requests: (\d+)", output)
        p50, p90, low = seconds("P50"), seconds("P90"), seconds("Min")
        if average is None or requests is None or p50 is None or p90 is None:
            raise DeviceError(f"onnxruntime_perf_test printed no timings (last line: {last_line(output)}); run "
                              "the command by hand on the phone to see why")
        std = max(p90 - p50, 0.0) / _Z90
        mean = float(average[1])
        return LatencyResult(
            median_ms=p50, mean_ms=mean, p10_ms=max(low if low is not None else 0.0, 2 * p50 - p90),
            p90_ms=p90, std_ms=std, runs=int(requests[1]), cv=std / mean if mean > 0 else 0.0,
        )


# --- TFLite / LiteRT benchmark_model ----------------------------------------------------------------------

class TFLiteBenchmarkModelRunner:
    """``benchmark_model --graph=MODEL --num_threads=T --warmup_runs=W --warmup_min_secs=0 --num_runs=R
    --min_secs=0``: exactly W warm-up and R timed runs."""

    model_suffix = ".tflite"
    runtime = "tflite_benchmark_model"

    def __call__(self, job: BenchmarkJob) -> list[list[str]]:
        return [[
            job.binary, f"--graph={job.model_path}", f"--num_threads={job.threads}",
            f"--warmup_runs={job.warmup}", "--warmup_min_secs=0", f"--num_runs={job.runs}", "--min_secs=0",
        ]]


class TFLiteBenchmarkModelParser:
    """Reads benchmark_model output (plain, ``INFO:``-prefixed or logcat-prefixed lines), times in µs.

    Uses the statistics line of the timed runs (the last ``count=...`` before ``Inference timings in us``):
    count, min, max, avg, std and, in newer builds, median. Older builds print no median: it is taken as
    the average. p10/p90 are not printed: they are estimated as avg -/+ 1.2816 std, clipped to [min, max].
    """

    _stats = re.compile(r"count=(\d+)([^\n]*)")
    _field = re.compile(rf"(\w+)=({_NUMBER})")

    def __call__(self, output: str) -> LatencyResult:
        if "Benchmarking failed" in output or "Inference timings in us" not in output:
            raise DeviceError(f"benchmark_model printed no timings (last line: {last_line(output)}); run the "
                              "command by hand on the phone to see why")
        timed_part = output[: output.index("Inference timings in us")]
        stats_lines = self._stats.findall(timed_part)
        if not stats_lines:
            raise DeviceError("benchmark_model printed no per-run statistics; update benchmark_model or pass "
                              "a parser for its output format")
        count, rest = stats_lines[-1]
        fields = {key: float(value) for key, value in self._field.findall(rest)}
        if "(all same)" in rest or "avg" not in fields:  # "count=5 curr=1234(all same)"
            value = fields["curr"] / 1e3
            return LatencyResult(value, value, value, value, 0.0, int(count), 0.0)
        mean, std = fields["avg"] / 1e3, fields.get("std", 0.0) / 1e3
        low, high = fields.get("min", 0.0) / 1e3, fields.get("max", math.inf) / 1e3
        return LatencyResult(
            median_ms=fields["median"] / 1e3 if "median" in fields else mean,
            mean_ms=mean,
            p10_ms=min(max(mean - _Z90 * std, low), high),
            p90_ms=max(min(mean + _Z90 * std, high), low),
            std_ms=std,
            runs=int(count),
            cv=std / mean if mean > 0 else 0.0,
        )


# --- ExecuTorch executor_runner ---------------------------------------------------------------------------

class ExecutorRunnerRunner:
    """``executor_runner --model_path=MODEL --num_executions=N --cpu_threads=T``, in ``processes`` processes one
    after the other (one pinned shell runs them all): ``runs`` executions in all.

    The tool times only its ``execute()`` calls and prints their total, so each process gives one mean; the
    spread is that of the process means. It has no warm-up option: each process's first (cold) execution is in
    its mean, spread over its ``runs / processes`` executions; ``warmup`` is ignored.
    """

    model_suffix = ".pte"
    runtime = "executor_runner"
    export_runtime = "executorch"

    def __init__(self, processes: int = 5) -> None:
        if processes < 1:
            raise ConfigError(f"ExecutorRunnerRunner: processes must be >= 1, got {processes}")
        self.processes = processes

    def __call__(self, job: BenchmarkJob) -> list[list[str]]:
        per_process = max(1, math.ceil(job.runs / self.processes))
        one = shlex.join([job.binary, f"--model_path={job.model_path}", f"--num_executions={per_process}",
                          f"--cpu_threads={job.threads}"])
        loop = f"for i in {' '.join(str(k) for k in range(self.processes))}; do {one} || exit $?; done"
        return [["sh", "-c", loop]]


class ExecutorRunnerParser:
    """Reads executor_runner's ``Model executed successfully N time(s) in T ms.`` lines (ET_LOG, any prefix):
    one mean per line, T / N; the result's ``runs`` counts the executions."""

    _line = re.compile(rf"Model executed successfully (\d+) time\(s\) in ({_NUMBER}) ms")

    def __call__(self, output: str) -> LatencyResult:
        found = [(int(n), float(total)) for n, total in self._line.findall(output) if int(n) > 0]
        if not found:
            raise DeviceError(f"executor_runner printed no timing (last line: {last_line(output)}); run the command "
                              "by hand on the phone to see why (an executor_runner built with the XNNPACK backend?)")
        result = summarize([total / n for n, total in found])
        return dataclasses.replace(result, runs=sum(n for n, _ in found))
