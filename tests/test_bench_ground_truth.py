"""bench/ground_truth.py's bookkeeping: the recipe is the preset's, the table's architectures are fixed, workers
share jobs without running one twice, a torn row is ignored; and the supernet bench's fidelity figures."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.ground_truth import (
    REFERENCE_FAMILIES,
    append_row,
    architectures,
    claim,
    read_rows,
    recipe,
    recipe_hash,
    space_config,
)
from bench.supernet_fashion import fidelity

ROOT = Path(__file__).resolve().parents[1]


def test_the_recipe_is_the_fashion_preset_and_its_hash_follows_what_decides_accuracy() -> None:
    settings = recipe()
    preset = OmegaConf.load(ROOT / "conf" / "experiment" / "fashion.yaml")
    assert settings["data"]["train_subset"] == preset.data.train_subset
    assert settings["train"]["epochs"] == preset.train.epochs
    moved = {**settings, "data": {**settings["data"], "root": "/elsewhere", "num_workers": 4}}
    longer = {**settings, "train": {**settings["train"], "epochs": settings["train"]["epochs"] + 1}}
    assert recipe_hash(moved) == recipe_hash(settings) != recipe_hash(longer)


def test_the_architectures_are_the_same_every_run_with_every_reference() -> None:
    config = space_config(28)
    first, again = architectures(config, 5, 0), architectures(config, 5, 0)
    assert [e["arch"].key for e in first] == [e["arch"].key for e in again]
    families = [e["family"] for e in first]
    assert families[:5] == ["random"] * 5 and tuple(families[5:]) == REFERENCE_FAMILIES
    assert all(config.arch_from_sample(e["sample"]).key == e["arch"].key for e in first[:5])
    widths = [e["arch"].blocks[-1].out_filters for e in first if e["family"].startswith("mobilenet_v2")]
    assert widths == sorted(widths) and len(set(widths)) == 5


def _try_claim(claims: str, key: str, queue) -> None:
    queue.put(claim(Path(claims), key))


def test_a_job_is_claimed_once_among_live_workers_and_taken_over_from_a_dead_one(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    assert claim(claims, "arch#seed0")
    queue = multiprocessing.get_context("spawn").Queue()
    worker = multiprocessing.get_context("spawn").Process(target=_try_claim, args=(str(claims), "arch#seed0", queue))
    worker.start()
    worker.join(60)
    assert queue.get(timeout=5) is False  # this (live) process holds it
    (held,) = claims.iterdir()
    held.write_text(str(worker.pid))  # as if that, now dead, worker had claimed it
    assert not _alive(worker.pid)
    assert claim(claims, "arch#seed0") and held.read_text() == str(os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_torn_last_row_is_ignored_and_later_rows_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    append_row(path, {"arch": "a", "seed": 0, "accuracy": 0.8})
    with path.open("a") as f:
        f.write('{"arch": "b", "seed": 0, "accur')  # a kill mid-write
    assert list(read_rows(path)) == ["a#seed0"]
    path.write_text(path.read_text().rsplit("\n", 1)[0] + "\n")  # what a resume would keep
    append_row(path, {"arch": "b", "seed": 1, "accuracy": 0.7})
    assert [json.loads(line)["arch"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_fidelity_counts_the_shared_top_and_the_rank_agreement() -> None:
    truth = [0.1, 0.2, 0.3, 0.4, 0.5]
    same = fidelity(truth, truth, top=2)
    assert same["tau"] == pytest.approx(1.0) and same["top_overlap"] == 2
    reversed_ = fidelity(truth[::-1], truth, top=2)
    assert reversed_["tau"] == pytest.approx(-1.0) and reversed_["top_overlap"] == 0
