"""A run directory's life: one owner at a time, a resume keeps the run's budget, a torn record is set aside."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from tests.cli import cli_args, cli_env, read_trials, run_cli

ENV = cli_env()


def test_two_resumes_at_once_run_each_trial_once_and_a_killed_owner_blocks_nothing(tmp_path: Path) -> None:
    first = run_cli(tmp_path, "strategy=random", "search.max_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "run"
    resumes = [subprocess.Popen(cli_args(tmp_path, "strategy=random", "search.max_trials=3",
                                         f"search.resume={run_dir}"),
                                cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in resumes]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [err[-2000:] for _, _, err in results]
    refused = next(err for code, _, err in results if code == 2)
    lines = [line for line in refused.splitlines() if line.strip()]
    assert len(lines) == 1 and "in use by pid" in lines[0], refused[-2000:]
    trials = read_trials(tmp_path)
    assert [t["trial"] for t in trials] == [1, 2, 3], trials

    # A holder killed with SIGKILL leaves the lock file, not the lock.
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import time; from pathlib import Path; from mnas_nni.run.lock import own_run_dir;"
                                f" own_run_dir(Path({str(run_dir)!r})); print('held', flush=True); time.sleep(120)")],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    blocked = run_cli(tmp_path, "strategy=random", "search.max_trials=3", f"search.resume={run_dir}")
    assert blocked.returncode == 2 and f"pid {holder.pid}" in blocked.stderr, blocked.stderr[-2000:]
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    again = run_cli(tmp_path, "strategy=random", "search.max_trials=3", f"search.resume={run_dir}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(read_trials(tmp_path)) == 3


def test_a_resume_keeps_the_runs_budget_unless_given_and_a_torn_record_is_set_aside(tmp_path: Path) -> None:
    first = run_cli(tmp_path, "strategy=random", "search.max_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "run"
    config = run_dir / "config.resolved.yaml"

    # No search.max_trials on the resume command: the run's own budget of 1, already spent.
    same = subprocess.run(cli_args(tmp_path, f"search.resume={run_dir}"), cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=600, check=False)
    assert same.returncode == 0, same.stderr[-3000:]
    assert len(read_trials(tmp_path)) == 1
    assert yaml.safe_load(config.read_text())["search"]["max_trials"] == 1

    # A kill mid-write left half a record; the grown resume sets it aside and appends whole records.
    fragment = '{"trial": 2, "status": "SUCCEEDED", "arch": {"blo'
    with (run_dir / "trials.jsonl").open("a") as f:
        f.write(fragment)
    grown = run_cli(tmp_path, f"search.resume={run_dir}", "search.max_trials=3")
    assert grown.returncode == 0, grown.stderr[-3000:]
    output = grown.stdout + grown.stderr
    assert "does not match the current config" not in output, output[-3000:]
    # Piped (not a terminal): one plain progress line per finished trial, and the search's answer for T.
    progress = [line for line in grown.stdout.splitlines() if line.startswith("trial ") and " reward " in line]
    assert [line.split()[1] for line in progress] == ["2/3", "3/3"] and "ETA" in progress[-1], grown.stdout[-3000:]
    assert any(line.startswith("answer for T = ") for line in grown.stdout.splitlines())
    side = run_dir / "trials.jsonl.torn-1"
    assert side.read_text() == fragment and str(side) in output
    frame = pd.read_json(run_dir / "trials.jsonl", lines=True)
    assert frame["trial"].tolist() == [1, 2, 3]
    assert yaml.safe_load(config.read_text())["search"]["max_trials"] == 3


def test_failures_in_a_row_for_one_reason_stop_the_search_after_a_success_too() -> None:
    from mnas_nni.run.observers import FailureGuard
    from mnas_nni.run.records import FAILED, SUCCEEDED, TrialRecord

    stops: list[str] = []
    guard = FailureGuard(3, stops.append)
    lost = "latency device lost: [Errno 111] Connection refused (port 2222)"
    statuses = [SUCCEEDED, FAILED, FAILED, SUCCEEDED, FAILED, FAILED]
    for number, status in enumerate(statuses, 1):
        guard.on_trial_end(TrialRecord(trial=number, status=status, error=lost if status == FAILED else None))
    assert stops == []  # a success in between starts the count again
    guard.on_trial_end(TrialRecord(trial=7, status=FAILED, error=lost.replace("2222", "2223")))
    assert len(stops) == 1 and stops[0].startswith("3 trials in a row failed") and "Connection refused" in stops[0]
    for number in range(8, 12):  # after a success, out-of-memory depends on the architecture: no stop
        guard.on_trial_end(TrialRecord(trial=number, status=FAILED, error="CUDA out of memory (tried 2.00 GiB)"))
    assert len(stops) == 1
    mixed = FailureGuard(2, stops.append)
    for number, error in enumerate(["non-finite loss", "out of memory"], 1):
        mixed.on_trial_end(TrialRecord(trial=number, status=FAILED, error=error))
    assert len(stops) == 1


def test_messages_name_the_thing_to_fix(tmp_path: Path) -> None:
    import shlex
    import shutil
    import sqlite3

    import pytest
    import torch

    from evaluators.data import ImageNetDataModule
    from evaluators.latency.cache import LatencyCache
    from evaluators.latency.result import summarize
    from mnas_core.errors import ConfigError, DatasetNotFoundError
    from mnas_nni.tracking import ui_link
    from tests.imagenet_folder import WNIDS, write_imagenet_folder

    store = tmp_path / "my runs" / "mlflow.db"
    command, _ = ui_link(f"sqlite:///{store}", "1")
    assert shlex.split(command)[5] == f"sqlite:///{store}"  # a folder with a space pastes back whole

    root = write_imagenet_folder(tmp_path / "one class", train_per_class=2, val_per_class=1)
    for wnid in WNIDS[1:]:
        shutil.rmtree(root / "train" / wnid)
    with pytest.raises(DatasetNotFoundError, match="one class folder .*data.root"):
        ImageNetDataModule(root, resolution=32, holdout=1, num_workers=0)

    damaged = tmp_path / "latency.sqlite"
    damaged.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=f"{damaged}.*latency.cache_path"):
        LatencyCache(damaged)

    # A valid header over damaged pages: found when the cache is opened (at startup), not in every trial.
    pages = tmp_path / "pages.sqlite"
    cache = LatencyCache(pages)
    for index in range(300):
        cache.put(f"arch{index}", "local", "onnxruntime", (1, 3, 32, 32), summarize([0.1, 0.2]))
    with sqlite3.connect(pages) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(pages.read_bytes())
    data[4096 * 2:4096 * 4] = b"\xde\xad" * 4096  # pages 3-4: the table's b-tree, the header left whole
    pages.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=f"{pages}.*damaged.*delete"):
        LatencyCache(pages)

    # A supernet training's last.ckpt cut short: one line naming the file, before any trial.
    from evaluators.supernet_train import LAST_NAME, check_last_checkpoint

    torch.save({"state_dict": {"w": torch.zeros(1000)}}, tmp_path / LAST_NAME)
    whole = (tmp_path / LAST_NAME).read_bytes()
    (tmp_path / LAST_NAME).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match=f"{tmp_path / LAST_NAME} is damaged.*delete it"):
        check_last_checkpoint(tmp_path)


def test_hydra_copies_hold_no_secret_and_a_password_in_the_tracking_uri_reaches_the_server(tmp_path: Path) -> None:
    import http.server
    import threading

    from mnas_nni.tracking import check_reachable

    result = run_cli(tmp_path, "strategy=random", "search.max_trials=1",
                     "search.machines=[{host:h,user:u,ssh_key_file:/keys/SECRETKEY,password:SECRETPW}]")
    assert result.returncode == 0, result.stderr[-3000:]
    hydra_dir = tmp_path / "run" / ".hydra"
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        text = (hydra_dir / name).read_text()
        assert "SECRETPW" not in text and "SECRETKEY" not in text, (name, text[:2000])
    assert "host: h" in (hydra_dir / "config.yaml").read_text()  # the rest stays as it was

    seen: list[str | None] = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None: ...

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        check_reachable(f"http://alice:pa%40ss@127.0.0.1:{server.server_port}")
    finally:
        server.server_close()
    assert seen == ["Basic YWxpY2U6cGFAc3M="]  # alice:pa@ss


def test_a_bad_job_of_a_sweep_does_not_stop_the_good_one(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = cli_args(tmp_path, "reward.target_ms=-1,0.2", "strategy=random", "search.max_trials=1",
                    f"hydra.sweep.dir={sweep}")
    result = subprocess.run([*args[:3], "--multirun", *args[3:]], cwd=tmp_path, env=ENV, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "target_ms" in errors[0], result.stderr[-3000:]
    assert "1 job(s) of the sweep failed (job 0)" in result.stderr
    assert not (sweep / "0" / "trials.jsonl").exists()
    assert len((sweep / "1" / "trials.jsonl").read_text().splitlines()) == 1
