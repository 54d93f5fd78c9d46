"""AdbDevice: an Android phone over adb, timed by a native benchmark tool pinned to one core.

NO PHONE IS AVAILABLE TO THIS PROJECT'S TESTS. They check the command line this module builds (quoting,
taskset mask, thread flags) by running it in a local POSIX shell, the parsers on recorded outputs of
onnxruntime_perf_test and benchmark_model (tests/fixtures/adb/), and the "no device" error against a real
adb server with nothing attached. Pushing to and measuring on a real phone is untested here.

Per measurement: push the model to ``remote_dir`` (and, once, ``local_binary`` to ``benchmark_binary``),
run ``taskset MASK <runner argv>`` through ``adb shell`` with every argument shell-quoted, parse the output
with ``parser``, delete the pushed model. Transport: adbutils when importable (pip install mnas-nni[adb]),
else the ``adb`` command line.
MnasNet measured on a Pixel 1 big core, single thread: set ``core`` to a big core (cores 2-3 on a Pixel 1;
see /sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq) and keep ``threads: 1``.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from mnas_core.errors import ConfigError, DeviceError, DeviceTimeoutError

from .android_benchmarks import (
    BenchmarkJob,
    BenchmarkParser,
    BenchmarkRunner,
    OnnxPerfTestParser,
    OnnxPerfTestRunner,
)
from .device import LatencyDevice, last_line, shape_arg
from .result import LatencyResult

log = logging.getLogger(__name__)

NO_DEVICE = "no Android device found over adb; connect one and check `adb devices`, or set device=local"


class AdbTransport(Protocol):
    def serials(self) -> list[str]: ...
    def push(self, serial: str, local: Path, remote: str) -> None: ...
    def shell(self, serial: str, command: str, timeout_s: float) -> tuple[int, str]: ...


class AdbutilsTransport:
    """adb through the adbutils library (talks to the adb server; starts it if needed)."""

    def __init__(self) -> None:
        import adbutils

        self._adbutils = adbutils

    def _client(self) -> Any:
        return self._adbutils.AdbClient()  # host/port from ANDROID_ADB_SERVER_HOST/PORT at call time

    def _start_server_quietly(self) -> None:
        # adbutils would start a missing adb server itself, letting it print "* daemon ..." lines to our stderr.
        try:
            subprocess.run([self._adbutils.adb_path(), "start-server"], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            pass  # the client call below reports what is wrong

    def serials(self) -> list[str]:
        self._start_server_quietly()
        try:
            return [d.serial for d in self._client().device_list() if d.serial]
        except (self._adbutils.AdbError, OSError, subprocess.SubprocessError) as exc:
            raise DeviceError(f"cannot reach the adb server ({_one_line(exc)}); install Android platform-tools "
                              "and check `adb devices`, or set device=local") from exc

    def push(self, serial: str, local: Path, remote: str) -> None:
        try:
            self._client().device(serial).sync.push(str(local), remote, mode=0o755)
        except (self._adbutils.AdbError, OSError) as exc:
            raise DeviceError(f"adb push of {local.name} to {remote} failed ({_one_line(exc)}); check free "
                              "space and that the folder is writable (device.remote_dir)") from exc

    def shell(self, serial: str, command: str, timeout_s: float) -> tuple[int, str]:
        try:
            result = self._client().device(serial).shell2(command, timeout=timeout_s)
        except self._adbutils.AdbTimeout as exc:
            raise DeviceTimeoutError(f"adb shell on {serial} ran past {timeout_s:g}s; raise device.timeout_s "
                                     "or lower device.runs") from exc
        except (self._adbutils.AdbError, OSError) as exc:
            raise DeviceError(f"adb shell on {serial} failed ({_one_line(exc)}); check `adb devices`") from exc
        return result.returncode, result.output


class AdbCliTransport:
    """adb through the ``adb`` executable (arguments passed as a list, never through a local shell)."""

    def __init__(self, adb: str = "adb") -> None:
        self.adb = adb

    def _run(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self.adb, *args], capture_output=True, text=True, timeout=timeout_s,
                                  check=False)
        except FileNotFoundError as exc:
            raise DeviceError(f"adb not found ({self.adb}); install Android platform-tools or "
                              "`pip install adbutils`, or set device=local") from exc
        except subprocess.TimeoutExpired as exc:
            raise DeviceTimeoutError(f"`adb {args[0]}...` ran past {timeout_s:g}s; raise device.timeout_s or "
                                     "lower device.runs") from exc

    def serials(self) -> list[str]:
        proc = self._run(["devices"], 30)
        if proc.returncode != 0:
            raise DeviceError(f"`adb devices` failed: {last_line(proc.stderr)}")
        rows = [line.split("\t") for line in proc.stdout.splitlines()[1:]]
        return [row[0] for row in rows if len(row) == 2 and row[1].strip() == "device"]

    def push(self, serial: str, local: Path, remote: str) -> None:
        proc = self._run(["-s", serial, "push", str(local), remote], 300)
        if proc.returncode != 0:
            raise DeviceError(f"adb push of {local.name} to {remote} failed ({last_line(proc.stderr)}); check "
                              "free space and that the folder is writable (device.remote_dir)")

    def shell(self, serial: str, command: str, timeout_s: float) -> tuple[int, str]:
        proc = self._run(["-s", serial, "shell", command], timeout_s)
        return proc.returncode, proc.stdout + proc.stderr


def default_transport() -> AdbTransport:
    try:
        return AdbutilsTransport()
    except ImportError:
        return AdbCliTransport(shutil.which("adb") or "adb")


def cpu_mask(core: int | Sequence[int] | str) -> str:
    """taskset mask in hex: a core index (4 -> '10'), a list of cores ([2, 3] -> 'c') or a hex mask as is."""
    if isinstance(core, str):
        mask = core.lower().removeprefix("0x")
        if not mask or any(c not in "0123456789abcdef" for c in mask) or int(mask, 16) == 0:
            raise ConfigError(f"device.core={core!r} is not a hex CPU mask; use e.g. 'f0', or a core index")
        return mask
    cores = [core] if isinstance(core, int) else [int(c) for c in core]
    if not cores or any(c < 0 for c in cores):
        raise ConfigError(f"device.core={core!r}: give a core index >= 0, a list of them or a hex mask")
    return format(sum(1 << c for c in set(cores)), "x")


class AdbDevice(LatencyDevice):
    """An Android phone over adb; the benchmark tool (``runner``/``parser``) is pluggable."""

    def __init__(
        self,
        serial: str | None = None,
        benchmark_binary: str = "/data/local/tmp/onnxruntime_perf_test",
        remote_dir: str = "/data/local/tmp/mnas-nni",
        core: int | Sequence[int] | str | None = None,
        threads: int = 1,
        warmup: int = 10,
        runs: int = 50,
        timeout_s: float = 300.0,
        runner: BenchmarkRunner | None = None,
        parser: BenchmarkParser | None = None,
        local_binary: str | None = None,
        ld_library_path: str | None = None,
        transport: AdbTransport | None = None,
    ) -> None:
        if threads < 1 or runs < 1 or warmup < 0 or timeout_s <= 0:
            raise ConfigError("device: threads and runs must be >= 1, warmup >= 0 and timeout_s > 0")
        self.serial = serial
        self.benchmark_binary = benchmark_binary
        self.remote_dir = remote_dir
        self.mask = cpu_mask(core) if core is not None else None
        self.threads = int(threads)
        self.warmup = int(warmup)
        self.runs = int(runs)
        self.timeout_s = float(timeout_s)
        self.runner: BenchmarkRunner = runner or OnnxPerfTestRunner()
        self.runtime = getattr(self.runner, "export_runtime", "onnxruntime")  # the model file the evaluator exports
        self.parser: BenchmarkParser = parser or OnnxPerfTestParser()
        self.local_binary = Path(local_binary).expanduser() if local_binary else None
        self.ld_library_path = ld_library_path
        self._transport = transport
        self._binary_pushed = False
        self._resolved_serial: str | None = None

    @property
    def name(self) -> str:
        suffix = f"-cpu{self.threads}" + (f"-mask{self.mask}" if self.mask else "")
        suffix += "-executorch" if self.runtime == "executorch" else ""  # its cache rows and layer table apart
        return f"adb:{self._serial()}{suffix}"

    @property
    def lock_name(self) -> str:
        return f"adb:{self._serial()}"

    def transport(self) -> AdbTransport:
        if self._transport is None:
            self._transport = default_transport()
        return self._transport

    def _serial(self) -> str:
        """The configured serial, or the only attached device's; checked against `adb devices` once."""
        if self._resolved_serial is not None:
            return self._resolved_serial
        serials = self.transport().serials()
        if self.serial is not None:
            if self.serial not in serials:
                raise DeviceError(f"Android device {self.serial} not found over adb (attached: "
                                  f"{', '.join(serials) or 'none'}); check `adb devices` or fix device.serial")
            self._resolved_serial = self.serial
        elif not serials:
            raise DeviceError(NO_DEVICE)
        elif len(serials) > 1:
            raise ConfigError(f"several Android devices attached ({', '.join(serials)}); set device.serial")
        else:
            self._resolved_serial = serials[0]
        return self._resolved_serial

    # --- command line ----------------------------------------------------------------------------------

    def benchmark_command(self, remote_model: str, result_path: str) -> str:
        """The ``adb shell`` command line: pinned benchmark, then the runner's follow-up commands."""
        job = BenchmarkJob(self.benchmark_binary, remote_model, result_path, self.threads, self.warmup, self.runs)
        first, *rest = self.runner(job)
        prefix = ["env", f"LD_LIBRARY_PATH={self.ld_library_path}"] if self.ld_library_path else []
        pinned = ["taskset", self.mask, *first] if self.mask else first
        return " && ".join(shlex.join(argv) for argv in [prefix + pinned, *rest])

    # --- LatencyDevice -----------------------------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        serial = self._serial()

        def prop(key: str) -> str:
            status, out = self.transport().shell(serial, shlex.join(["getprop", key]), 30)
            return out.strip() if status == 0 else ""

        if self.local_binary is not None:
            self._check_local_binary()
            binary_hash = hashlib.sha256(self.local_binary.read_bytes()).hexdigest()[:16]
        else:
            status, out = self.transport().shell(serial, shlex.join(["sha256sum", self.benchmark_binary]), 60)
            binary_hash = out.split()[0][:16] if status == 0 and out.split() else "unknown"
        return {
            "runtime": self.runner.runtime,
            "runtime_version": f"sha256:{binary_hash}",
            "cpu": prop("ro.soc.model") or prop("ro.board.platform") or prop("ro.hardware"),
            "model": prop("ro.product.model"),
            "android": prop("ro.build.version.release"),
            "threads": self.threads,
            "cpu_mask": self.mask,
            "benchmark_binary": self.benchmark_binary,
        }

    def measure(self, onnx_path: str | Path, input_shape: Sequence[int]) -> LatencyResult:
        path = Path(onnx_path)
        shape_arg(input_shape)  # validates; the benchmark tools read the shape from the model
        if path.suffix != self.runner.model_suffix:
            raise ConfigError(f"{type(self.runner).__name__} reads {self.runner.model_suffix} models, got "
                              f"{path.name}; pick a runner/parser for that format in conf/device/adb.yaml")
        if not path.is_file():
            raise DeviceError(f"model file {path} does not exist; export it first with export_for_runtime")
        serial = self._serial()
        transport = self.transport()
        self._check(transport.shell(serial, shlex.join(["mkdir", "-p", "--", self.remote_dir]), 30), "mkdir")
        if self.local_binary is not None and not self._binary_pushed:
            self._check_local_binary()
            transport.push(serial, self.local_binary, self.benchmark_binary)
            self._check(transport.shell(serial, shlex.join(["chmod", "755", self.benchmark_binary]), 30), "chmod")
            self._binary_pushed = True
        token = uuid.uuid4().hex[:8]
        remote_model = posixpath.join(self.remote_dir, f"{token}-{path.name}")
        result_path = posixpath.join(self.remote_dir, f"{token}-result.txt")
        transport.push(serial, path, remote_model)
        try:
            status, output = transport.shell(serial, self.benchmark_command(remote_model, result_path),
                                             self.timeout_s)
        finally:
            try:
                transport.shell(serial, shlex.join(["rm", "-f", "--", remote_model, result_path]), 30)
            except DeviceError as exc:  # never hide the measurement's own error
                log.warning("%s: could not remove %s: %s", serial, remote_model, exc)
        if status != 0:
            raise DeviceError(f"{self.name}: benchmark failed (exit {status}): {last_line(output)}; run "
                              f"{self.benchmark_binary} by hand in `adb shell` to see why")
        return self.parser(output)

    def _check_local_binary(self) -> None:
        if self.local_binary is not None and not self.local_binary.is_file():
            raise ConfigError(f"device.local_binary {self.local_binary} does not exist; build or download the "
                              "benchmark tool, or set local_binary: null")

    def _check(self, result: tuple[int, str], what: str) -> None:
        status, output = result
        if status != 0:
            raise DeviceError(f"{self.name}: {what} on the phone failed ({last_line(output)}); check "
                              "device.remote_dir and device.benchmark_binary")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
