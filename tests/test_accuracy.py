"""Proxy training on real data (scikit-learn's digits and a tiny ImageNet-layout folder)."""

from __future__ import annotations

import inspect
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor, nn

from evaluators.accuracy import ClassificationModule, ProxyResult, lr_scheduler, train_proxy
from evaluators.data import DigitsDataModule, ImageNetDataModule
from mnas_core.errors import ConfigError, TrialError

TRAIN_CONF = Path(__file__).resolve().parents[1] / "conf" / "train" / "default.yaml"


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    return DigitsDataModule(resolution=32, batch_size=64)


def write_image_tree(root: Path, classes: int = 2, per_class: int = 5) -> Path:
    """``root/train/<class>/*.JPEG`` of seeded-noise 48x40 images (so any crop or flip changes pixels)."""
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / "train" / f"n{label:08d}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{k}.JPEG")
    return root


def tiny_convnet(seed: int = 0, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, num_classes),
    )


class NanLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 10)

    def forward(self, images: Tensor) -> Tensor:
        return self.linear(images.mean(dim=(2, 3))) * math.nan


class InputRecorder(nn.Module):
    """Pools to logits; remembers training input sizes and every evaluation batch it saw."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(3, num_classes)
        self.train_sizes: set[int] = set()
        self.eval_batches: list[Tensor] = []

    def forward(self, images: Tensor) -> Tensor:
        if self.training:
            self.train_sizes.add(images.shape[-1])
        else:
            self.eval_batches.append(images.detach().clone())
        return self.linear(images.mean(dim=(2, 3)))


def test_tiny_convnet_learns_digits_in_two_epochs(digits: DigitsDataModule) -> None:
    result = train_proxy(tiny_convnet(), digits, epochs=2, lr=0.1)
    assert isinstance(result, ProxyResult)
    assert result.accuracy > 0.5, result.history  # chance is 0.1
    assert [row["epoch"] for row in result.history] == [0, 1]
    assert result.accuracy == result.history[-1]["val_acc"]
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert all(0.0 <= row["val_acc"] <= 1.0 and row["val_loss"] > 0 for row in result.history)
    assert 0 < result.seconds < 60


def test_every_call_trains_fully_and_the_same_seed_repeats(digits: DigitsDataModule) -> None:
    # A reused Trainer would stop at once; both calls (and the datamodule they share) must run both epochs.
    kwargs = {"epochs": 2, "lr": 0.1, "limit_train_batches": 4, "limit_val_batches": 2}
    first = train_proxy(tiny_convnet(seed=0), digits, **kwargs)
    second = train_proxy(tiny_convnet(seed=0), digits, **kwargs)
    assert len(first.history) == len(second.history) == 2
    assert first.history == second.history
    reseeded = train_proxy(tiny_convnet(seed=0), digits, seed=1, **kwargs)
    assert reseeded.history[0]["train_loss"] != first.history[0]["train_loss"]  # data order follows the seed


def test_nan_loss_raises_trial_error_at_once(digits: DigitsDataModule) -> None:
    with pytest.raises(
        TrialError, match=r"^non-finite loss \(nan\) at epoch 0 step 0; lower the learning rate$"
    ):
        train_proxy(NanLogits(), digits, epochs=2)


def test_logits_of_the_wrong_width_raise_trial_error(digits: DigitsDataModule) -> None:
    with pytest.raises(TrialError, match="num_classes=10"):
        train_proxy(tiny_convnet(num_classes=7), digits, epochs=1, limit_train_batches=1)


@pytest.mark.parametrize(
    "bad",
    [{"optimizer": "lamb"}, {"schedule": "step"}, {"lr": 0.0}, {"lr": math.nan}, {"epochs": 0}],
)
def test_invalid_settings_raise_config_error_before_training(digits: DigitsDataModule, bad: dict) -> None:
    with pytest.raises(ConfigError):
        train_proxy(tiny_convnet(), digits, **bad)


def test_training_batches_are_augmented_and_validation_batches_are_not(tmp_path: Path) -> None:
    dm = ImageNetDataModule(write_image_tree(tmp_path), resolution=32, batch_size=4, holdout=4, num_workers=0)
    model = InputRecorder(dm.num_classes)
    train_proxy(model, dm, epochs=1, optimizer="adam", lr=0.01)
    # Decoded at round(32 / 0.875) = 37 px; only the training augmentation crops to 32.
    assert dm.train_dataset[0][0].shape[-1] == 37 and model.train_sizes == {32}
    plain_val = torch.cat([images for images, _ in dm.val_dataloader()])
    assert torch.equal(torch.cat(model.eval_batches), plain_val)


def lr_factors(schedule: str, steps: int, **kwargs) -> list[float]:
    """The learning rate of each step (peak 1) from `lr_scheduler`, as Lightning steps it."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_scheduler(optimizer, schedule, total_steps=100, steps_per_epoch=10, **kwargs)
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


def test_lr_schedule_warms_up_then_follows_the_schedule() -> None:
    cosine = lr_factors("cosine", 101, warmup_steps=10)
    assert cosine[0] == pytest.approx(0.1) and cosine[9] == pytest.approx(1.0)
    assert cosine[10] == pytest.approx(1.0) and cosine[55] == pytest.approx(0.5) and cosine[100] < 1e-9
    assert all(a <= b for a, b in itertools.pairwise(cosine[:10])), "the warm-up rises"
    exponential = lr_factors("exponential", 21, lr_decay=0.5)
    assert exponential[0] == 1.0 and exponential[20] == pytest.approx(0.25)
    assert lr_factors("constant", 78)[77] == 1.0


def test_weight_decay_skips_biases_and_norm_parameters() -> None:
    module = ClassificationModule(tiny_convnet(), 10, weight_decay=1e-3)
    decayed, undecayed = module._parameter_groups()
    assert all(p.ndim > 1 for p in decayed["params"]) and decayed["weight_decay"] == 1e-3
    assert all(p.ndim == 1 for p in undecayed["params"]) and undecayed["weight_decay"] == 0.0


def test_default_train_config_holds_train_proxy_keywords() -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(TRAIN_CONF))
    inspect.signature(train_proxy).bind(nn.Identity(), None, **cfg)  # raises on an unknown key
    assert cfg["accelerator"] == "cpu" and cfg["limit_train_batches"] is None and cfg["epochs"] <= 5
