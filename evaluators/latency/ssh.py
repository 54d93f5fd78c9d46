"""SshDevice: a Linux board reached over SSH (paramiko), measured with the board's own onnxruntime.

Each measurement connects, copies ort_runner.py (once) and the .onnx over SFTP, runs the runner with the
board's Python and parses the single JSON line it prints. Host keys are checked against known_hosts by
default. Remote commands are built from shlex-quoted arguments, so any model path is safe.
Connection failures are retried ``retries`` times; host-key, authentication and runner failures are not.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import logging
import posixpath
import shlex
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from mnas_core.errors import ConfigError, DeviceError, DeviceTimeoutError

from .device import LatencyDevice, last_line, parse_runner_output, shape_arg
from .local import RUNNER_PATH
from .result import LatencyResult, summarize

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Transient(Exception):
    """A connection failure worth retrying; carries the final one-line error if retries run out."""

    def __init__(self, error: DeviceError) -> None:
        super().__init__(str(error))
        self.error = error


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unknown host key")
        self.key = key


class _RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(key)


class _AcceptWithWarning(paramiko.MissingHostKeyPolicy):
    """strict_host_key=False: accept an unknown key for this connection only (never saved), loudly."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("strict_host_key=False: accepting unverified host key %s for %s", _fingerprint(key), hostname)


@dataclass
class _Session:
    """One connection: the SSH client, its SFTP channel and whether remote_dir is known to exist."""

    client: paramiko.SSHClient
    sftp: paramiko.SFTPClient
    remote_dir_ready: bool = False


