"""bench/supernet.py's two diagnostics: supernet-to-supernet agreement and the fine-tuned (hybrid) score."""

from __future__ import annotations

import json
import random

import pytest
import torch

from bench.supernet import agreement, finetuned_score
from bench.supernet_fashion import pooled_likelihood


class Arch:
    def __init__(self, key: str):
        self.key = key


def write_scores(path, accuracies):
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"id": k, "accuracy": v}) + "\n" for k, v in accuracies.items()))


def test_agreement_is_tau_against_every_other_complete_supernet(tmp_path):
    archs = [Arch(k) for k in "abcd"]
    mine = {k: {"id": k, "accuracy": v} for k, v in zip("abcd", (0.1, 0.2, 0.3, 0.4))}
    write_scores(tmp_path / "same" / "supernet_scores.jsonl", {"a": 0.5, "b": 0.6, "c": 0.7, "d": 0.8})
    write_scores(tmp_path / "reversed" / "supernet_scores.jsonl", {"a": 0.8, "b": 0.7, "c": 0.6, "d": 0.5})
    write_scores(tmp_path / "partial" / "supernet_scores.jsonl", {"a": 0.8})  # not every arch scored: skipped
    write_scores(tmp_path / "mine" / "supernet_scores.jsonl", {"a": 0.4, "b": 0.3, "c": 0.2, "d": 0.1})
    result = agreement(archs, mine, tmp_path, tmp_path / "mine" / "supernet_scores.jsonl")
    assert result == pytest.approx({"same": 1.0, "reversed": -1.0})


def test_pooled_likelihood_is_minus_the_mean_loss_of_every_supernet_that_scored_all(tmp_path):
    archs = [Arch(k) for k in "abc"]
    for name, losses in (("one", (1.0, 2.0, 3.0)), ("two", (3.0, 0.0, 1.0)), ("partial", (9.0, 9.0))):
        path = tmp_path / name / "supernet_scores.jsonl"
        path.parent.mkdir()
        path.write_text("".join(json.dumps({"id": k, "loss": v}) + "\n" for k, v in zip("abc", losses)))
    names, pooled = pooled_likelihood(tmp_path, archs)
    assert names == ["one", "two"]  # "partial" lacks c
    assert pooled == pytest.approx([-2.0, -1.0, -2.0])
    assert pooled_likelihood(tmp_path / "none", archs) == ([], [])


def test_a_finetuned_score_trains_a_copy_and_leaves_the_supernet_as_it_was():
    from evaluators.data import DigitsDataModule
    from search_spaces.space import SpaceConfig
    from search_spaces.supernet import Supernet

    config = SpaceConfig(width_mult=0.5, num_classes=10, resolution=32)
    supernet = Supernet(config).eval()
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    arch = supernet.sample(random.Random(3))
    train = {"lr": 0.003, "optimizer": "adam", "label_smoothing": 0.1}
    score = finetuned_score(supernet, arch, DigitsDataModule(resolution=32), train, 3, seed=2)
    assert 0.0 <= score["accuracy"] <= 1.0 and score["train_loss"] > 0
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())
    trained = supernet.extract(arch)
    assert trained.training is False  # the supernet was not switched to training either


def test_the_imagenet_cost_follows_the_preset_as_configured():
    from omegaconf import OmegaConf

    from bench.supernet import IMAGENET_TRAIN_IMAGES, ROOT, imagenet_preset_passes

    preset = OmegaConf.load(ROOT / "conf" / "experiment" / "mnas_imagenet_supernet.yaml")
    one = imagenet_preset_passes(1)
    scoring = (preset.supernet.calibration_batches + preset.supernet.val_batches) * 256  # conf/data/imagenet.yaml
    expected = ((preset.supernet.epochs + preset.search.confirm_top_k * 5) * IMAGENET_TRAIN_IMAGES
                + preset.search.max_trials * scoring / 3)
    assert one["supernet_search"] == pytest.approx(expected) and one["multi_trial"] == 8000 * 5 * IMAGENET_TRAIN_IMAGES
    # a distilled step runs two paths; a few-shot split adds its sub-supernets' epochs
    assert imagenet_preset_passes(2)["supernet_search"] == pytest.approx(expected + preset.supernet.epochs
                                                                         * IMAGENET_TRAIN_IMAGES)
    assert imagenet_preset_passes(1, 8)["supernet_search"] == pytest.approx(expected + 8 * IMAGENET_TRAIN_IMAGES)
