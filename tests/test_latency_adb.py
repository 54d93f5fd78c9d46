"""AdbDevice without a phone: command lines, parsers on recorded tool outputs, and the no-device error.

No Android device exists here. The phone is simulated only by recorded outputs (tests/fixtures/adb/);
the command line is checked by running it in a local POSIX shell with a stand-in benchmark binary, and
the "no device" error comes from a real adb server (adbutils' bundled adb) with nothing attached.
"""

from __future__ import annotations

import os
import shlex
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from evaluators.latency import (
    AdbCliTransport,
    AdbDevice,
    AdbutilsTransport,
    ExecutorRunnerParser,
    ExecutorRunnerRunner,
    OnnxPerfTestParser,
    TFLiteBenchmarkModelParser,
    TFLiteBenchmarkModelRunner,
    cpu_mask,
)
from evaluators.latency.adb import NO_DEVICE
from mnas_core.errors import ConfigError, DeviceError

FIXTURES = Path(__file__).parent / "fixtures" / "adb"
HOSTILE = "/data/local/tmp/mnas-nni/ab12cd34-arch 1;reboot;$(reboot)`id`&&'x'.onnx"
RESULT = "/data/local/tmp/mnas-nni/ab12cd34-result.txt"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def one_line(error: Exception) -> str:
    text = str(error)
    assert text and "\n" not in text, f"error message must be one line: {text!r}"
    return text


# --- command construction --------------------------------------------------------------------------------

@pytest.mark.parametrize(("core", "mask"), [(0, "1"), (2, "4"), (4, "10"), ([2, 3], "c"), ([4, 5, 6, 7], "f0"),
                                            ("f0", "f0"), ("0xC", "c")])
def test_cpu_mask(core: object, mask: str) -> None:
    assert cpu_mask(core) == mask  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "xyz", "0", [], [-1]])
def test_bad_cpu_mask_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError):
        cpu_mask(bad)  # type: ignore[arg-type]


def test_perf_test_command_is_pinned_single_threaded_and_quoted() -> None:
    device = AdbDevice(serial="emulator-5554", core=2, threads=1, runs=50)
    command = device.benchmark_command(HOSTILE, RESULT)
    assert command.startswith("taskset 4 /data/local/tmp/onnxruntime_perf_test ")
    assert shlex.split(command) == [
        "taskset", "4", "/data/local/tmp/onnxruntime_perf_test", "-m", "times", "-r", "50", "-e", "cpu",
        "-x", "1", "-y", "1", "-o", "99", "-I", "-s", HOSTILE, RESULT, "&&", "cat", RESULT,
    ]


def test_command_without_core_and_with_library_path() -> None:
    device = AdbDevice(serial="x", threads=2, runs=7, ld_library_path="/data/local/tmp/ort lib")
    argv = shlex.split(device.benchmark_command("/m.onnx", "/r.txt"))
    assert argv[:2] == ["env", "LD_LIBRARY_PATH=/data/local/tmp/ort lib"] and "taskset" not in argv
    assert argv[argv.index("-x") + 1] == "2" and argv[argv.index("-r") + 1] == "7"


def test_tflite_command_flags() -> None:
    device = AdbDevice(serial="x", benchmark_binary="/data/local/tmp/benchmark_model", core=3,
                       runner=TFLiteBenchmarkModelRunner(), parser=TFLiteBenchmarkModelParser(),
                       warmup=10, runs=50)
    model = "/data/local/tmp/mnas-nni/a b;$(id).tflite"
    assert shlex.split(device.benchmark_command(model, RESULT)) == [
        "taskset", "8", "/data/local/tmp/benchmark_model", f"--graph={model}", "--num_threads=1",
        "--warmup_runs=10", "--warmup_min_secs=0", "--num_runs=50", "--min_secs=0",
    ]


def test_command_line_runs_in_a_posix_shell_with_exact_arguments(tmp_path: Path) -> None:
    """The real shell parses the line into exactly our argv, pins it, and runs nothing from the path."""
    stand_in = tmp_path / "perf test"
    stand_in.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n'
                        'grep Cpus_allowed_list /proc/self/status\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    core = max(os.sched_getaffinity(0))
    model = str(tmp_path / "m o d;touch pwn1;$(touch pwn2)`touch pwn3`&&'x'.onnx")
    result = tmp_path / "result.txt"
    result.write_text("mnas-nni,0.001,1,1,0\n")
    device = AdbDevice(serial="x", benchmark_binary=str(stand_in), core=core, runs=3)
    proc = subprocess.run(["sh", "-c", device.benchmark_command(model, str(result))], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, check=True)
    lines = proc.stdout.splitlines()
    assert lines[:14] == ["-m", "times", "-r", "3", "-e", "cpu", "-x", "1", "-y", "1", "-o", "99", "-I", "-s"]
    assert lines[14:16] == [model, str(result)]
    assert lines[16].split()[-1] == str(core), "the benchmark runs pinned to the configured core"
    assert lines[17] == "mnas-nni,0.001,1,1,0", "the follow-up command prints the result file"
    assert not list(tmp_path.glob("pwn*"))


