"""Datamodules on real data: scikit-learn's digits, and tiny CIFAR-10 / ImageNet folders written here."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue
from PIL import Image

from evaluators.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Cifar10DataModule,
    DigitsDataModule,
    ImageNetDataModule,
)
from mnas_core.errors import ConfigError, DatasetNotFoundError

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"

# ---------------------------------------------------------------------------------------------- digits


def test_digits_split_is_seeded_disjoint_and_stratified() -> None:
    first, again, other = DigitsDataModule(seed=0), DigitsDataModule(seed=0), DigitsDataModule(seed=1)
    np.testing.assert_array_equal(first.train_indices, again.train_indices)
    np.testing.assert_array_equal(first.val_indices, again.val_indices)
    assert not np.array_equal(first.val_indices, other.val_indices)

    assert not set(first.train_indices) & set(first.val_indices)
    assert len(first.train_indices) + len(first.val_indices) == 1797
    assert len(first.val_indices) == pytest.approx(0.25 * 1797, abs=1)
    val_counts = torch.bincount(first.val_dataset.tensors[1], minlength=10)
    all_counts = torch.bincount(torch.cat([first.train_dataset.tensors[1], first.val_dataset.tensors[1]]))
    assert torch.all((val_counts - 0.25 * all_counts).abs() <= 1)  # every class keeps its share


def test_digits_batches_have_three_channels_at_the_requested_resolution() -> None:
    dm = DigitsDataModule(resolution=20, batch_size=16)
    assert (dm.num_classes, dm.in_channels, dm.resolution) == (10, 3, 20)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 3, 20, 20) and images.dtype == torch.float32
    assert labels.shape == (16,) and labels.dtype == torch.long
    assert torch.equal(images[:, 0], images[:, 2])  # grey replicated to RGB
    assert dm.val_dataset.tensors[0].shape == (len(dm.val_indices), 3, 20, 20)
    train_images = dm.train_dataset.tensors[0]
    assert abs(float(train_images.mean())) < 1e-4 and float(train_images.std()) == pytest.approx(
        1.0, abs=1e-3
    )


def test_digits_rejects_a_val_fraction_outside_0_1() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        DigitsDataModule(val_fraction=1.0)


def test_digits_config_instantiates() -> None:
    dm = instantiate(OmegaConf.load(CONF / "digits.yaml"))
    assert isinstance(dm, DigitsDataModule) and dm.resolution == 32 and dm.batch_size == 64


# -------------------------------------------------------------------------------------------- CIFAR-10

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_fake_cifar10(folder: Path, images_per_batch: int = 4) -> Path:
    """The official python-batch layout with ``images_per_batch`` images per file; image k is all (k*10)."""
    folder.mkdir(parents=True)
    for b, name in enumerate(CIFAR_FILES):
        values = [(b * images_per_batch + k) * 10 % 256 for k in range(images_per_batch)]
        data = np.stack([np.full(3072, v, dtype=np.uint8) for v in values])
        entry = {
            b"data": data,
            b"labels": [(b + k) % 10 for k in range(images_per_batch)],
            b"batch_label": b"x",
        }
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f)
    return folder


def test_cifar10_reads_python_batches_from_root_or_its_subfolder(tmp_path: Path) -> None:
    batches = write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, batches):
        dm = Cifar10DataModule(root, batch_size=8, num_workers=0)
        dm.setup("fit")
        assert (len(dm.train_dataset), len(dm.val_dataset)) == (20, 4)
    assert (dm.num_classes, dm.in_channels) == (10, 3)

    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [5, 6, 7, 8]
    mean, std = torch.tensor(CIFAR10_MEAN), torch.tensor(CIFAR10_STD)
    expected_first = (200 / 255 - mean) / std  # test_batch is file 5: its first image is all 200
    torch.testing.assert_close(images[0, :, 0, 0], expected_first)

    train_images, _ = next(iter(dm.train_dataloader()))
    assert train_images.shape == (8, 3, 32, 32)
    assert dm.train_augmentation(train_images).shape == (8, 3, 32, 32)


def test_cifar10_resizes_to_the_requested_resolution(tmp_path: Path) -> None:
    dm = Cifar10DataModule(write_fake_cifar10(tmp_path / "c"), resolution=24, batch_size=5, num_workers=0)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (5, 3, 24, 24)
    assert dm.train_augmentation(images).shape == (5, 3, 24, 24)


def assert_one_line(error: pytest.ExceptionInfo[BaseException], *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_cifar10_missing_empty_or_incomplete_folder_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as missing:
        Cifar10DataModule(tmp_path / "nowhere")
    assert_one_line(missing, str(tmp_path / "nowhere"), "data_batch_1..5", "data.root")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError) as empty:
        Cifar10DataModule(tmp_path / "empty")
    assert_one_line(empty, "test_batch")

    incomplete = write_fake_cifar10(tmp_path / "incomplete")
    (incomplete / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError):
        Cifar10DataModule(incomplete)


def test_cifar10_corrupt_batch_is_reported_as_one_line(tmp_path: Path) -> None:
    folder = write_fake_cifar10(tmp_path / "c")
    (folder / "data_batch_2").write_bytes(b"this is not a pickle")
    dm = Cifar10DataModule(folder, num_workers=0)
    with pytest.raises(DatasetNotFoundError) as corrupt:
        dm.setup("fit")
    assert_one_line(corrupt, "data_batch_2", "not a CIFAR-10 python batch")


def test_cifar10_config_requires_root_then_instantiates(tmp_path: Path) -> None:
    cfg = OmegaConf.load(CONF / "cifar10.yaml")
    with pytest.raises(MissingMandatoryValue):
        instantiate(cfg)
    cfg.root = str(write_fake_cifar10(tmp_path / "c"))
    assert isinstance(instantiate(cfg), Cifar10DataModule)


# -------------------------------------------------------------------------------------------- ImageNet

WNIDS = ["n01440764", "n01443537", "n01484850"]
SIZES = [(40, 30), (30, 50), (64, 48), (37, 37), (50, 41), (33, 60)]


def write_fake_imagenet(root: Path) -> Path:
    """``root/train/<wnid>/*.JPEG``: 3 classes x 6 uniformly coloured JPEGs of assorted sizes, plus clutter."""
    for label, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for k, size in enumerate(SIZES):
            colour = (40 * label + 20, 10 * k + 50, 200 - 30 * label)
            Image.new("RGB", size, colour).save(folder / f"{wnid}_{k}.JPEG", quality=95)
        (folder / "notes.txt").write_text("not an image")
    return root


def test_imagenet_holdout_split_is_seeded_deterministic_and_disjoint(tmp_path: Path) -> None:
    root = write_fake_imagenet(tmp_path)
    first, again = ImageNetDataModule(root, holdout=4, seed=0), ImageNetDataModule(root, holdout=4, seed=0)
    assert first.classes == WNIDS and first.num_classes == 3
    assert (len(first.train_samples), len(first.val_samples)) == (14, 4)
    assert first.val_samples == again.val_samples and first.train_samples == again.train_samples
    assert not set(first.train_samples) & set(first.val_samples)
    assert all(path.endswith(".JPEG") for path, _ in first.train_samples + first.val_samples)
    other_seeds = [ImageNetDataModule(root, holdout=4, seed=s).val_samples for s in (1, 2, 3)]
    assert any(val != first.val_samples for val in other_seeds)


def test_imagenet_holdout_larger_than_the_folder_is_clamped_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="holdout=50000"):
        dm = ImageNetDataModule(write_fake_imagenet(tmp_path), resolution=32)
    assert (len(dm.train_samples), len(dm.val_samples)) == (16, 2)


def test_imagenet_loaders_decode_resize_and_crop(tmp_path: Path) -> None:
    root = write_fake_imagenet(tmp_path)
    dm = ImageNetDataModule(root, resolution=32, batch_size=6, holdout=6, num_workers=0)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (6, 3, 32, 32) and labels.dtype == torch.long
    path, label = dm.val_samples[0]
    colour = torch.tensor(Image.open(path).convert("RGB").getpixel((0, 0)), dtype=torch.float32)
    expected = (colour / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(images[0, :, 16, 16], expected, atol=0.05, rtol=0)
    assert labels[0] == label

    pre_crop, _ = next(iter(dm.train_dataloader()))  # cropped to 32 by the batch augmentation
    assert pre_crop.shape == (6, 3, 37, 37)
    assert dm.train_augmentation(pre_crop).shape == (6, 3, 32, 32)

    plain = ImageNetDataModule(root, resolution=32, batch_size=6, holdout=6, num_workers=0, augment=False)
    assert plain.train_augmentation is None
    assert next(iter(plain.train_dataloader()))[0].shape == (6, 3, 32, 32)


def test_imagenet_missing_or_empty_folder_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as missing:
        ImageNetDataModule(tmp_path)
    assert_one_line(missing, str(tmp_path / "train"), "data.root")

    (tmp_path / "train" / WNIDS[0]).mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as empty:
        ImageNetDataModule(tmp_path)
    assert_one_line(empty, f"class folder {tmp_path / 'train' / WNIDS[0]} holds no images", "found 1 folders")


def test_imagenet_config_requires_root_then_instantiates(tmp_path: Path) -> None:
    cfg = OmegaConf.load(CONF / "imagenet.yaml")
    assert (cfg.resolution, cfg.holdout) == (224, 50000)
    with pytest.raises(MissingMandatoryValue):
        instantiate(cfg)
    cfg.root = str(write_fake_imagenet(tmp_path))
    cfg.holdout = 3
    dm = instantiate(cfg)
    assert isinstance(dm, ImageNetDataModule) and len(dm.val_samples) == 3
