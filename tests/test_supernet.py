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


def test_step_paths_are_fair_uniform_or_sandwich_and_fixed_by_seed_and_step():
    from evaluators.supernet_train import SupernetModule

    net = Supernet(SpaceConfig(**TINY))
    fair = SupernetModule(net, 5, seed=3)
    assert fair.sampling == "fair" and len(fair.step_paths()) == 1
    assert fair.step_paths() == SupernetModule(net, 5, seed=3).step_paths()  # a resumed run repeats the path
    assert fair.step_paths() != SupernetModule(net, 5, seed=4).step_paths()
    largest, smallest, _ = SupernetModule(net, 5, sampling="sandwich").step_paths()
    assert largest.arch == net.sample(random.Random(0), "largest")
    assert smallest.arch == net.sample(random.Random(0), "smallest") and not smallest.blends
    assert sum(b.repeats for b in largest.arch.blocks) > sum(b.repeats for b in smallest.arch.blocks)
    with pytest.raises(ConfigError, match="supernet.sampling"):
        SupernetModule(net, 5, sampling="greedy")
    with pytest.raises(ConfigError, match="supernet.warmup"):
        SupernetModule(net, 5, warmup=1.5)


def test_distillation_teaches_every_path_of_a_step_from_the_largest_paths_predictions_on_the_same_batch():
    import torch.nn.functional as F

    from evaluators.supernet_train import SupernetModule, soft_cross_entropy

    torch.manual_seed(0)
    net = scrambled(Supernet(SpaceConfig(**TINY)))  # eval mode: the same batch gives the same logits twice
    images, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for sampling, count in (("fair", 2), ("uniform", 2), ("sandwich", 3)):
        module = SupernetModule(net, 5, sampling=sampling, distill=True, seed=1)
        paths = module.step_paths()
        assert len(paths) == count and paths[0] == module.largest, sampling
        losses = module.path_losses(images, labels, paths)
        with torch.no_grad():
            teacher = F.softmax(net(images, module.largest.arch), dim=1)
            student = net(images, paths[-1].arch, paths[-1].blends)
        torch.testing.assert_close(losses[0], F.cross_entropy(net(images, module.largest.arch), labels,
                                                              label_smoothing=module.label_smoothing))
        torch.testing.assert_close(losses[-1], soft_cross_entropy(student, teacher))
        assert not torch.isclose(losses[-1], F.cross_entropy(student, labels, label_smoothing=module.label_smoothing))
    plain = SupernetModule(net, 5, sampling="sandwich", seed=1)
    student = plain.step_paths()[-1]
    torch.testing.assert_close(plain.path_losses(images, labels, plain.step_paths())[-1],
                               F.cross_entropy(net(images, student.arch, student.blends), labels,
                                               label_smoothing=plain.label_smoothing))
    with pytest.raises(ConfigError, match="supernet.distill must be true or false"):
        SupernetModule(net, 5, distill="yes")


def test_fair_sampling_trains_each_weight_family_equally_often():
    net = Supernet(SpaceConfig(**TINY))  # conv, dsconv and mbconv weights; mbconv3 and mbconv6 share theirs
    for rule, mbconv_share in (("uniform", 0.5), ("fair", 1 / 3)):
        rng = random.Random(0)
        ops = [block.op for _ in range(2000) for block in net.sample(rng, rule).blocks]
        assert abs(ops.count("mbconv") / len(ops) - mbconv_share) < 0.02, rule
        assert abs(ops.count("conv") / len(ops) - (1 - mbconv_share) / 2) < 0.02, rule


def test_a_warm_path_blends_every_family_at_the_largest_settings_and_a_cold_one_is_a_plain_sample():
    net = Supernet(SpaceConfig(**TINY))
    warm = net.training_path(random.Random(0), "fair", warm=1.0)
    assert [index for index, _ in warm.blends] == list(range(len(net.choices)))
    for (_, others), block, choices in zip(warm.blends, warm.arch.blocks, net.choices):
        assert sorted([block.op, *others]) == ["conv", "dsconv", "mbconv"]  # its own family and both others
        assert (block.kernel, block.se_ratio, block.out_filters, block.skip) == (
            max(choices["kernel"]), max(choices["se_ratio"]), max(choices["filters"]), "pool")
    assert len({net.training_path(random.Random(seed), "fair", 1.0).arch.blocks[1].repeats for seed in range(20)}) > 1
    half = [len(others) for seed in range(200) for _, others in net.training_path(random.Random(seed), "fair", 0.5).blends]
    assert 1 in half and 2 in half  # part-way through the warm-up, random subsets of the other families
    cold = net.training_path(random.Random(0), "fair", warm=0.0)
    assert not cold.blends and cold.arch == net.sample(random.Random(0), "fair")


def test_a_blended_layer_is_the_mean_of_its_families_plus_the_skip():
    torch.manual_seed(0)
    net = scrambled(Supernet(SpaceConfig(**TINY)))
    block = dataclasses.replace(net.sample(random.Random(0), "largest").blocks[2], skip="identity")
    slot, x = net.blocks[2][1], torch.randn(2, block.out_filters, 4, 4)  # a stride-1 position: identity residual
    block = dataclasses.replace(block, op="dsconv", expand=1)
    with torch.no_grad():
        families = [slot(x, dataclasses.replace(block, op=op, expand=expand)) - x
                    for op, expand in (("conv", 1), ("dsconv", 1), ("mbconv", 6))]
        torch.testing.assert_close(slot(x, block, blend=("conv", "mbconv")), torch.stack(families).mean(0) + x)
        torch.testing.assert_close(slot(x, block, blend=("mbconv",)), (families[1] + families[2]) / 2 + x)
        arch = net.sample(random.Random(1))
        images = torch.randn(2, 3, 16, 16)
        others = tuple(op for op in net.families if op != arch.blocks[0].op)
        assert not torch.allclose(net(images, arch, blends=[(0, others)]), net(images, arch))


def test_supernet_training_steps_on_full_batches_only(tmp_path):
    from pytorch_lightning.callbacks import Callback

    from evaluators.data import DigitsDataModule
    from evaluators.supernet_train import train_supernet

    datamodule = DigitsDataModule(resolution=16, batch_size=500)  # 1,347 training images: 2 full batches and 347
    sizes: list[int] = []

    class BatchSizes(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            sizes.append(len(batch[1]))

    train_supernet(SpaceConfig(**{**TINY, "num_classes": 10}), datamodule, tmp_path, epochs=1, limit_val_batches=1,
                   callbacks=[BatchSizes()])
    assert sizes == [500, 500]
    assert not datamodule.drop_last_train and len(datamodule.train_dataloader()) == 3  # proxy training keeps them
