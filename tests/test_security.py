"""Secrets stay out of every log; architecture files are data; remote access checks host keys."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest

from mnas_core.errors import ArchitectureError
from search_spaces import ArchSpec
from tests.cli import read_trials, run_cli
from tests.sshd import find_sshd, running_sshd

TOKEN = "tok-3f9a27c1e5d84b06"


def every_text(*roots: Path) -> str:
    """All bytes under the given folders, decoded loosely (SQLite stores, logs, artifacts)."""
    chunks = []
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and ".hydra" not in path.parts:  # .hydra/ is the user's own config record
                chunks.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


@pytest.mark.skipif(find_sshd() is None, reason="sshd not installed (apt-get install openssh-server)")
def test_keys_and_tokens_never_reach_mlflow_the_console_or_nni_logs(tmp_path):
    with running_sshd(tmp_path) as server:
        db = tmp_path / "mlflow.db"
        result = run_cli(
            tmp_path, "strategy=random", "search.max_trials=1", "device=ssh", f"device.host={server.host}",
            f"device.port={server.port}", f"device.user={server.user}", f"device.key_file={server.user_key}",
            f"device.known_hosts={server.known_hosts}", f"device.python={sys.executable}",
            f"device.remote_dir={tmp_path / 'remote'}", "device.runs=5", "device.warmup=2",
            "tracking=mlflow", f"tracking.tracking_uri=sqlite:///{db}", f"+tracking_token={TOKEN}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert read_trials(tmp_path)[0]["status"] == "succeeded"
        key_lines = [line for line in server.user_key.read_text().splitlines() if "PRIVATE KEY" not in line]
        logged = "\n".join([result.stdout, result.stderr,
                            every_text(tmp_path / "run", db, tmp_path / "mlartifacts", Path.home() / "nni-experiments")])
        assert TOKEN not in logged
        for line in key_lines:
            assert line not in logged
        assert str(server.user_key) not in every_text(db, tmp_path / "mlartifacts")  # key paths are masked too


def test_architecture_files_are_parsed_as_json_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    hostile = tmp_path / "arch.json"
    hostile.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ArchitectureError):
        ArchSpec.load(hostile)
    assert not marker.exists()
