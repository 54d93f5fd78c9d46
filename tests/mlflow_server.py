"""A real MLflow tracking server on 127.0.0.1 for tests: SQLite backend and proxied artifacts in a temp folder.

    with mlflow_server(tmp_path) as url:      # e.g. http://127.0.0.1:41237
        MlflowTracker(tracking_uri=url, ...)

Starting takes ~10 s on 2 busy cores, so share one per test module:

    @pytest.fixture(scope="module")
    def mlflow_url(tmp_path_factory):
        with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
            yield url
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """The server forks uvicorn workers into its own session; end that whole process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
    try:  # workers left behind after the parent exited
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def mlflow_server(folder: str | Path, port: int | None = None) -> Iterator[str]:
    """Start `mlflow server` on a free loopback port, wait until it answers, yield its URL, stop it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder.resolve() / 'db.sqlite'}",
        "--serve-artifacts", "--artifacts-destination", str(folder.resolve() / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    # No background job runner (a handful of huey worker processes we do not need).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = folder / "server.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=folder, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(f"{url}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mlflow server did not start on {url} (exit {proc.poll()}):\n{tail}")
            time.sleep(0.3)
        yield url
    finally:
        _stop(proc)