def _fingerprint(key: paramiko.PKey) -> str:
    return getattr(key, "fingerprint", None) or f"{key.get_name()} MD5:{key.get_fingerprint().hex()}"


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
    ) -> None:
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
        suffix = "" if self.threads == 1 else f"-cpu{self.threads}"
        suffix += f"-cores{'_'.join(map(str, self.cores))}" if self.cores else ""
        self.name = f"ssh:{self.address}{suffix}"
        if not self.strict_host_key:
            log.warning("%s: strict_host_key=False, the board's identity is not verified; add its key to %s "
                        "and set strict_host_key: true", self.name, self.known_hosts)

    @property
    def lock_name(self) -> str:
        return f"ssh:{self.host}:{self.port}"

    # --- LatencyDevice -------------------------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        info = self._with_retries(lambda session: self._run_runner(session, ["--describe"]))["describe"]
        return {"host": self.address, **info}

    def measure(self, onnx_path: str | Path, input_shape: Sequence[int]) -> LatencyResult:
        path = Path(onnx_path)
        if not path.is_file():
            raise DeviceError(f"{self.name}: model file {path} does not exist; export it first with export_onnx")
        shape = shape_arg(input_shape)

        def upload_and_run(session: _Session) -> dict[str, Any]:
            self._ensure_remote_dir(session)
            remote_model = posixpath.join(self.remote_dir, f"{uuid.uuid4().hex[:8]}-{path.name}")
            self._upload(session, lambda: session.sftp.put(str(path), remote_model))
            try:
                return self._run_runner(session, ["--model", remote_model, "--shape", shape,
                                                  "--warmup", str(self.warmup), "--runs", str(self.runs)])
            finally:
                try:
                    session.sftp.remove(remote_model)
                except OSError:
                    log.warning("%s: could not remove %s on the board", self.name, remote_model)

        return summarize(self._with_retries(upload_and_run)["samples_ms"])

    # --- remote runner ----------------------------------------------------------------------------------

    def _run_runner(self, session: _Session, args: list[str]) -> dict[str, Any]:
        runner = self._ensure_runner(session)
        argv = [self.python, runner, "--threads", str(self.threads), "--deadline-s", f"{self.timeout_s:g}", *args]
        if self.cores:
            argv += ["--cores", ",".join(map(str, self.cores))]
        status, stdout, stderr = self._exec(session.client, argv, self.timeout_s + 10)
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

    def _ensure_remote_dir(self, session: _Session) -> None:
        if session.remote_dir_ready:
            return
        status, _, stderr = self._exec(session.client, ["mkdir", "-p", "--", self.remote_dir],
                                       self.connect_timeout_s)
        if status != 0:
            raise DeviceError(f"{self.name}: cannot create {self.remote_dir} ({last_line(stderr)}); "
                              "set device.remote_dir to a writable folder")
        session.remote_dir_ready = True

    def _ensure_runner(self, session: _Session) -> str:
        """Upload ort_runner.py under a content-hashed name (once per board and version); return its path."""
        source = RUNNER_PATH.read_bytes()
        remote = posixpath.join(self.remote_dir, f"ort_runner-{hashlib.sha256(source).hexdigest()[:12]}.py")
        try:
            if session.sftp.stat(remote).st_size == len(source):
                return remote
        except OSError:
            pass
        self._ensure_remote_dir(session)
        tmp = f"{remote}.{uuid.uuid4().hex[:8]}.tmp"
        self._upload(session, lambda: session.sftp.putfo(io.BytesIO(source), tmp))
        session.sftp.posix_rename(tmp, remote)  # atomic: concurrent uploaders never see half a script
        return remote

    def _upload(self, session: _Session, put: Callable[[], object]) -> None:
        try:
            put()
        except OSError as exc:
            raise DeviceError(f"{self.name}: cannot copy to {self.remote_dir} on the board ({_one_line(exc)}); "
                              "set device.remote_dir to a writable folder") from exc

    def _exec(self, client: paramiko.SSHClient, argv: list[str], timeout_s: float) -> tuple[int, str, str]:
        """Run argv (each argument shell-quoted) and return (exit status, stdout, stderr)."""
        command = shlex.join(argv)
        try:
            _, stdout, stderr = client.exec_command(command, timeout=timeout_s)
            out = stdout.read().decode("utf-8", "replace")
            err = stderr.read().decode("utf-8", "replace")
            return stdout.channel.recv_exit_status(), out, err
        except TimeoutError as exc:
            raise DeviceTimeoutError(f"{self.name}: no answer within {timeout_s:g}s; raise device.timeout_s "
                                     "or lower device.runs") from exc

    # --- connection ---------------------------------------------------------------------------------------

    def _with_retries(self, operation: Callable[[_Session], T]) -> T:
        delay = self.retry_delay_s
        for attempt in range(self.retries + 1):
            try:
                with self._connection() as session:
                    return operation(session)
            except _Transient as transient:
                if attempt == self.retries:
                    raise transient.error from None
                log.info("retrying in %.1fs: %s", delay, transient)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    @contextmanager
    def _connection(self) -> Iterator[_Session]:
        client = paramiko.SSHClient()
        try:
            self._connect(client)
            try:
                with client.open_sftp() as sftp:
                    yield _Session(client, sftp)
            except (paramiko.SSHException, EOFError, ConnectionError) as exc:
                raise _Transient(DeviceError(f"{self.name}: connection lost ({_one_line(exc)}); check the "
                                             "board and the network, then retry")) from exc
        finally:
            client.close()

    def _connect(self, client: paramiko.SSHClient) -> None:
        if self.known_hosts.is_file():
            client.load_system_host_keys(str(self.known_hosts))  # read-only: never written back
        client.set_missing_host_key_policy(_RejectUnknownHost() if self.strict_host_key else _AcceptWithWarning())
        if self.key_file and not Path(self.key_file).is_file():
            raise DeviceError(f"{self.name}: key file {self.key_file} not found; set device.key_file to your "
                              "private key (e.g. ~/.ssh/id_ed25519)")
        known_name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        try:
            client.connect(
                hostname=self.host, port=self.port, username=self.user, key_filename=self.key_file,
                look_for_keys=self.key_file is None, allow_agent=self.key_file is None,
                timeout=self.connect_timeout_s, banner_timeout=self.connect_timeout_s,
                auth_timeout=self.connect_timeout_s,
            )
        except _UnknownHostKey as exc:
            raise DeviceError(
                f"{self.name}: host key {_fingerprint(exc.key)} is not in {self.known_hosts}; verify it, then "
                f"add it with `ssh-keyscan -p {self.port} {self.host} >> {self.known_hosts}`"
            ) from None
        except paramiko.BadHostKeyException as exc:
            raise DeviceError(
                f"{self.name}: host key {_fingerprint(exc.key)} does not match {self.known_hosts} (board "
                f"reinstalled or someone in between); if expected, run `ssh-keygen -R '{known_name}' "
                f"-f {self.known_hosts}` and add the new key"
            ) from None
        except paramiko.PasswordRequiredException:
            raise DeviceError(f"{self.name}: key file {self.key_file} needs a passphrase; load it into "
                              "ssh-agent and set device.key_file: null, or use a key without one") from None
        except paramiko.AuthenticationException:
            which = f"key {self.key_file}" if self.key_file else "ssh-agent/default keys"
            raise DeviceError(f"{self.name}: {which} refused for user {self.user}; add the public key to the "
                              "board's ~/.ssh/authorized_keys or fix device.user/device.key_file") from None
        except TimeoutError as exc:
            raise _Transient(DeviceTimeoutError(
                f"{self.name}: no SSH answer within {self.connect_timeout_s:g}s; check the board is on and "
                "reachable, or raise device.connect_timeout_s")) from exc
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            raise _Transient(DeviceError(f"{self.name}: connection refused; check the board is on, sshd runs "
                                         "there and device.host/port are right")) from exc
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise _Transient(DeviceError(f"{self.name}: cannot connect ({_one_line(exc)}); check the board is "
                                         "on, sshd runs there and device.host/port are right")) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