def test_model_format_must_match_the_runner(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    device = AdbDevice(serial="x", runner=TFLiteBenchmarkModelRunner(), parser=TFLiteBenchmarkModelParser())
    with pytest.raises(ConfigError) as caught:
        device.measure(model, (1, 3, 8, 8))
    assert ".tflite" in one_line(caught.value)


# --- parsing recorded outputs ------------------------------------------------------------------------------

def test_perf_test_result_file_gives_exact_statistics() -> None:
    result = OnnxPerfTestParser()(fixture("onnxruntime_perf_test_result_file.txt"))
    assert result.runs == 50
    assert result.median_ms == pytest.approx(19.03015)
    assert result.mean_ms == pytest.approx(19.10571, rel=1e-6)
    assert result.p10_ms < result.median_ms < result.p90_ms <= 20.236
    assert 0 < result.cv < 0.05


def test_perf_test_newer_six_column_result_file_uses_total_time() -> None:
    result = OnnxPerfTestParser()(fixture("onnxruntime_perf_test_result_file_v2.txt"))
    assert result.runs == 10
    assert result.median_ms == pytest.approx(4.14105)
    assert result.p90_ms <= 4.2564


def test_perf_test_stdout_only_falls_back_to_the_summary() -> None:
    result = OnnxPerfTestParser()(fixture("onnxruntime_perf_test_stdout_only.txt"))
    assert result.runs == 100
    assert result.median_ms == pytest.approx(7.49148)
    assert result.p90_ms == pytest.approx(7.59534)
    assert result.mean_ms == pytest.approx(7.50881)
    assert 7.42009 <= result.p10_ms <= result.median_ms
    assert result.std_ms == pytest.approx((7.59534 - 7.49148) / 1.2815515655446004)


def test_tflite_benchmark_model_uses_the_timed_runs_not_the_warmup() -> None:
    result = TFLiteBenchmarkModelParser()(fixture("tflite_benchmark_model.txt"))
    assert result.runs == 50
    assert result.mean_ms == pytest.approx(23.8896) and result.median_ms == pytest.approx(23.8896)
    assert result.std_ms == pytest.approx(0.172)
    assert 23.614 <= result.p10_ms < result.mean_ms < result.p90_ms <= 24.637


def test_tflite_benchmark_model_with_median() -> None:
    result = TFLiteBenchmarkModelParser()(fixture("tflite_benchmark_model_percentiles.txt"))
    assert result.runs == 25
    assert result.median_ms == pytest.approx(22.402) and result.mean_ms == pytest.approx(22.4618)


def test_tflite_all_same_statistics_line() -> None:
    output = "count=5 curr=1234(all same)\n\nInference timings in us: Init: 1, First inference: 2, " \
             "Warmup (avg): 1234, Inference (avg): 1234\n"
    result = TFLiteBenchmarkModelParser()(output)
    assert result.runs == 5 and result.median_ms == pytest.approx(1.234) and result.std_ms == 0


@pytest.mark.parametrize(("parser", "output"), [
    (TFLiteBenchmarkModelParser(), fixture("tflite_benchmark_model_failed.txt")),
    (OnnxPerfTestParser(), "onnxruntime_perf_test: error while loading shared libraries: libonnxruntime.so\n"),
    (OnnxPerfTestParser(), ""),
])
def test_failed_tool_output_is_a_one_line_device_error(parser: object, output: str) -> None:
    with pytest.raises(DeviceError) as caught:
        parser(output)  # type: ignore[operator]
    assert "by hand" in one_line(caught.value)


# --- a real adb server with no phone attached ---------------------------------------------------------------

@pytest.fixture(scope="module")
def empty_adb_server() -> str:
    """A private adb server (free port) started by adbutils' bundled adb; killed afterwards."""
    adbutils = pytest.importorskip("adbutils", reason="adbutils not installed (pip install mnas-nni[adb])")
    try:
        adb = adbutils.adb_path()
    except adbutils.AdbError:
        pytest.skip("no adb executable (adbutils has none bundled for this platform)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
        try:
            yield adb
        finally:
            adbutils.AdbClient(port=port).server_kill()


def test_no_phone_is_a_one_line_device_error_via_adbutils(empty_adb_server: str) -> None:
    device = AdbDevice(transport=AdbutilsTransport())
    with pytest.raises(DeviceError) as caught:
        device.describe()
    assert one_line(caught.value) == NO_DEVICE


def test_no_phone_is_a_one_line_device_error_via_adb_cli(empty_adb_server: str) -> None:
    with pytest.raises(DeviceError) as caught:
        AdbDevice(transport=AdbCliTransport(empty_adb_server)).describe()
    assert one_line(caught.value) == NO_DEVICE
    with pytest.raises(DeviceError) as caught:
        AdbDevice(serial="0123456789ABCDEF", transport=AdbCliTransport(empty_adb_server)).describe()
    assert "device.serial" in one_line(caught.value)


def test_missing_adb_executable_names_the_fix() -> None:
    with pytest.raises(DeviceError) as caught:
        AdbDevice(transport=AdbCliTransport("/nonexistent/adb")).describe()
    assert "platform-tools" in one_line(caught.value)


# --- ExecuTorch's executor_runner ----------------------------------------------------------------------------

def test_executor_runner_output_gives_one_mean_per_process() -> None:
    result = ExecutorRunnerParser()(fixture("executor_runner.txt"))
    assert result.runs == 50  # five processes of ten executions
    assert result.median_ms == pytest.approx(17.7318) and result.mean_ms == pytest.approx(18.00034)
    assert result.p10_ms < result.median_ms < result.p90_ms and result.std_ms > 0


def test_executor_runner_without_timing_is_one_line() -> None:
    with pytest.raises(DeviceError) as caught:
        ExecutorRunnerParser()("E 00:00:00.003 executorch:executor_runner.cpp:290] Failed to load program\n")
    assert "no timing" in one_line(caught.value) and "Failed to load program" in str(caught.value)


def test_executor_runner_command_runs_pinned_in_a_posix_shell_with_exact_arguments(tmp_path: Path) -> None:
    """The phone's shell runs the stand-in once per process, pinned, with the model path as one argument."""
    stand_in = tmp_path / "executor runner"
    stand_in.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n'
                        'grep Cpus_allowed_list /proc/self/status\n'
                        'echo "I 00:00:00.1 executorch:executor_runner.cpp:452] Model executed successfully 4 time(s) '
                        'in 8.0 ms."\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    core = max(os.sched_getaffinity(0))
    model = str(tmp_path / "m o d;touch pwn1;$(touch pwn2)`touch pwn3`&&'x'.pte")
    device = AdbDevice(serial="x", benchmark_binary=str(stand_in), core=core, runs=10,
                       runner=ExecutorRunnerRunner(processes=3), parser=ExecutorRunnerParser())
    proc = subprocess.run(["sh", "-c", device.benchmark_command(model, str(tmp_path / "unused"))], cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, check=True)
    lines = proc.stdout.splitlines()
    assert lines[:3] == [f"--model_path={model}", "--num_executions=4", "--cpu_threads=1"]
    assert lines[3].split()[-1] == str(core), "each process runs pinned to the configured core"
    assert sum("Model executed successfully" in line for line in lines) == 3
    assert device.parser(proc.stdout).runs == 12 and device.parser(proc.stdout).median_ms == pytest.approx(2.0)
    assert not list(tmp_path.glob("pwn*"))


class ListedPhone:
    """A simulated phone (no Android device exists here): `adb devices` lists serial x; nothing else is used."""

    def serials(self) -> list[str]:
        return ["x"]

    def push(self, serial: str, local: Path, remote: str) -> None:
        raise AssertionError("not used")

    def shell(self, serial: str, command: str, timeout_s: float) -> tuple[int, str]:
        raise AssertionError("not used")


def test_an_executor_runner_device_gets_pte_models_and_its_own_name() -> None:
    """The evaluator exports the file `device.runtime` names (.pte), and cache rows and tables keep apart."""
    onnx = AdbDevice(serial="x", transport=ListedPhone())
    executorch = AdbDevice(serial="x", runner=ExecutorRunnerRunner(), parser=ExecutorRunnerParser(),
                           transport=ListedPhone())
    assert (onnx.runtime, executorch.runtime) == ("onnxruntime", "executorch")
    assert executorch.name == "adb:x-cpu1-executorch" and onnx.name == "adb:x-cpu1"
    with pytest.raises(ConfigError):
        ExecutorRunnerRunner(processes=0)

