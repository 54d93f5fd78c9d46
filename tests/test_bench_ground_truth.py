"""bench/ground_truth.py's bookkeeping: the recipe is the preset's, the table's architectures are fixed, workers
share jobs without running one twice, a torn row is ignored; and the supernet bench's fidelity figures."""

from __future__ import annotations

import multiprocessing
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
from bench.supernet_fashion import SAMPLED, fidelity, read_truth, sampled_archs

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


def _claim_and_report(claims: str, key: str, queue, hold_s: float) -> None:
    import time

    held = claim(Path(claims), key)
    queue.put(held is not None)
    time.sleep(hold_s)


def _other_worker(claims: Path, key: str, hold_s: float = 0.0) -> tuple[bool, multiprocessing.Process]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=_claim_and_report, args=(str(claims), key, queue, hold_s))
    worker.start()
    return queue.get(timeout=60), worker


def test_a_job_is_claimed_once_among_live_workers_and_freed_when_its_worker_dies(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    held = claim(claims, "arch#seed0")
    assert held is not None
    taken, worker = _other_worker(claims, "arch#seed0")
    worker.join(60)
    assert taken is False  # this live process holds it
    held.close()
    taken, worker = _other_worker(claims, "arch#seed0", hold_s=120)
    assert taken is True
    assert claim(claims, "arch#seed0") is None  # the other worker holds it now
    worker.kill()  # SIGKILL: no clean-up runs
    worker.join(60)
    assert claim(claims, "arch#seed0") is not None


def test_a_torn_last_row_is_ignored_and_later_rows_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    append_row(path, {"arch": "a", "seed": 0, "accuracy": 0.8})
    with path.open("a") as f:
        f.write('{"arch": "b", "seed": 0, "accur')  # a kill mid-write
    assert list(read_rows(path)) == ["a#seed0"]
    append_row(path, {"arch": "b", "seed": 1, "accuracy": 0.7})
    assert list(read_rows(path)) == ["a#seed0", "b#seed1"]
    assert path.read_text().splitlines()[1] == '{"arch": "b", "seed": 0, "accur'  # the fragment alone on its line


def test_fidelity_counts_the_shared_top_and_the_rank_agreement() -> None:
    truth = [0.1, 0.2, 0.3, 0.4, 0.5]
    same = fidelity(truth, truth, top=2)
    assert same["tau"] == pytest.approx(1.0) and same["top_overlap"] == 2
    reversed_ = fidelity(truth[::-1], truth, top=2)
    assert reversed_["tau"] == pytest.approx(-1.0) and reversed_["top_overlap"] == 0
    # right about the best three, wrong about the rest: tau among the truth's best three is 1, over all it is not
    head_right = fidelity([0.5, 0.4, 0.3, 0.4, 0.5], truth, top=2, head=3)
    assert head_right["tau_head"] == pytest.approx(1.0) and head_right["tau"] < 0.5


def test_the_judged_architectures_are_the_shipped_tables_sampled_ones_decoded_from_their_samples(tmp_path) -> None:
    table = ROOT / "bench" / "results" / "ground_truth" / "fashion_mnist.csv"
    truth = read_truth(table)
    archs = sampled_archs(truth, space_config(28))
    assert sorted(a.key for a in archs) == sorted(k for k, v in truth.items() if v["family"] in SAMPLED)
    assert len(archs) == 52  # 40 random + 12 latency_spread, whatever latency table this machine holds
    lines = table.read_text().splitlines()
    first = lines[1].split(",", 1)
    (tmp_path / "other.csv").write_text("\n".join([lines[0], first[0] + "x," + first[1]]) + "\n")
    with pytest.raises(SystemExit, match="decodes to another architecture"):
        sampled_archs(read_truth(tmp_path / "other.csv"), space_config(28))
