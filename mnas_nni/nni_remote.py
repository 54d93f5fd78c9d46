"""Check the machines of `search.machines` over SSH before a remote search, and hand NNI what it can use.

`prepare_remote` (the app calls it as `mnas_nni.nni_adapter.prepare_remote`) returns the remote arguments of
`nni_adapter.experiment_config`. Most of this module is our own preflight (key, host key, python, nni
version, the way back to the manager); it also holds the two NNI workarounds of the remote training service,
each commented with the NNI behaviour it works around: the python shim that skips NNI's
`pip install nni --upgrade`, and the one-file trial code directory.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import posixpath
import re
import shlex
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnas_core.errors import ConfigError, DeviceError
from mnas_core.ssh import SshSession, SshTarget

REMOTE_MACHINE_KEYS = ("host", "port", "user", "ssh_key_file", "python_path", "known_hosts", "strict_host_key")
REMOTE_SSH_TIMEOUT_S = 10.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_SHELL_SAFE = re.compile(r"[A-Za-z0-9_./+-]+")

# Run on each machine by its python: what NNI's worker and our trials need there, and the way back to us.
_REMOTE_CHECK = """\
import json, os, socket, sys
result = {"executable": sys.executable, "home": os.path.expanduser("~")}
try:
    import nni
    result["nni"] = nni.__version__
    import mnas_nni, mnas_nni.run.records  # noqa: F401 - the trial function lives in mnas_nni.trial
except Exception as err:
    result["import_error"] = (type(err).__name__ + ": " + str(err)).splitlines()[0]
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as err:
    result["manager_error"] = str(err) or type(err).__name__
print(json.dumps(result))
"""

# NNI 3.0's remote worker (nni_node/training_service/remote_v3/worker.js, Worker.start) runs
# `python -m pip install nni --upgrade` on every machine at every experiment start and aborts the start when
# it fails: it reaches out to PyPI from the machine, may change the machine's environment, and costs 8 s
# offline and over a minute where the network drops packets. NNI runs every command through `python` found
# on a PATH that starts with the machine's python_path, so python_path points at a folder whose `python` is
# this shim: it answers that one command and execs the configured interpreter for everything else.
# (Its text is hashed into the shim folder's name, so its first comment still names nni_adapter.py.)
_PYTHON_SHIM = """\
#!/bin/sh
# Written by mnas-nni (mnas_nni/nni_adapter.py, prepare_remote): NNI's remote training service runs this as
# `python`. NNI 3.0 runs `python -m pip install nni --upgrade` at every experiment start; that one command is
# skipped (the environment is managed by its owner). Everything else runs the configured Python.
if [ "$#" -eq 5 ] && [ "$1 $2 $3 $4 $5" = "-m pip install nni --upgrade" ]; then
    echo "mnas-nni: skipped NNI's 'pip install nni --upgrade'"
    exit 0
