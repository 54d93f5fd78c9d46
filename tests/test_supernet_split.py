"""Few-shot sub-supernets (`supernet.split`): each trains only its own value's paths, starting from the one-shot
supernet, scores the architectures it owns, and a folder trained for another split is refused in one line."""

from __future__ import annotations

import random

import pytest
import torch

from evaluators.supernet_split import SplitSupernet, check_split, split_values, train_split
from evaluators.supernet_train import SupernetModule, train_supernet
from mnas_core.errors import ConfigError
from search_spaces.space import SpaceConfig
from search_spaces.supernet import Supernet
from tests.cli import read_trials, run_cli
from tests.test_supernet import TINY
from tests.test_supernet_search import ENV, FAST_SUPERNET
from tests.test_supernet_search import TINY as TINY_CLI

QUICK = {"epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1}


def test_every_path_of_a_sub_supernet_keeps_its_pinned_decision():
    net = Supernet(SpaceConfig(**TINY))
    for sampling in ("fair", "uniform", "sandwich"):
        for seed in range(20):
            module = SupernetModule(net, 5, sampling=sampling, distill=True, fixed={"block2/kernel": 3}, seed=seed)
            paths = module.step_paths()
            assert all(net.decisions_of(path.arch)["block2/kernel"] == 3 for path in paths), sampling
    free = {net.decisions_of(SupernetModule(net, 5, warmup=0, seed=seed).step_paths()[0].arch)["block2/kernel"]
            for seed in range(20)}
    assert free == {3, 5}  # unpinned and cold, both kernels are trained (pinned, even the warm-up kept 3)


def test_split_settings_are_one_line_each():
    config = SpaceConfig(**TINY)
    check_split(None, 0, config)  # no split: split_epochs is not read
    assert split_values(config, "block1/conv_op") == list(config.choices(0)["conv_op"])
    for split, epochs, words in (("conv_op", 2, "blockN/<decision>"), ("block1/colour", 2, "blockN/<decision>"),
                                 ("block9/kernel", 2, "blocks 1 to 3"), ("block1/kernel", 0, "split_epochs")):
        with pytest.raises(ConfigError, match=words) as err:
            check_split(split, epochs, config)
        assert "\n" not in str(err.value)


def test_sub_supernets_start_from_the_one_shot_weights_and_own_their_values(tmp_path):
    from evaluators.data import DigitsDataModule

    config = SpaceConfig(**{**TINY, "num_classes": 10})
    datamodule = DigitsDataModule(resolution=16, batch_size=32)
    base = train_supernet(config, datamodule, tmp_path / "base", **QUICK)
    split = train_split(config, datamodule, tmp_path, base, "block2/kernel", split_epochs=1,
                        limit_train_batches=2, limit_val_batches=1)
    assert isinstance(split, SplitSupernet) and sorted(split.parts) == [3, 5]
    for value, part in split.parts.items():
        assert part.training_info["fixed"] == {"block2/kernel": value}
        assert (tmp_path / "split" / "e1" / f"block2.kernel={value}" / "supernet.pt").is_file()
        assert not torch.equal(part.stem[0].weight, base.stem[0].weight)  # fine-tuned from the base
    rng, images = random.Random(0), torch.randn(2, 3, 16, 16)
    for _ in range(6):
        arch = base.sample(rng)
        owner = split.parts[base.decisions_of(arch)["block2/kernel"]]
        with torch.no_grad():
            torch.testing.assert_close(split.extract(arch).eval()(images), owner.extract(arch).eval()(images))
    again = train_split(config, datamodule, tmp_path, base, "block2/kernel", split_epochs=1)  # reused, not retrained
    assert all(torch.equal(again.parts[v].stem[0].weight, split.parts[v].stem[0].weight) for v in (3, 5))
    with pytest.raises(ConfigError, match="trained with the decisions") as err:
        train_supernet(config, datamodule, tmp_path / "split" / "e1" / "block2.kernel=3", fixed={"block2/kernel": 5})
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_a_supernet_search_with_a_split_scores_every_trial_and_a_bad_split_is_one_line(tmp_path):
    result = run_cli(tmp_path, *TINY_CLI, *FAST_SUPERNET, "strategy=random", f"supernet.dir={tmp_path / 'sn'}",
                     "supernet.split=block1/kernel", "supernet.split_epochs=1", env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = read_trials(tmp_path)
    assert len(trials) == 4 and all(t["status"] == "succeeded" for t in trials)
    assert sorted(p.name for p in (tmp_path / "sn" / "split" / "e1").iterdir()) == ["block1.kernel=3",
                                                                                     "block1.kernel=5"]
    (tmp_path / "bad").mkdir()
    bad = run_cli(tmp_path / "bad", *TINY_CLI, *FAST_SUPERNET, "supernet.split=block1/colour", env=ENV, timeout=120)
    assert bad.returncode == 2, bad.stderr[-2000:]
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "supernet.split must be" in lines[0], bad.stderr[-2000:]
