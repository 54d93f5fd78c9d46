"""A real OpenSSH server on 127.0.0.1 for tests: throwaway host/user keys, key-only login, stopped after use.

    with running_sshd(tmp_path) as server:
        SshDevice(server.host, port=server.port, user=server.user, key_file=server.user_key,
                  known_hosts=server.known_hosts, python=sys.executable)

The pytest fixture ``sshd_server`` skips (with the reason) only when no sshd binary is installed.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SshdServer:
    host: str
    port: int
    user: str
    user_key: Path  # authorized private key
    other_key: Path  # a valid key the server does not accept
    known_hosts: Path  # holds this server's host key
    empty_known_hosts: Path  # knows no host at all
    log_file: Path


def find_sshd() -> str | None:
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("sshd")


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited ({proc.returncode}): {log_file.read_text()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on port {port} within {START_TIMEOUT_S}s")


@contextmanager
def running_sshd(workdir: Path, sshd: str | None = None, env: dict[str, str] | None = None
                 ) -> Iterator[SshdServer]:
    """Start sshd on a free loopback port with fresh keys under ``workdir``; stop it on exit.

    ``env`` is set in every session (sshd's SetEnv), e.g. ``{"HOME": ...}`` to give the "remote" its own home."""
    sshd = sshd or find_sshd()
    if sshd is None:
        raise FileNotFoundError("no sshd binary; apt-get install -y openssh-server")
    root = Path(workdir) / "sshd"
    root.mkdir(parents=True, exist_ok=True)
    host_key, user_key, other_key = root / "host_ed25519", root / "user_ed25519", root / "other_ed25519"
    for key in (host_key, user_key, other_key):
        _keygen(key)
    (root / "authorized_keys").write_text(user_key.with_suffix(".pub").read_text())
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir sshd insists on
    user = getpass.getuser()
    port = _free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {host_key}",
        f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"AllowUsers {user}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "MaxStartups 20:30:60",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        *(f"SetEnv {name}={value}" for name, value in (env or {}).items()),
        "",
    ]))
    known_hosts = root / "known_hosts"
    key_type, key_blob = host_key.with_suffix(".pub").read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_blob}\n")
    empty_known_hosts = root / "empty_known_hosts"
    empty_known_hosts.write_text("")
    log_file = root / "sshd.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, log_file)
        yield SshdServer("127.0.0.1", port, user, user_key, other_key, known_hosts, empty_known_hosts, log_file)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    sshd = find_sshd()
    if sshd is None:
        pytest.skip("OpenSSH server not installed (no /usr/sbin/sshd); apt-get install -y openssh-server")
    with running_sshd(tmp_path_factory.mktemp("sshd"), sshd) as server:
        yield server