fi
exec {python} "$@"
"""


def prepare_remote(machines: list[dict] | None, *, nni_manager_ip: str | None, port: int,
                   working_dir: str | Path) -> dict[str, Any]:
    """Check every machine of `search.machines` over SSH before anything is trained, and return the remote
    arguments of `experiment_config`: machines (NNI `RemoteMachineConfig` fields), nni_manager_ip and
    trial_code_directory. Any problem is one `ConfigError`/`DeviceError` line naming the fix.

    Checked per machine: the key logs in (NNI's ssh2 client would otherwise retry or hang with no clear
    message), the host key is in known_hosts (NNI's ssh2 client checks no host key at all: it passes no
    `hostVerifier`, so this check is the only one), the python runs and imports nni (same version as here) and
    mnas_nni, and the machine reaches this one at nni_manager_ip:port (its trial keeper dials back there;
    unset, NNI tells the machines `localhost`).
    """
    if not machines:
        raise ConfigError("search.execution=remote needs search.machines: "
                          "[{host, port, user, ssh_key_file, python_path}]")
    parsed = [_RemoteMachine.from_config(i, m) for i, m in enumerate(machines)]
    if not nni_manager_ip:
        if not all(m.host in _LOOPBACK for m in parsed):
            raise ConfigError("search.nni_manager_ip is not set; set it to this machine's address as the remote "
                              "machines see it (NNI would tell them to connect to localhost)")
        nni_manager_ip = "127.0.0.1"
    paramiko_log = logging.getLogger("paramiko")
    level = paramiko_log.level
    paramiko_log.setLevel(logging.WARNING)  # its INFO lines (connected, authenticated) would reach the console
    try:
        with _listening(port):
            nni_machines = [machine.check(nni_manager_ip, port) for machine in parsed]
    finally:
        paramiko_log.setLevel(level)
    # NNI tars the trial code directory (default: the working directory, here the repository with its virtual
    # environment, past NNI's 2000-file/300 MB limit) to every machine, and its tarball (common/tarball.js)
    # fails on an empty one. Trials import mnas_nni from the machine's own install: one small file is enough.
    code_dir = Path(working_dir) / "trial_code"
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / "README.txt").write_text("Trial code directory NNI copies to each remote machine; trials import "
                                         "mnas_nni from the machine's own install.\n")
    return {"machines": nni_machines, "nni_manager_ip": nni_manager_ip, "trial_code_directory": str(code_dir)}


@contextlib.contextmanager
def _listening(port: int):
    """Listen on `port` (the manager's, not started yet) so the machines can show they reach it."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("", port))
        except OSError as err:
            raise ConfigError(f"search.port={port} cannot be used on this machine ({err.strerror or err}); "
                              "set search.port to a free port") from None
        server.listen(64)
        yield


@dataclass
class _RemoteMachine:
    index: int
    host: str
    port: int
    user: str
    ssh_key_file: str
    python_path: str | None
    known_hosts: Path
    strict_host_key: bool

    @classmethod
    def from_config(cls, index: int, config: Any) -> _RemoteMachine:
        where = f"search.machines[{index}]"
        if not isinstance(config, dict) or not config.get("host"):
            raise ConfigError(f"{where} must be a mapping with at least host and ssh_key_file, got {config!r}")
        if "password" in config or "ssh_passphrase" in config:  # the value is never echoed
            raise ConfigError(f"{where}: passwords and key passphrases are not supported (NNI shows them in its "
                              "web UI and logs); use ssh_key_file with a key that has no passphrase")
        unknown = sorted(set(config) - set(REMOTE_MACHINE_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; use {', '.join(REMOTE_MACHINE_KEYS)}")
        if not config.get("ssh_key_file"):
            raise ConfigError(f"{where}.ssh_key_file is not set; NNI's remote service logs in with a key file")
        key_file = Path(str(config["ssh_key_file"])).expanduser().resolve()
        if not key_file.is_file():
            raise ConfigError(f"{where}.ssh_key_file {key_file} not found; set it to your private key "
                              "(e.g. ~/.ssh/id_ed25519)")
        try:
            port = int(config.get("port") or 22)
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536:
            raise ConfigError(f"{where}.port must be a TCP port, got {config.get('port')!r}")
        return cls(index=index, host=str(config["host"]), port=port, user=str(config.get("user") or getpass.getuser()),
                   ssh_key_file=str(key_file), python_path=config.get("python_path"),
                   known_hosts=Path(str(config.get("known_hosts") or "~/.ssh/known_hosts")).expanduser(),
                   strict_host_key=bool(config.get("strict_host_key", True)))

    @property
    def name(self) -> str:
        return f"search.machines[{self.index}] ({self.user}@{self.host}:{self.port})"

    def check(self, manager_ip: str, manager_port: int) -> dict[str, Any]:
        """Probe the machine and install the python shim; return its `RemoteMachineConfig` fields."""
        target = SshTarget(name=self.name, host=self.host, port=self.port, user=self.user,
                           key_file=self.ssh_key_file, known_hosts=self.known_hosts,
                           strict_host_key=self.strict_host_key, timeout_s=REMOTE_SSH_TIMEOUT_S,
                           settings=f"search.machines[{self.index}].",
                           timeout_fix="check the machine's load and the network")
        with SshSession(target) as session:
            python = self._python(session)
            info = self._run_check(session, python, manager_ip, manager_port)
            shim_dir = self._install_shim(session, info["home"], info["executable"])
        return {"host": self.host, "port": self.port, "user": self.user, "ssh_key_file": self.ssh_key_file,
                "python_path": shim_dir}

    def _python(self, session) -> str:
        """The machine's interpreter: python_path names it, or NNI-style the folder holding `python`; by
        default this process's own path (the same environment at the same place, e.g. a shared install)."""
        wanted = str(self.python_path or sys.executable)
        fix = (f"set search.machines[{self.index}].python_path to the machine's Python "
               "(with nni and mnas-nni installed)")
        for candidate in (wanted, posixpath.join(wanted, "python"), posixpath.join(wanted, "python3")):
            status, _, _ = session.exec(["test", "-f", candidate, "-a", "-x", candidate])
            if status == 0:
                return candidate
        raise ConfigError(f"{self.name}: no Python at {wanted}; {fix}")

    def _run_check(self, session, python: str, manager_ip: str, manager_port: int) -> dict[str, Any]:
        import nni

        timeout = REMOTE_SSH_TIMEOUT_S / 2
        status, out, err = session.exec([python, "-c", _REMOTE_CHECK, manager_ip, str(manager_port), f"{timeout:g}"],
                                        REMOTE_SSH_TIMEOUT_S * 3)
        try:
            info = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise DeviceError(f"{self.name}: {python} failed (exit {status}): {_last_line(err)}") from None
        if "import_error" in info:
            raise ConfigError(f"{self.name}: {python} cannot import what trials need ({info['import_error']}); "
                              f"install nni=={nni.__version__} and mnas-nni for it or set "
                              f"search.machines[{self.index}].python_path")
        if info.get("nni") != nni.__version__:
            raise ConfigError(f"{self.name}: nni {info.get('nni')} there, {nni.__version__} here; install "
                              f"nni=={nni.__version__} for {python}")
        if "manager_error" in info:
            raise ConfigError(f"{self.name}: the machine cannot reach this one at {manager_ip}:{manager_port} "
                              f"({info['manager_error']}); set search.nni_manager_ip to this machine's address "
                              "as the machine sees it, and let search.port through the firewall")
        return info

    def _install_shim(self, session, home: str, python: str) -> str:
        import hashlib

        script = _PYTHON_SHIM.replace("{python}", shlex.quote(python))
        shim_dir = posixpath.join(home, ".cache", "mnas-nni", "nni-python",
                                  hashlib.sha256(script.encode()).hexdigest()[:12])
        if not _SHELL_SAFE.fullmatch(shim_dir):  # NNI pastes python_path into shell commands unquoted
            raise ConfigError(f"{self.name}: the remote home {home!r} has characters NNI cannot quote; "
                              "use an account whose home path is plain")
        status, _, err = session.exec(["mkdir", "-p", "-m", "700", "--", shim_dir])
        if status != 0:
            raise DeviceError(f"{self.name}: cannot create {shim_dir} ({_last_line(err)})")
        session.upload(script.encode(), posixpath.join(shim_dir, "python"), mode=0o755)
        return shim_dir


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
