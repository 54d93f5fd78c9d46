"""SshDevice: a Linux board reached over SSH, measured with the board's own onnxruntime.

Each measurement logs in (mnas_core.ssh: host keys checked against known_hosts by default, every argument
shell-quoted, atomic uploads), copies ort_runner.py (once per version) and the .onnx, runs the runner with the
board's Python and parses the single JSON line it prints. Connection failures are retried ``retries`` times;
host-key, authentication and runner failures are not.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import posixpath
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mnas_core.errors import ConfigError, DeviceError, DeviceTimeoutError
from mnas_core.retry import retry
from mnas_core.ssh import SshSession, SshTarget, SshTransientError

from .device import LatencyDevice, batch_listing, last_line, parse_runner_output, shape_arg
from .export import check_runtime
from .local import RUNNER_PATH
from .result import LatencyResult, summarize

log = logging.getLogger(__name__)
T = TypeVar("T")


class SshDevice(LatencyDevice):
    """A remote Linux board over SSH with key authentication; ``python`` must have onnxruntime and numpy."""

    def __init__(
        self,
        host: str,
        port: int = 22,
        user: str | None = None,
        key_file: str | None = None,
        known_hosts: str | None = None,
        strict_host_key: bool = True,
        python: str = "python3",
        remote_dir: str = "/tmp/mnas-nni",
        connect_timeout_s: float = 10.0,
        timeout_s: float = 120.0,
        threads: int = 1,
        cores: Sequence[int] | None = None,
        warmup: int = 10,
        runs: int = 50,
        retries: int = 2,
        retry_delay_s: float = 0.5,
        runtime: str = "onnxruntime",
    ) -> None:
        check_runtime(runtime, installed_here=False)  # the board's own packages are checked when it is described
        if not host:
            raise ConfigError("device.host is empty; set it to the board's address, e.g. device.host=192.168.1.20")
        if threads < 1 or runs < 1 or warmup < 0 or timeout_s <= 0 or connect_timeout_s <= 0 or retries < 0:
            raise ConfigError("device: threads and runs must be >= 1, warmup and retries >= 0, timeouts > 0")
        self.host = host
        self.port = int(port)
        self.user = user or getpass.getuser()
        self.key_file = str(Path(key_file).expanduser()) if key_file else None
        self.known_hosts = Path(known_hosts or "~/.ssh/known_hosts").expanduser()
        self.strict_host_key = bool(strict_host_key)
        self.python = python
        self.remote_dir = remote_dir
        self.connect_timeout_s = float(connect_timeout_s)
        self.timeout_s = float(timeout_s)
        self.threads = int(threads)
        self.cores = sorted(int(c) for c in cores) if cores else None
        self.warmup = int(warmup)
        self.runs = int(runs)
        self.retries = int(retries)
        self.retry_delay_s = float(retry_delay_s)
        self.address = f"{self.user}@{self.host}:{self.port}"
        self.runtime = runtime
        suffix = "" if self.threads == 1 else f"-cpu{self.threads}"
        suffix += f"-cores{'_'.join(map(str, self.cores))}" if self.cores else ""
        suffix += "" if runtime == "onnxruntime" else f"-{runtime}"
        self.name = f"ssh:{self.address}{suffix}"
        if not self.strict_host_key:
            log.warning("%s: strict_host_key=False, the board's identity is not verified; add its key to %s "
                        "and set strict_host_key: true", self.name, self.known_hosts)

    @property
    def lock_name(self) -> str:
        return f"ssh:{self.host}:{self.port}"

    @property
    def target(self) -> SshTarget:
        return SshTarget(name=self.name, host=self.host, port=self.port, user=self.user, key_file=self.key_file,
                         known_hosts=self.known_hosts, strict_host_key=self.strict_host_key,
                         timeout_s=self.connect_timeout_s, settings="device.")

    # --- LatencyDevice -------------------------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        info = self._with_retries(lambda session: self._run_runner(session, ["--describe"]))["describe"]
        return {"host": self.address, **info}

    def measure(self, onnx_path: str | Path, input_shape: Sequence[int]) -> LatencyResult:
        path = Path(onnx_path)
        if not path.is_file():
            raise DeviceError(f"{self.name}: model file {path} does not exist; export it first with export_for_runtime")
        shape = shape_arg(input_shape)

        def upload_and_run(session: SshSession) -> dict[str, Any]:
            self._ensure_runner(session)  # also creates remote_dir
            remote_model = posixpath.join(self.remote_dir, f"{uuid.uuid4().hex[:8]}-{path.name}")
            session.upload(path, remote_model)
            try:
                return self._run_runner(session, ["--model", remote_model, "--shape", shape,
                                                  "--warmup", str(self.warmup), "--runs", str(self.runs)])
            finally:
                session.remove(remote_model)

        return summarize(self._with_retries(upload_and_run)["samples_ms"])

    def measure_many(self, items: Sequence[tuple[str | Path, Sequence[int]]]) -> list[LatencyResult]:
        """One SSH session and one runner start for the whole batch (a layer table's layers): uploading them
        all, then `ort_runner.py --batch`, instead of a session and a Python start-up per layer."""
        listing = batch_listing(self.name, items)
        paths, shapes = [Path(p) for p, _ in listing], [shape for _, shape in listing]

        def upload_and_run(session: SshSession) -> dict[str, Any]:
            self._ensure_runner(session)  # also creates remote_dir
            stem = uuid.uuid4().hex[:8]
            remote = [posixpath.join(self.remote_dir, f"{stem}-{i}-{p.name}") for i, p in enumerate(paths)]
            remote_listing = posixpath.join(self.remote_dir, f"{stem}-batch.json")
            uploaded: list[str] = []
            try:
                for path, target in zip(paths, remote):
                    session.upload(path, target)
                    uploaded.append(target)
                session.upload(json.dumps([[r, s] for r, s in zip(remote, shapes)]).encode(), remote_listing)
                uploaded.append(remote_listing)
                return self._run_runner(session, ["--batch", remote_listing, "--warmup", str(self.warmup),
                                                  "--runs", str(self.runs)], deadline_s=self.timeout_s * len(paths))
            finally:
                for target in uploaded:
                    session.remove(target)

        return [summarize(samples) for samples in self._with_retries(upload_and_run)["batch_samples_ms"]]

    # --- remote runner ----------------------------------------------------------------------------------

    def _run_runner(self, session: SshSession, args: list[str], deadline_s: float | None = None) -> dict[str, Any]:
        runner = self._ensure_runner(session)
        deadline_s = deadline_s or self.timeout_s
        argv = [self.python, runner, "--runtime", self.runtime, "--threads", str(self.threads),
                "--deadline-s", f"{deadline_s:g}", *args]
        if self.cores:
            argv += ["--cores", ",".join(map(str, self.cores))]
        status, stdout, stderr = session.exec(argv, deadline_s + 10)
        if status == 0:
            return parse_runner_output(stdout, self.name)
        if status == 127:
            raise DeviceError(f"{self.name}: remote Python {self.python!r} not found; set device.python to the "
                              "board's Python (with onnxruntime)")
        if "No module named" in stderr and ("onnxruntime" in stderr or "numpy" in stderr):
            raise DeviceError(f"{self.name}: {last_line(stderr)}; install onnxruntime and numpy for "
                              f"{self.python} on the board or set device.python")
        if status == -1:  # killed by a signal: our own SIGALRM deadline, or a crash
            raise DeviceTimeoutError(f"{self.name}: the remote runner was killed (deadline {self.timeout_s:g}s "
                                     "or a crash); raise device.timeout_s or lower device.runs")
        raise DeviceError(f"{self.name}: remote latency runner failed (exit {status}): {last_line(stderr)}")

    def _ensure_remote_dir(self, session: SshSession) -> None:
        status, _, stderr = session.exec(["mkdir", "-p", "--", self.remote_dir], self.connect_timeout_s)
        if status != 0:
            raise DeviceError(f"{self.name}: cannot create {self.remote_dir} ({last_line(stderr)}); "
                              "set device.remote_dir to a writable folder")

    def _ensure_runner(self, session: SshSession) -> str:
        """Upload ort_runner.py under a content-hashed name (once per board and version); return its path."""
        source = RUNNER_PATH.read_bytes()
        remote = posixpath.join(self.remote_dir, f"ort_runner-{hashlib.sha256(source).hexdigest()[:12]}.py")
        try:
            if session.sftp.stat(remote).st_size == len(source):
                return remote
        except OSError:
            pass
        self._ensure_remote_dir(session)
        session.upload(source, remote)
        return remote

    # --- connection ---------------------------------------------------------------------------------------

    def _with_retries(self, operation: Callable[[SshSession], T]) -> T:
        def once() -> T:
            with SshSession(self.target) as session:
                return operation(session)

        return retry(once, retries=self.retries, retry_on=SshTransientError, delay_s=self.retry_delay_s,
                     what=f"{self.name}: SSH")
