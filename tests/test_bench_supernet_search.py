"""bench/supernet_search.py's accounting of two searches (the bench itself runs for hours)."""

from __future__ import annotations

import json

import torch

from bench.supernet_search import DIGITS_TRAIN_IMAGES, passes, winner


def write_trials(run_dir, rows):
    run_dir.mkdir(parents=True)
    (run_dir / "trials.jsonl").write_text("".join(json.dumps({"status": "succeeded", **row}) + "\n" for row in rows))


def test_each_search_is_charged_its_trainings_and_the_supernet_search_its_winner_is_the_best_confirmed(tmp_path):
    write_trials(tmp_path / "multi", [{"trial": 1, "reward": 0.8}, {"trial": 2, "reward": 0.9},
                                      {"trial": 3, "status": "failed", "reward": None}])
    write_trials(tmp_path / "shared", [{"trial": 1, "reward": 0.6, "confirmed_reward": 0.7},
                                       {"trial": 2, "reward": 0.5, "confirmed_reward": 0.8}, {"trial": 3, "reward": 0.9}])
    (tmp_path / "shared" / "supernet").mkdir()
    torch.save({"images_seen": 1000}, tmp_path / "shared" / "supernet" / "supernet.pt")
    assert passes(tmp_path / "multi", supernet=False, proxy_epochs=4, scoring_images=300) == 2 * 4 * DIGITS_TRAIN_IMAGES
    # the supernet's own training + every sample's scoring (a forward counts a third) + the confirmed trainings
    assert passes(tmp_path / "shared", supernet=True, proxy_epochs=4, scoring_images=300) == (
        1000 + 3 * 300 / 3 + 2 * 4 * DIGITS_TRAIN_IMAGES)
    assert winner(tmp_path / "multi", confirmed=False).trial == 2
    assert winner(tmp_path / "shared", confirmed=True).trial == 2  # not trial 3, whose score the supernet gave


def test_a_split_supernet_search_is_charged_its_sub_supernets_too(tmp_path):
    write_trials(tmp_path / "shared", [{"trial": 1, "reward": 0.6, "confirmed_reward": 0.7}])
    for folder, seen in (("supernet", 1000), ("supernet/split/e2/block1.conv_op=0", 200),
                         ("supernet/split/e2/block1.conv_op=1", 300)):
        (tmp_path / "shared" / folder).mkdir(parents=True)
        torch.save({"images_seen": seen}, tmp_path / "shared" / folder / "supernet.pt")
    assert passes(tmp_path / "shared", supernet=True, proxy_epochs=3, scoring_images=30, train_images=100) == (
        1000 + 200 + 300 + 1 * 30 / 3 + 1 * 3 * 100)


def test_fashion_ground_counts_the_table_recipe_and_the_validation_batches_a_score_reads():
    from omegaconf import OmegaConf

    from bench.ground_truth import ROOT, recipe
    from bench.supernet_search import FASHION_VAL_IMAGES, ground

    settings = recipe()
    fashion = ground("fashion_mnist", [])
    assert fashion.overrides == ("+experiment=fashion",)
    assert (fashion.train_images, fashion.proxy_epochs) == (settings["data"]["train_subset"], settings["train"]["epochs"])
    calibration = OmegaConf.load(ROOT / "conf" / "evaluator" / "supernet.yaml").supernet.calibration_batches
    assert fashion.scoring_images == calibration * 64 + FASHION_VAL_IMAGES  # val_batches null: every test image
    fewer = ground("fashion_mnist", ["supernet.val_batches=10", "supernet.calibration_batches=2"])
    assert fewer.scoring_images == 2 * 64 + 10 * 64
    assert ground("digits", []).overrides == () and ground("digits", []).train_images == DIGITS_TRAIN_IMAGES


def test_one_arm_runs_only_its_own_searches_and_leaves_the_comparison_to_a_run_with_both(tmp_path, monkeypatch, capsys):
    import pytest

    import bench.supernet_search as bench

    ran = []
    monkeypatch.setattr(bench, "run_search", lambda name, out, overrides, runs: ran.append((name, overrides)) or
                        {"id": name, "seconds": 1.0})
    monkeypatch.setattr(bench, "build_table", lambda *a: pytest.fail("the multi-trial arm needs no layer table"))
    bench.main(["--data", "fashion_mnist", "--seeds", "0", "1", "--arms", "multi", "--out", str(tmp_path)])
    assert [name for name, _ in ran] == ["multi-s0", "multi-s1"]
    assert "run with both arms for the comparison" in capsys.readouterr().out
    assert not (tmp_path / "summary.json").exists()
    ran.clear()
    monkeypatch.setattr(bench, "build_table", lambda *a: 1.0)
    bench.main(["--data", "fashion_mnist", "--seeds", "0", "--arms", "supernet", "--supernet", "supernet.epochs=8",
                "--out", str(tmp_path)])
    assert [name for name, _ in ran] == ["supernet-s0"]
    assert {"evaluator=supernet", "supernet.epochs=8", "+experiment=fashion"} <= set(ran[0][1])


def test_a_search_another_bench_process_is_running_is_waited_for_not_deleted_and_run_again(tmp_path, monkeypatch):
    import fcntl
    import threading

    import bench.supernet_search as bench

    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: ran.append(a))
    ran, results = [], []
    (tmp_path / "locks").mkdir()
    (tmp_path / "multi-s0").mkdir()
    (tmp_path / "multi-s0" / "trials.jsonl").write_text("{}\n")  # the other process's search, still running
    with open(tmp_path / "locks" / "bench-multi-s0.lock", "a+") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: results.append(
            bench.run_search("multi-s0", tmp_path, [], tmp_path / "runs.jsonl")))
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive() and (tmp_path / "multi-s0" / "trials.jsonl").exists()
        (tmp_path / "runs.jsonl").write_text(json.dumps({"id": "multi-s0", "seconds": 7.0}) + "\n")
    waiter.join(5.0)
    assert results == [{"id": "multi-s0", "seconds": 7.0}] and not ran
    assert (tmp_path / "multi-s0" / "trials.jsonl").exists()
