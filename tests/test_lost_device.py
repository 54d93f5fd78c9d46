"""A device lost mid-search: the search stops with the reason, and a resume (given only the masked key path)
runs the failed trials again on the device once it is back. A real sshd on 127.0.0.1, stopped and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli import cli_args, cli_env, read_trials, run_cli
from tests.sshd import _wait_for_port, find_sshd, running_sshd

pytestmark = pytest.mark.skipif(find_sshd() is None, reason="sshd not installed (apt-get install openssh-server)")


def test_a_lost_device_stops_the_search_and_its_failed_trials_run_again_on_resume(tmp_path: Path) -> None:
    with running_sshd(tmp_path) as server:
        device = ["device=ssh", f"device.host={server.host}", f"device.port={server.port}",
                  f"device.user={server.user}", f"device.known_hosts={server.known_hosts}",
                  f"device.python={sys.executable}", f"device.remote_dir={tmp_path / 'remote'}", "device.retries=0"]
        run_dir = tmp_path / "run"
        args = cli_args(tmp_path, "strategy=random", "search.max_trials=4", "search.stop_after_failures=2",
                        f"device.key_file={server.user_key}", *device)
        search = subprocess.Popen(args, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        sshd_root = server.log_file.parent
        deadline = time.monotonic() + 300
        while len(read_trials(tmp_path)) < 1 and search.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int((sshd_root / "sshd.pid").read_text()), signal.SIGTERM)  # the device goes away after trial 1
        _, stderr = search.communicate(timeout=600)
        assert search.returncode == 2, stderr[-3000:]
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "2 trials in a row failed" in lines[0] and "search.resume=" in lines[0], stderr
        assert [t["status"] for t in read_trials(tmp_path)] == ["succeeded", "failed", "failed"]

        with open(sshd_root / "sshd.log", "ab") as log:  # the device is back, same port and keys
            back = subprocess.Popen([find_sshd(), "-D", "-e", "-f", str(sshd_root / "sshd_config")],
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(server.port, back, sshd_root / "sshd.log")
            # The key path was masked in the run's config: the resume asks for it by name, and for nothing else.
            asked = run_cli(tmp_path, f"search.resume={run_dir}")
            assert asked.returncode == 2 and "device.key_file=" in asked.stderr, asked.stderr[-3000:]
            resumed = run_cli(tmp_path, f"search.resume={run_dir}", f"device.key_file={server.user_key}")
        finally:
            back.terminate()
            back.wait(timeout=10)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert [(t["trial"], t["status"]) for t in trials] == [(1, "succeeded"), (2, "succeeded"), (3, "succeeded"),
                                                           (4, "succeeded")]
    assert "run again" in resumed.stdout
    failed = [json.loads(line) for line in (run_dir / "trials.jsonl.rerun-1").read_text().splitlines()]
    assert [t["arch"] for t in failed] == [t["arch"] for t in trials[1:3]]  # the same architectures, run again
