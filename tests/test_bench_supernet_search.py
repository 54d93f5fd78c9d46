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
