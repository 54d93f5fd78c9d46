"""A full disk never loses a finished trial: real small filesystems (tmpfs, mounted in a private mount namespace)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import FAST

REPO = Path(__file__).resolve().parents[1]


def namespace_prefix() -> list[str] | None:
    """`unshare` arguments that let a script mount a tmpfs of its own (as root, or in a user namespace)."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        probe = subprocess.run([*prefix, "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"],
                               capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return prefix
    return None


PREFIX = namespace_prefix()
pytestmark = pytest.mark.skipif(PREFIX is None, reason="cannot mount a tmpfs here (no unshare, or not allowed)")


def search_command(tmp_path: Path, run_dir: str, *overrides: str) -> str:
    """The CLI as one shell line; `RUN` in it is replaced by the caller (shlex would quote a `$DISK`)."""
    args = [sys.executable, "-m", "mnas_nni", *FAST, f"latency.cache_path={tmp_path / 'latency.sqlite'}",
            f"latency.lock_dir={tmp_path / 'locks'}", f"hydra.run.dir={run_dir}", *overrides]
    return shlex.join(args)


def run_in_namespace(tmp_path: Path, script: str) -> subprocess.CompletedProcess:
    """`script` in bash with `$DISK` a fresh 8 MB tmpfs; only this script's processes see it."""
    full = f"set -u\nDISK={tmp_path / 'disk'}\nmkdir -p $DISK\nmount -t tmpfs -o size=8m tmpfs $DISK\n{script}"
    return subprocess.run([*PREFIX, "bash", "-c", full], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"},
                          check=False)


def test_a_disk_full_at_start_is_one_line(tmp_path: Path) -> None:
    search = search_command(tmp_path, "RUN", "strategy=random", "search.max_trials=1").replace("RUN", "$DISK/run")
    result = run_in_namespace(tmp_path, f"""
        dd if=/dev/zero of=$DISK/filler bs=64k 2>/dev/null
        {search}
        echo "rc=$?"
    """)
    assert "rc=2" in result.stdout, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is full" in lines[0] and "MB free" in lines[0], result.stderr[-3000:]


def test_a_disk_that_fills_mid_search_stops_it_and_a_resume_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    first = search_command(tmp_path, "RUN", "strategy=random", "search.max_trials=3",
                           "train.limit_train_batches=30").replace("RUN", "$DISK/run")
    resume = search_command(tmp_path, "RUN", "search.resume=RUN", "train.limit_train_batches=30").replace("RUN", "$DISK/run")
    result = run_in_namespace(tmp_path, f"""
        {first} > {out}/first.out 2> {out}/first.err &
        pid=$!
        # NNI's first checkpoint is written before trial 1 trains: fill the disk then.
        until ls $DISK/run/nni/*/checkpoint/state.ckpt.torch >/dev/null 2>&1 || ! kill -0 $pid 2>/dev/null; do
            sleep 0.02
        done
        dd if=/dev/zero of=$DISK/filler bs=64k 2>/dev/null
        wait $pid; echo $? > {out}/first.rc
        cp $DISK/run/trials.jsonl {out}/stopped.jsonl
        ls -A $DISK/run $DISK/run/nni/*/checkpoint > {out}/stopped.ls
        rm $DISK/filler
        {resume} > {out}/resume.out 2> {out}/resume.err; echo $? > {out}/resume.rc
        cp $DISK/run/trials.jsonl {out}/resumed.jsonl
    """)
    assert (out / "first.rc").is_file(), result.stderr[-3000:]
    first_err = (out / "first.err").read_text()
    assert (out / "first.rc").read_text().strip() == "2", first_err[-3000:]
    lines = [line for line in first_err.splitlines() if line.strip()]
    assert len(lines) == 1, first_err[-3000:]
    assert "trials.jsonl" in lines[0] and "MB free" in lines[0] and "search.resume=" in lines[0], lines[0]
    stopped = [json.loads(line) for line in (out / "stopped.jsonl").read_text().splitlines()]
    assert [(t["trial"], t["status"]) for t in stopped] == [(1, "succeeded")]  # trial 1's record was saved
    assert ".tmp" not in (out / "stopped.ls").read_text()  # nothing half-written left behind

    assert (out / "resume.rc").read_text().strip() == "0", (out / "resume.err").read_text()[-3000:]
    resumed = [json.loads(line) for line in (out / "resumed.jsonl").read_text().splitlines()]
    assert [t["trial"] for t in resumed] == [1, 2, 3]
    assert resumed[0] == stopped[0]  # kept, not run again


def _write_many(path: str, marker: int) -> None:
    from mnas_nni.run.disk_space import write_file_atomically

    for _ in range(200):
        write_file_atomically(Path(path), f"{marker}\n".encode() * 1000)


def test_two_processes_writing_one_file_atomically_both_succeed_and_leave_it_whole(tmp_path: Path) -> None:
    """Two resumes of one run rewrite the same files (Hydra's masked copies) at once: each writer has its own
    temporary file, so neither finds its rename gone and the file is always one writer's whole text."""
    import multiprocessing

    target = tmp_path / "config.yaml"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(str(target), marker)) for marker in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]
    assert set(target.read_text().splitlines()) in ({"1"}, {"2"}) and len(target.read_text()) == 2000
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"], "no temporary file left"
