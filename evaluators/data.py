"""LightningDataModules for the proxy image-classification task.

Every module exposes ``num_classes``, ``in_channels`` (always 3), ``resolution``, ``train_dataloader()`` and
``val_dataloader()``. Loaders yield ``(images, labels)`` with ``images`` float32, normalised, shaped
``(B, 3, R, R)`` -- except ImageNet training batches with ``augment=True``, which arrive at the pre-crop size
``round(R / 0.875)`` and are cropped to ``R`` by the augmentation. Augmentation (kornia) runs on whole batches
after they reach the device, in ``on_after_batch_transfer``, during training only; it is also available as
``train_augmentation`` for code that drives the loaders without a Trainer.

A missing or unusable data folder raises :class:`~mnas_core.errors.DatasetNotFoundError` when the module is
constructed, before any training starts.

Digits and CIFAR-10 live here; the ImageNet folder module in :mod:`evaluators.imagenet`, the shared base class and
collate in :mod:`evaluators.datamodule_base`. Their names stay importable from here: configs, saved run configs
included, name ``evaluators.data.ImageNetDataModule``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from evaluators.datamodule_base import (  # noqa: F401 - re-exported (plugins subclass the base)
    Batch,
    NormalizeBatch,
    _ClassificationDataModule,
    _require_positive_int,
)
from evaluators.imagenet import (  # noqa: F401 - re-exported: configs name evaluators.data.ImageNetDataModule
    CENTER_CROP_RATIO,
    FALLBACK_HOLDOUT_FRACTION,
    IMAGE_SUFFIXES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VAL_LABEL_FILES,
    VAL_SPLITS,
    ImageFileDataset,
    ImageNetDataModule,
    holdout_split,
    imagenet_augmentation,
)
from mnas_core.errors import ConfigError, DatasetNotFoundError

__all__ = [
    "Cifar10DataModule",
    "DigitsDataModule",
    "ImageFileDataset",
    "ImageNetDataModule",
    "NormalizeBatch",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


# --------------------------------------------------------------------------------------------- digits


def _digits_images(resolution: int) -> tuple[Tensor, np.ndarray]:
    """scikit-learn's 8x8 digits as ``(N, 3, R, R)`` floats in [0, 1] (before normalisation) and labels."""
    digits = load_digits()
    gray = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
    resized = F.interpolate(gray, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return resized.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous(), digits.target


class DigitsDataModule(_ClassificationDataModule):
    """scikit-learn's handwritten digits (1,797 images, 10 classes), upscaled to ``resolution``, held in memory.

    The train/val split is stratified and fixed by ``seed``; normalisation uses training-split statistics.
    No augmentation: flips and crops change what a digit means.
    """

    num_classes = 10

    def __init__(
        self,
        resolution: int = 32,
        batch_size: int = 64,
        val_fraction: float = 0.25,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(resolution=resolution, batch_size=batch_size, seed=seed, num_workers=num_workers)
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction!r}")
        self.val_fraction = val_fraction
        images, labels = _digits_images(resolution)
        train_idx, val_idx = train_test_split(
            np.arange(len(labels)), test_size=val_fraction, stratify=labels, random_state=seed
        )
        self.train_indices: np.ndarray = np.sort(train_idx)
        self.val_indices: np.ndarray = np.sort(val_idx)
        train_images = images[self.train_indices]
        mean, std = train_images.mean(), train_images.std()
        targets = torch.from_numpy(labels).long()
        self.train_dataset = TensorDataset((train_images - mean) / std, targets[self.train_indices])
        self.val_dataset = TensorDataset((images[self.val_indices] - mean) / std, targets[self.val_indices])

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)


# -------------------------------------------------------------------------------------------- CIFAR-10

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_FILES = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)


def _find_cifar10_folder(root: Path) -> Path:
    """``root`` or ``root/cifar-10-batches-py``, whichever holds every python batch."""
    for folder in (root, root / "cifar-10-batches-py"):
        if all((folder / name).is_file() for name in CIFAR10_FILES):
            return folder
    raise DatasetNotFoundError(
        f"CIFAR-10 python batches not found in {root} (expected data_batch_1..5 and test_batch there or in "
        f"{root / 'cifar-10-batches-py'}); set data.root to the folder holding cifar-10-batches-py"
    )


def _read_cifar10_batch(path: Path) -> tuple[Tensor, Tensor]:
    """One official CIFAR-10 python batch (a pickled dict) as uint8 ``(N, 3, 32, 32)`` images and labels."""
    try:
        with path.open("rb") as f:
            # The official CIFAR-10 format is a pickle; only the named batch files are ever unpickled.
            entry = pickle.load(f, encoding="bytes")
        data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetNotFoundError(
            f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); "
            "re-download cifar-10-python.tar.gz and extract it"
        ) from exc
    if len(data) != len(labels):
        raise DatasetNotFoundError(
            f"{path} holds {len(data)} images but {len(labels)} labels; re-download cifar-10-python.tar.gz"
        )
    return torch.from_numpy(data), torch.from_numpy(labels)


def _read_cifar10_split(folder: Path, names: Sequence[str]) -> TensorDataset:
    parts = [_read_cifar10_batch(folder / name) for name in names]
    return TensorDataset(
        torch.cat([images for images, _ in parts]), torch.cat([labels for _, labels in parts])
    )


def cifar10_augmentation(resolution: int) -> nn.Module:
    """Random crop with ``R/8`` padding (black, in normalised units) and a horizontal flip."""
    black = [-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)]
    return nn.Sequential(
        K.RandomCrop((resolution, resolution), padding=max(1, resolution // 8), fill=black),
        K.RandomHorizontalFlip(),
    )


class Cifar10DataModule(_ClassificationDataModule):
    """CIFAR-10 from its python batches: ``data_batch_1..5`` train, ``test_batch`` validates.

    The folder is checked at construction; the ~180 MB of batches are read on first use and kept in memory as
    uint8. Images are resized to ``resolution`` when it is not 32.
    """

    num_classes = 10

    def __init__(
        self,
        root: str | os.PathLike[str],
        resolution: int = 32,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 2,
        augment: bool = True,
    ) -> None:
        super().__init__(resolution=resolution, batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.root = _find_cifar10_folder(Path(root).expanduser())
        self.augment = augment
        self.train_augmentation = cifar10_augmentation(resolution) if augment else None
        self.collate = NormalizeBatch(CIFAR10_MEAN, CIFAR10_STD, resolution)
        self._splits: tuple[TensorDataset, TensorDataset] | None = None

    def _load_splits(self) -> tuple[TensorDataset, TensorDataset]:
        if self._splits is None:
            self._splits = (
                _read_cifar10_split(self.root, CIFAR10_TRAIN_FILES),
                _read_cifar10_split(self.root, (CIFAR10_TEST_FILE,)),
            )
        return self._splits

    @property
    def train_dataset(self) -> TensorDataset:
        return self._load_splits()[0]

    @property
    def val_dataset(self) -> TensorDataset:
        return self._load_splits()[1]

    def setup(self, stage: str | None = None) -> None:
        self._load_splits()

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, shuffle=True, collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False, collate_fn=self.collate)
