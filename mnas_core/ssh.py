"""The one SSH session helper (paramiko): host-key policy, quoted exec, atomic upload, one-line errors.

Used by the SSH latency device (`evaluators/latency/ssh.py`) and by the remote-execution check
(`mnas_nni/nni_remote.py`). Host keys are read from known_hosts and never written back; an unknown key is
refused unless `strict_host_key=False`, which accepts it for this connection only, with a warning.
Every failure is a `DeviceError` (or `ConfigError`) whose one line starts with the target's name and says
what to fix; `SshTransientError` marks the ones worth retrying (refused, timed out, connection lost).
"""

from __future__ import annotations

import io
import logging
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path

import paramiko

from mnas_core.errors import DeviceError, DeviceTimeoutError, one_line

log = logging.getLogger(__name__)


class SshTransientError(DeviceError):
    """A connection-level failure (refused, no answer, dropped): a retry may succeed."""


class _UnknownHostKey(paramiko.SSHException):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unknown host key")
        self.key = key


class _RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(key)


class _AcceptWithWarning(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("strict_host_key=False: accepting unverified host key %s for %s (never saved)",
                    fingerprint(key), hostname)


def fingerprint(key: paramiko.PKey) -> str:
    return getattr(key, "fingerprint", None) or f"{key.get_name()} MD5:{key.get_fingerprint().hex()}"


@dataclass(frozen=True)
class SshTarget:
    """Where to log in. `name` starts every error line; `settings` is the config prefix the fixes name
    (`device.` or `search.machines[0].`). `key_file=None` uses ssh-agent and the default keys."""

    name: str
    host: str
    port: int
    user: str
    key_file: str | None
    known_hosts: Path
    strict_host_key: bool = True
    timeout_s: float = 10.0
    settings: str = "device."
    timeout_fix: str = "raise device.timeout_s or lower device.runs"

    @property
    def known_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


class SshSession:
    """One logged-in connection: `exec` argv lists (each argument shell-quoted), `upload` bytes atomically."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self.client = _connect(target)
        self._sftp: paramiko.SFTPClient | None = None

    def __enter__(self) -> SshSession:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (paramiko.SSHException, EOFError, OSError) as err:
                raise self.lost(err) from None
        return self._sftp

    def lost(self, err: BaseException) -> SshTransientError:
        return SshTransientError(f"{self.target.name}: connection lost ({one_line(err)}); check the machine and "
                                 "the network, then retry")

    def exec(self, argv: list[str], timeout_s: float | None = None) -> tuple[int, str, str]:
        """Run argv and return (exit status, stdout, stderr); -1 means killed by a signal."""
        timeout = timeout_s or self.target.timeout_s
        try:
            _, stdout, stderr = self.client.exec_command(shlex.join(argv), timeout=timeout)
            out = stdout.read().decode("utf-8", "replace")
            err = stderr.read().decode("utf-8", "replace")
            return stdout.channel.recv_exit_status(), out, err
        except TimeoutError:
            raise DeviceTimeoutError(f"{self.target.name}: `{argv[0]}` gave no answer within {timeout:g}s; "
                                     f"{self.target.timeout_fix}") from None
        except (paramiko.SSHException, EOFError, OSError) as err:
            raise self.lost(err) from None

    def upload(self, data: bytes | Path, remote: str, mode: int | None = None) -> None:
        """Write `data` (bytes or a local file) to `remote` through a temporary name and a rename, so a
        concurrent reader never sees half a file."""
        tmp = f"{remote}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            if isinstance(data, Path):
                self.sftp.put(str(data), tmp)
            else:
                self.sftp.putfo(io.BytesIO(data), tmp)
            if mode is not None:
                self.sftp.chmod(tmp, mode)
            self.sftp.posix_rename(tmp, remote)
        except (OSError, EOFError) as err:
            raise DeviceError(f"{self.target.name}: cannot write {remote} ({one_line(err)}); set "
                              f"{self.target.settings}remote_dir to a writable folder") from None

    def remove(self, remote: str) -> None:
        try:
            self.sftp.remove(remote)
        except OSError:
            log.warning("%s: could not remove %s", self.target.name, remote)


def _connect(target: SshTarget) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if target.known_hosts.is_file():
        client.load_system_host_keys(str(target.known_hosts))  # read-only: never written back
    client.set_missing_host_key_policy(_RejectUnknownHost() if target.strict_host_key else _AcceptWithWarning())
    if target.key_file and not Path(target.key_file).is_file():
        raise DeviceError(f"{target.name}: key file {target.key_file} not found; set {target.settings}key_file "
                          "to your private key (e.g. ~/.ssh/id_ed25519)")
    timeout = target.timeout_s
    try:
        client.connect(hostname=target.host, port=target.port, username=target.user, key_filename=target.key_file,
                       look_for_keys=target.key_file is None, allow_agent=target.key_file is None,
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout)
        return client
    except _UnknownHostKey as err:
        error: DeviceError = DeviceError(
            f"{target.name}: host key {fingerprint(err.key)} is not in {target.known_hosts}; verify it, then add "
            f"it with `ssh-keyscan -p {target.port} {target.host} >> {target.known_hosts}`")
    except paramiko.BadHostKeyException as err:
        error = DeviceError(
            f"{target.name}: host key {fingerprint(err.key)} does not match {target.known_hosts} (machine "
            f"reinstalled or someone in between); if expected, run `ssh-keygen -R '{target.known_name}' "
            f"-f {target.known_hosts}` and add the new key")
    except paramiko.PasswordRequiredException:
        error = DeviceError(f"{target.name}: key file {target.key_file} needs a passphrase; use a key without "
                            f"one, or load it into ssh-agent and set {target.settings}key_file to null")
    except paramiko.AuthenticationException:
        which = f"key {target.key_file}" if target.key_file else "ssh-agent/default keys"
        error = DeviceError(f"{target.name}: {which} refused for user {target.user}; add the public key to the "
                            f"machine's ~/.ssh/authorized_keys or fix {target.settings}user/key_file")
    except TimeoutError:
        error = SshTransientError(f"{target.name}: no SSH answer within {timeout:g}s; check the machine is on and "
                                  f"reachable and {target.settings}host/port are right")
    except paramiko.ssh_exception.NoValidConnectionsError:
        error = SshTransientError(f"{target.name}: connection refused; check the machine is on, sshd runs there "
                                  f"and {target.settings}host/port are right")
    except (OSError, paramiko.SSHException, EOFError) as err:
        error = SshTransientError(f"{target.name}: cannot connect ({one_line(err)}); check the machine is on, "
                                  f"sshd runs there and {target.settings}host/port are right")
    client.close()
    raise error
