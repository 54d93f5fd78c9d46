"""The weight-sharing supernet: every path runs, `extract` hands a plain MnasNet the exact path weights."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from mnas_core.errors import ArchitectureError, ConfigError
from search_spaces.space import DECISIONS, SpaceConfig
from search_spaces.supernet import Supernet

TINY = {"base_blocks": ("r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k3_s11_e6_i24_o32"),
        "width_mult": 0.5, "stem_filters": 16, "head_filters": 64, "num_classes": 5, "resolution": 16}


def scrambled(supernet: Supernet) -> Supernet:
    """Non-trivial BN statistics and affine terms, so a wrong slice cannot hide behind ones and zeros."""
    generator = torch.Generator().manual_seed(0)
    for module in supernet.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                      (module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2)):
                tensor.data.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return supernet.eval()


@pytest.fixture(scope="module")
def supernet() -> Supernet:
    torch.manual_seed(0)
    return scrambled(Supernet(SpaceConfig(**TINY)))


def test_extract_equals_the_supernet_path_for_50_random_architectures(supernet):
    rng, images = random.Random(0), torch.randn(3, 3, 16, 16)
    seen = set()
    for _ in range(50):
        arch = supernet.sample(rng)
        seen.add(arch.key)
        model = supernet.extract(arch).eval()
        with torch.no_grad():
            expected, got = supernet(images, arch), model(images)
        assert got.abs().max() > 0
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        # the extracted module's state_dict was filled entirely from the supernet: a fresh build differs
    assert len(seen) == 50


def test_extract_fills_every_tensor_of_the_plain_model(supernet):
    arch = supernet.sample(random.Random(3), "largest")
    first, second = supernet.extract(arch).state_dict(), supernet.extract(arch).state_dict()
    assert first.keys() == second.keys()
    for name in first:  # two extractions agree everywhere, so no tensor kept its own random initialisation
        assert torch.equal(first[name], second[name]), name


def test_every_decision_changes_the_output_when_changed_alone(supernet):
    config = supernet.config
    base = supernet.sample(random.Random(0), "largest")  # most layers, so an identity residual exists
    sample = {f"block{i + 1}/{d}": value for i, block in enumerate(base.blocks)
              for d, value in zip(DECISIONS, decision_values(config, block))}
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        reference = supernet(images, base)
        for label, value in sample.items():
            index = int(label.split("/")[0][5:]) - 1
            decision = label.split("/")[1]
            for other in config.choices(index)[decision]:
                if other == value:
                    continue
                arch = config.arch_from_sample({**sample, label: other})
                assert not torch.allclose(supernet(images, arch), reference, atol=1e-6), f"{label}: {value} -> {other}"


def decision_values(config: SpaceConfig, block) -> list:
    word = next(w for w in config.conv_ops if {"conv": ("conv", 1), "dsconv": ("dsconv", 1), "mbconv3": ("mbconv", 3),
                                              "mbconv6": ("mbconv", 6)}[w] == (block.op, block.expand))
    return [word, block.kernel, block.se_ratio, block.skip, block.out_filters, block.repeats]


def test_training_mode_path_runs_and_backpropagates_into_shared_weights(supernet):
    net = Supernet(SpaceConfig(**TINY)).train()
    arch = net.sample(random.Random(1))
    net(torch.randn(4, 3, 16, 16), arch).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.blocks.parameters())


def test_an_architecture_outside_the_space_is_refused(supernet):
    arch = supernet.sample(random.Random(0))
    wider = dataclasses.replace(arch.blocks[0], out_filters=arch.blocks[0].out_filters + 40)
    with pytest.raises(ArchitectureError, match="block1/filters"):
        supernet.extract(dataclasses.replace(arch, blocks=(wider, *arch.blocks[1:])))


def test_checkpoint_round_trip_and_bad_checkpoints(tmp_path, supernet):
    path = supernet.save(tmp_path / "supernet.pt")
    loaded = Supernet.load(path, supernet.config).eval()
    arch, images = supernet.sample(random.Random(5)), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, arch), supernet(images, arch))
    with pytest.raises(ConfigError, match="not found") as missing:
        Supernet.load(tmp_path / "nope.pt", supernet.config)
    other = SpaceConfig(**{**TINY, "kernels": (3, 5, 7)})
    with pytest.raises(ConfigError, match="another search space .*kernels") as mismatch:
        Supernet.load(path, other)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="not a supernet checkpoint") as junk:
        Supernet.load(tmp_path / "junk.pt", supernet.config)
    for err in (missing, mismatch, junk):
        assert "\n" not in str(err.value)


def test_step_paths_are_uniform_or_sandwich_and_fixed_by_seed_and_step():
    from evaluators.supernet_train import SupernetModule

    net = Supernet(SpaceConfig(**TINY))
    uniform = SupernetModule(net, 5, seed=3)
    assert len(uniform.step_paths()) == 1
    assert uniform.step_paths() == SupernetModule(net, 5, seed=3).step_paths()  # a resumed run repeats the path
    assert uniform.step_paths() != SupernetModule(net, 5, seed=4).step_paths()
    largest, smallest, _ = SupernetModule(net, 5, sampling="sandwich").step_paths()
    assert largest == net.sample(random.Random(0), "largest") and smallest == net.sample(random.Random(0), "smallest")
    assert sum(b.repeats for b in largest.blocks) > sum(b.repeats for b in smallest.blocks)
    with pytest.raises(ConfigError, match="supernet.sampling"):
        SupernetModule(net, 5, sampling="greedy")
